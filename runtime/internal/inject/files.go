package inject

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/webhook"
)

// Secret files (cloudtaser.io/secret-files; docs/injector.md, "Secret files in the pod"):
//   - every volume the annotation names (a secret, an all-secret projected or a memory
//     emptyDir volume) becomes emptyDir {medium: Memory, sizeLimit: FilesSizeLimit}, so the
//     kubelet never reads the Kubernetes Secret;
//   - init container cloudtaser-files, right after cloudtaser-init, renders them
//     (`cloudtaser-runtime files`), each volume mounted read-write at contract.FilesDir/<volume>,
//     as the user of the containers that rotate them when they name one (below);
//   - every other mount of those volumes becomes readOnly (a Secret volume always is);
//   - a container whose wrapper rotates (literal CLOUDTASER_MODE=resident and a non-zero
//     CLOUDTASER_ROTATION_INTERVAL) and that is the first such container to mount a volume
//     owns it: it also mounts it read-write at contract.FilesDir/<volume> and its
//     CLOUDTASER_SECRET_FILES lists it, so its wrapper re-renders changed values in place. The
//     memory volume's root is sticky (tmpfs: 1777), so only the user who wrote ..data may swap
//     it: every owner runs as the same user (the first rotating container's runAsUser, its own
//     or the pod's), and a rotating container of another user owns nothing;
//   - every wrapped container gets CLOUDTASER_SECRET_FILES (empty where it owns nothing).

// Names and sizes of the files injection.
const (
	FilesContainerName = "cloudtaser-files"
	FilesSizeLimit     = "16Mi" // per volume; a Kubernetes Secret holds at most 1 MiB
)

// filesPod: what the files injection reads of a pod, beyond pod.
type filesPod struct {
	Spec struct {
		Volumes         []map[string]json.RawMessage `json:"volumes"`
		InitContainers  []filesContainer             `json:"initContainers"`
		Containers      []filesContainer             `json:"containers"`
		SecurityContext *struct {
			RunAsUser *int64 `json:"runAsUser"`
		} `json:"securityContext"`
	} `json:"spec"`
}

type filesContainer struct {
	Name string `json:"name"`
	Env  []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
	SecurityContext *struct {
		RunAsUser *int64 `json:"runAsUser"`
	} `json:"securityContext"`
}

// filesPlan is the files part of one mutation (nil: the pod has no secret files).
type filesPlan struct {
	raw     string // the annotation, validated
	vols    []contract.FileVolume
	index   map[string]int // volume name -> index in spec.volumes
	owner   map[string]int // volume name -> index of the container that rotates it
	pod     filesPod
	initLen int
	rotUser *int64 // the user every rotating owner runs as (nil: unknown, the image's)
}

// secretFiles plans the files injection, or refuses the pod: a volume the annotation names
// that the pod does not have or that is not a Secret's, or a mount where the files go.
func (m *mutation) secretFiles(a contract.Annotations) (*filesPlan, *webhook.Decision) {
	if len(a.Files) == 0 {
		return nil, nil
	}
	f := &filesPlan{raw: m.pod.Metadata.Annotations[contract.AnnotationSecretFiles], vols: a.Files, index: map[string]int{}, owner: map[string]int{}}
	if err := json.Unmarshal(m.req.Object, &f.pod); err != nil {
		return nil, m.refusal(webhook.ReasonBadRequest, "the request's object is not a readable pod", "Call /mutate only from the API server")
	}
	todo := "Fix the pod template's " + contract.AnnotationSecretFiles + " annotation (cloudtaser target protect writes it)"
	for i, v := range f.pod.Spec.Volumes {
		var name string
		_ = json.Unmarshal(v["name"], &name)
		f.index[name] = i
	}
	for _, fv := range f.vols {
		i, ok := f.index[fv.Volume]
		if !ok {
			return nil, m.refusal(webhook.ReasonBadAnnotations, fmt.Sprintf("its %s names volume %s, which the pod does not have", contract.AnnotationSecretFiles, fv.Volume), todo)
		}
		if kind := secretSource(f.pod.Spec.Volumes[i]); kind != "" {
			return nil, m.refusal(webhook.ReasonBadAnnotations, fmt.Sprintf("its %s names volume %s, a %s volume: only a secret, an all-secret projected or a memory emptyDir volume can be served from the vault",
				contract.AnnotationSecretFiles, fv.Volume, kind), todo)
		}
	}
	for _, c := range append(append([]filesContainer{}, f.pod.Spec.InitContainers...), f.pod.Spec.Containers...) {
		if c.Name == FilesContainerName {
			return nil, m.refusal(webhook.ReasonEnvConflict, "it already has a container named "+FilesContainerName, "Rename it: the injector adds it itself")
		}
		for _, vm := range c.VolumeMounts {
			if p := strings.TrimRight(vm.MountPath, "/"); p == contract.FilesDir || strings.HasPrefix(p, contract.FilesDir+"/") {
				return nil, m.refusal(webhook.ReasonEnvConflict, fmt.Sprintf("container %s mounts a volume at %s, where the injector mounts the secret files", clip(c.Name, 63), clip(vm.MountPath, 100)),
					"Rename or remove it: the injector adds it itself")
			}
		}
	}
	rotating := false
	for i, c := range f.pod.Spec.Containers {
		if !rotates(c) {
			continue
		}
		user := f.runAsUser(c)
		if !rotating {
			rotating, f.rotUser = true, user
		}
		if !sameUser(user, f.rotUser) {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if _, served := f.index[vm.Name]; served && f.served(vm.Name) {
				if _, taken := f.owner[vm.Name]; !taken {
					f.owner[vm.Name] = i
				}
			}
		}
	}
	f.initLen = len(f.pod.Spec.InitContainers)
	return f, nil
}

// runAsUser is the user container c runs as when the pod spec says it (its own runAsUser, else
// the pod's), nil when the image decides.
func (f *filesPlan) runAsUser(c filesContainer) *int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return c.SecurityContext.RunAsUser
	}
	if sc := f.pod.Spec.SecurityContext; sc != nil {
		return sc.RunAsUser
	}
	return nil
}

func sameUser(a, b *int64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// served reports whether the annotation names volume name.
func (f *filesPlan) served(name string) bool {
	for _, fv := range f.vols {
		if fv.Volume == name {
			return true
		}
	}
	return false
}

// secretSource is "" for a volume the files may replace, else the kind of its source.
func secretSource(v map[string]json.RawMessage) string {
	kinds := []string{}
	for k := range v {
		if k != "name" {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	if len(kinds) != 1 {
		return "source-less or multi-source (" + strings.Join(kinds, ",") + ")"
	}
	switch kinds[0] {
	case "secret":
		return ""
	case "projected":
		var p struct {
			Sources []map[string]json.RawMessage `json:"sources"`
		}
		if json.Unmarshal(v["projected"], &p) != nil || len(p.Sources) == 0 {
			return "projected (without sources)"
		}
		for _, s := range p.Sources {
			if _, ok := s["secret"]; !ok || len(s) != 1 {
				return "projected (with non-secret sources)"
			}
		}
		return ""
	case "emptyDir":
		var e struct {
			Medium string `json:"medium"`
		}
		if json.Unmarshal(v["emptyDir"], &e) == nil && e.Medium == "Memory" {
			return ""
		}
		return "emptyDir (on the node's disk)"
	}
	return kinds[0]
}

// rotates: the container asks, in literal env values, for a resident wrapper with rotation.
func rotates(c filesContainer) bool {
	var mode, interval string
	for _, e := range c.Env {
		switch e.Name {
		case contract.EnvMode:
			mode = e.Value
		case contract.EnvRotation:
			interval = e.Value
		}
	}
	d, err := contract.ParseDuration(contract.EnvRotation, interval, 0)
	return err == nil && d > 0 && strings.EqualFold(strings.TrimSpace(mode), contract.ModeResident)
}

// rotatingVolumes are the volumes some container re-renders, sorted.
func (f *filesPlan) rotatingVolumes() []string {
	out := make([]string, 0, len(f.owner))
	for v := range f.owner {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// addTo adds the volumes, the init container and the read-only mounts (after
// addInitContainer, which put cloudtaser-init first).
func (f *filesPlan) addTo(m *mutation, env []envVar) {
	if f == nil {
		return
	}
	for _, fv := range f.vols {
		m.ops = append(m.ops, patchOp{Op: "replace", Path: fmt.Sprintf("/spec/volumes/%d", f.index[fv.Volume]),
			Value: map[string]any{"name": fv.Volume, "emptyDir": map[string]any{"medium": "Memory", "sizeLimit": FilesSizeLimit}}})
	}
	m.add("/spec/initContainers/1", m.cfg.filesInitContainer(f, env))
	for k, c := range f.pod.Spec.InitContainers {
		f.readOnly(m, fmt.Sprintf("/spec/initContainers/%d", k+2), c)
	}
	for i, c := range f.pod.Spec.Containers {
		f.readOnly(m, fmt.Sprintf("/spec/containers/%d", i), c)
	}
}

// readOnly makes every mount of a served volume read-only, as a Secret volume's always is.
func (f *filesPlan) readOnly(m *mutation, base string, c filesContainer) {
	for j, vm := range c.VolumeMounts {
		if f.served(vm.Name) {
			m.add(fmt.Sprintf("%s/volumeMounts/%d/readOnly", base, j), true)
		}
	}
}

// containerEnv is env plus CLOUDTASER_SECRET_FILES for container i: the volumes it owns,
// "" when none (so that a pod with files only is no configuration error).
func (f *filesPlan) containerEnv(i int, env []envVar) []envVar {
	if f == nil {
		return env
	}
	out := append(append([]envVar{}, env...), envVar{Name: contract.EnvSecretFiles})
	var owned []contract.FileVolume
	for _, fv := range f.vols {
		if o, ok := f.owner[fv.Volume]; ok && o == i {
			owned = append(owned, fv)
		}
	}
	if len(owned) > 0 {
		out[len(out)-1].Value = encodeFiles(owned)
	}
	return out
}

// addOwnerMounts mounts the volumes container i rotates read-write at FilesDir/<volume>.
func (f *filesPlan) addOwnerMounts(m *mutation, i int) {
	if f == nil {
		return
	}
	for _, v := range f.rotatingVolumes() {
		if f.owner[v] == i {
			m.add(fmt.Sprintf("/spec/containers/%d/volumeMounts/-", i), map[string]any{"name": v, "mountPath": contract.FilesDir + "/" + v})
		}
	}
}

// encodeFiles writes volumes back in the annotation's own format (ParseSecretFiles reads it),
// never longer than the annotation they came from: a mode equal to defaultMode is left out.
func encodeFiles(vols []contract.FileVolume) string {
	type file struct {
		Encoding string  `json:"encoding,omitempty"`
		File     string  `json:"file"`
		Key      string  `json:"key"`
		Mode     *uint32 `json:"mode,omitempty"`
		Optional bool    `json:"optional,omitempty"`
		Path     string  `json:"path"`
	}
	type volume struct {
		DefaultMode uint32 `json:"defaultMode"`
		Files       []file `json:"files"`
		Volume      string `json:"volume"`
	}
	out := make([]volume, len(vols))
	for i, v := range vols {
		out[i] = volume{DefaultMode: v.DefaultMode, Volume: v.Volume}
		for _, f := range v.Files {
			enc := ""
			if f.Base64 {
				enc = contract.EncodingBase64
			}
			var mode *uint32
			if f.Mode != v.DefaultMode {
				mode = &f.Mode
			}
			out[i].Files = append(out[i].Files, file{Encoding: enc, File: f.File, Key: f.Key, Mode: mode, Optional: f.Optional, Path: f.Path})
		}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// filesInitContainer is cloudtaser-files: the runtime image's binary in its files mode, with
// cloudtaser-init's security context, the token, and each volume read-write.
func (c *Config) filesInitContainer(f *filesPlan, env []envVar) map[string]any {
	base := c.InitContainer()
	sc := base["securityContext"].(map[string]any)
	if len(f.owner) > 0 && f.rotUser != nil && *f.rotUser != 0 {
		sc["runAsUser"] = *f.rotUser // the rotating wrapper's user: it may then swap ..data
	}
	mounts := []any{
		map[string]any{"name": VolumeToken, "mountPath": TokenDir, "readOnly": true},
		// As in cloudtaser-init: keeps the ServiceAccount admission plugin from mounting the
		// pod's API token here (this container never needs it).
		map[string]any{"name": VolumeBin, "mountPath": ServiceAccountDir, "readOnly": true},
	}
	for _, fv := range f.vols {
		mounts = append(mounts, map[string]any{"name": fv.Volume, "mountPath": contract.FilesDir + "/" + fv.Volume})
	}
	items := make([]any, 0, len(env)+1)
	for _, e := range env {
		items = append(items, e)
	}
	items = append(items, envVar{Name: contract.EnvSecretFiles, Value: f.raw})
	return map[string]any{
		"name":                     FilesContainerName,
		"image":                    c.RuntimeImage,
		"command":                  []string{RuntimeBinary, "files"},
		"env":                      items,
		"volumeMounts":             mounts,
		"securityContext":          base["securityContext"],
		"terminationMessagePath":   "/dev/termination-log",
		"terminationMessagePolicy": "File",
		"resources": map[string]any{
			"requests": map[string]any{"cpu": "10m", "memory": "16Mi"},
			// tmpfs pages are charged to the container that writes them
			"limits": map[string]any{"memory": fmt.Sprintf("%dMi", 48+16*len(f.vols))},
		},
	}
}
