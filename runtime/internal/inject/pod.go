package inject

// pod: the fields of a pod the mutation reads. The object itself is never re-encoded from
// these types: the patch only adds to the original JSON, so unknown fields are kept.
type pod struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec *podSpec `json:"spec"`
}

type podSpec struct {
	Volumes          []named           `json:"volumes"`
	InitContainers   []container       `json:"initContainers"`
	Containers       []container       `json:"containers"`
	ImagePullSecrets []named           `json:"imagePullSecrets"`
	NodeSelector     map[string]string `json:"nodeSelector"`
	HostAliases      []hostAlias       `json:"hostAliases"`
	Affinity         *struct {
		NodeAffinity *struct {
			Required *struct {
				Terms []struct {
					MatchExpressions []struct {
						Key      string   `json:"key"`
						Operator string   `json:"operator"`
						Values   []string `json:"values"`
					} `json:"matchExpressions"`
				} `json:"nodeSelectorTerms"`
			} `json:"requiredDuringSchedulingIgnoredDuringExecution"`
		} `json:"nodeAffinity"`
	} `json:"affinity"`
}

type hostAlias struct {
	IP        string   `json:"ip"`
	Hostnames []string `json:"hostnames"`
}

type named struct {
	Name string `json:"name"`
}

type container struct {
	Name          string        `json:"name"`
	Image         string        `json:"image"`
	Command       []string      `json:"command"`
	Args          []string      `json:"args"`
	Env           []named       `json:"env"`
	VolumeMounts  []volumeMount `json:"volumeMounts"`
	RestartPolicy string        `json:"restartPolicy"`
}

type volumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
}
