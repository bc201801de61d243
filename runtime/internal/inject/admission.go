package inject

import (
	"encoding/json"
)

// The admission.k8s.io/v1 types the webhook reads and writes (only the fields it uses).

// Wire strings of AdmissionReview v1.
const (
	ReviewAPIVersion = "admission.k8s.io/v1"
	ReviewKind       = "AdmissionReview"
	PatchTypeJSON    = "JSONPatch"
	OperationCreate  = "CREATE"
)

// AdmissionReview is the envelope of a request and of its answer.
type AdmissionReview struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Request    *AdmissionRequest  `json:"request,omitempty"`
	Response   *AdmissionResponse `json:"response,omitempty"`
}

// GroupVersionKind / GroupVersionResource as the API server sends them.
type GroupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// GroupVersionResource names the resource of a request.
type GroupVersionResource struct {
	Group    string `json:"group"`
	Version  string `json:"version"`
	Resource string `json:"resource"`
}

// AdmissionRequest is the part of the request the webhook uses.
type AdmissionRequest struct {
	UID         string               `json:"uid"`
	Kind        GroupVersionKind     `json:"kind"`
	Resource    GroupVersionResource `json:"resource"`
	SubResource string               `json:"subResource,omitempty"`
	Name        string               `json:"name,omitempty"`
	Namespace   string               `json:"namespace,omitempty"`
	Operation   string               `json:"operation"`
	Object      json.RawMessage      `json:"object,omitempty"`
	DryRun      *bool                `json:"dryRun,omitempty"`
}

// AdmissionResponse is the answer: allowed with an optional JSON patch, or refused.
type AdmissionResponse struct {
	UID       string   `json:"uid"`
	Allowed   bool     `json:"allowed"`
	Result    *Status  `json:"status,omitempty"`
	Patch     []byte   `json:"patch,omitempty"` // JSON encodes it as base64, as the API wants
	PatchType *string  `json:"patchType,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// Status is the metav1.Status of a refusal: Code 403, Reason the machine reason (the
// metric label), Message "cloudtaser: <why>. <what to do>".
type Status struct {
	Code    int32  `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Outcome labels an answer for metrics: "mutated", "unchanged" or the denial reason.
func Outcome(r *AdmissionResponse) string {
	switch {
	case r == nil:
		return ReasonInternal
	case !r.Allowed && r.Result != nil && r.Result.Reason != "":
		return r.Result.Reason
	case !r.Allowed:
		return ReasonInternal
	case len(r.Patch) > 0:
		return "mutated"
	}
	return "unchanged"
}

// Pod: the fields of a pod the mutation reads. The object itself is never re-encoded from
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
