package inject

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/webhook"
)

const filesAnnotation = `[{"defaultMode":420,"files":[{"key":"tls.crt","path":"secret/data/shop/tls","file":"tls.crt"},{"key":"tls.key","mode":256,"path":"secret/data/shop/tls","file":"tls.key"}],"volume":"certs"},` +
	`{"defaultMode":420,"files":[{"key":"config","path":"secret/data/shop/cfg","file":"app.yaml"}],"volume":"config"}]`

// servedPod: two containers mounting the Secret volume certs (one with a subPath), one the
// projected config, an init container of the pod's own reading certs, and a ConfigMap volume.
func servedPod(ann map[string]string, appEnv ...any) map[string]any {
	p := testPod(ann)
	spec := p["spec"].(map[string]any)
	spec["volumes"] = []any{
		map[string]any{"name": "settings", "configMap": map[string]any{"name": "settings"}},
		map[string]any{"name": "certs", "secret": map[string]any{"secretName": "shop-tls", "defaultMode": 420}},
		map[string]any{"name": "config", "projected": map[string]any{"sources": []any{map[string]any{"secret": map[string]any{"name": "shop-cfg"}}}}},
	}
	spec["initContainers"] = []any{
		map[string]any{"name": "migrate", "image": "busybox:1.37", "command": []any{"true"},
			"volumeMounts": []any{map[string]any{"name": "certs", "mountPath": "/certs"}}},
	}
	spec["containers"] = []any{
		map[string]any{"name": "app", "image": "busybox:1.37", "command": []any{"sh"}, "env": appEnv,
			"volumeMounts": []any{
				map[string]any{"name": "settings", "mountPath": "/settings"},
				map[string]any{"name": "certs", "mountPath": "/etc/tls", "readOnly": false},
				map[string]any{"name": "config", "mountPath": "/etc/app/app.yaml", "subPath": "app.yaml"},
			}},
		map[string]any{"name": "proxy", "image": "busybox:1.37", "command": []any{"sh"},
			"volumeMounts": []any{map[string]any{"name": "certs", "mountPath": "/tls", "readOnly": true}}},
	}
	return p
}

func filesAnn(extra ...string) map[string]string {
	return annotations(append([]string{contract.AnnotationSecretFiles, filesAnnotation}, extra...)...)
}

func list(v any, keys ...string) []any {
	for _, k := range keys {
		v = v.(map[string]any)[k]
	}
	l, _ := v.([]any)
	return l
}

func byName(l []any, name string) map[string]any {
	for _, x := range l {
		if m := x.(map[string]any); m["name"] == name {
			return m
		}
	}
	return nil
}

func filesEnvOf(c map[string]any) map[string]string {
	out := map[string]string{}
	for _, e := range list(c, "env") {
		m := e.(map[string]any)
		v, _ := m["value"].(string)
		out[m["name"].(string)] = v
	}
	return out
}

func TestFilesVolumesBecomeMemoryAndCloudtaserFilesRendersThem(t *testing.T) {
	p := mutated(t, testConfig(), servedPod(filesAnn()))
	vols := list(p, "spec", "volumes")
	if !reflect.DeepEqual(byName(vols, "settings"), map[string]any{"name": "settings", "configMap": map[string]any{"name": "settings"}}) {
		t.Errorf("a ConfigMap volume changed: %v", byName(vols, "settings"))
	}
	mem := map[string]any{"medium": "Memory", "sizeLimit": FilesSizeLimit}
	for _, v := range []string{"certs", "config"} {
		if got := byName(vols, v); !reflect.DeepEqual(got, map[string]any{"name": v, "emptyDir": mem}) {
			t.Errorf("volume %s: %v (the pod must not read the Secret)", v, got)
		}
	}
	inits := list(p, "spec", "initContainers")
	names := []string{}
	for _, c := range inits {
		names = append(names, c.(map[string]any)["name"].(string))
	}
	if strings.Join(names, ",") != "cloudtaser-init,cloudtaser-files,migrate" {
		t.Fatalf("init containers %v", names)
	}
	files := inits[1].(map[string]any)
	if !reflect.DeepEqual(files["command"], []any{RuntimeBinary, "files"}) || files["image"] != testImage {
		t.Errorf("cloudtaser-files runs %v from %v", files["command"], files["image"])
	}
	if !reflect.DeepEqual(files["securityContext"], inits[0].(map[string]any)["securityContext"]) {
		t.Error("cloudtaser-files has another security context than cloudtaser-init")
	}
	env := filesEnvOf(files)
	if env[contract.EnvSecretFiles] != filesAnnotation || env[contract.EnvAddr] != testAddr || env[contract.EnvSATokenPath] != TokenPath {
		t.Errorf("cloudtaser-files env %v", env)
	}
	mounts := map[string]any{}
	for _, m := range list(files, "volumeMounts") {
		mm := m.(map[string]any)
		mounts[mm["mountPath"].(string)] = mm["readOnly"]
	}
	want := map[string]any{TokenDir: true, ServiceAccountDir: true, contract.FilesDir + "/certs": nil, contract.FilesDir + "/config": nil}
	if !reflect.DeepEqual(mounts, want) {
		t.Errorf("cloudtaser-files mounts %v", mounts)
	}
	if files["terminationMessagePath"] != "/dev/termination-log" {
		t.Error("no termination message")
	}
	// every other mount of a served volume is read-only, like a Secret volume's; others untouched
	for _, c := range append(list(p, "spec", "containers"), inits[2]) {
		for _, m := range list(c, "volumeMounts") {
			mm := m.(map[string]any)
			served := mm["name"] == "certs" || mm["name"] == "config"
			if served && mm["readOnly"] != true {
				t.Errorf("%s mounts %s writable", c.(map[string]any)["name"], mm["name"])
			}
			if mm["name"] == "settings" && mm["readOnly"] != nil {
				t.Error("a ConfigMap mount changed")
			}
		}
	}
	// no container rotates: every wrapped container has CLOUDTASER_SECRET_FILES empty, no rw mount
	for _, c := range list(p, "spec", "containers") {
		e := filesEnvOf(c.(map[string]any))
		if v, ok := e[contract.EnvSecretFiles]; !ok || v != "" {
			t.Errorf("%s: CLOUDTASER_SECRET_FILES %q %v", c.(map[string]any)["name"], v, ok)
		}
		for _, m := range list(c, "volumeMounts") {
			if strings.HasPrefix(m.(map[string]any)["mountPath"].(string), contract.FilesDir) {
				t.Error("a read-write files mount without rotation")
			}
		}
	}
}

func TestFilesEnvOnlyPodIsUnchanged(t *testing.T) {
	p := mutated(t, testConfig(), testPod(annotations()))
	for _, c := range list(p, "spec", "containers") {
		if _, ok := filesEnvOf(c.(map[string]any))[contract.EnvSecretFiles]; ok {
			t.Fatal("an env-only pod got CLOUDTASER_SECRET_FILES")
		}
	}
	if len(list(p, "spec", "initContainers")) != 1 {
		t.Fatal("an env-only pod got cloudtaser-files")
	}
}

func TestFilesOnlyPodNeedsNoSecretPaths(t *testing.T) {
	p := mutated(t, testConfig(), servedPod(filesAnn(contract.AnnotationSecretPaths, "\x00delete", contract.AnnotationEnvMap, "\x00delete")))
	if byName(list(p, "spec", "initContainers"), FilesContainerName) == nil {
		t.Fatal("no cloudtaser-files")
	}
	// the wrapper of such a container resolves its configuration (no missing-paths refusal)
	env := filesEnvOf(list(p, "spec", "containers")[0].(map[string]any))
	if _, err := contract.ResolveEnv(env, contract.OSFileExists); err != nil {
		t.Fatalf("the app container's wrapper would refuse: %v", err)
	}
}

func TestFilesRotatingContainerOwnsTheVolumesItMounts(t *testing.T) {
	rot := []any{map[string]any{"name": contract.EnvMode, "value": "resident"}, map[string]any{"name": contract.EnvRotation, "value": "30s"}}
	p := mutated(t, testConfig(), servedPod(filesAnn(), rot...))
	app := list(p, "spec", "containers")[0].(map[string]any)
	var owned []contract.FileVolume
	if err := json.Unmarshal([]byte(filesEnvOf(app)[contract.EnvSecretFiles]), &owned); err != nil {
		t.Fatal(err)
	}
	vols, err := contract.ParseSecretFiles("env", filesEnvOf(app)[contract.EnvSecretFiles])
	if err != nil || len(vols) != 2 || vols[0].Volume != "certs" || vols[1].Files[0].File != "app.yaml" || vols[0].Files[1].Mode != 256 {
		t.Fatalf("owned volumes %+v %v", vols, err)
	}
	rw := map[string]bool{}
	for _, m := range list(app, "volumeMounts") {
		mm := m.(map[string]any)
		if strings.HasPrefix(mm["mountPath"].(string), contract.FilesDir+"/") {
			rw[mm["name"].(string)] = mm["readOnly"] == nil
		}
	}
	if !reflect.DeepEqual(rw, map[string]bool{"certs": true, "config": true}) {
		t.Errorf("rw mounts %v", rw)
	}
	proxy := list(p, "spec", "containers")[1].(map[string]any)
	if filesEnvOf(proxy)[contract.EnvSecretFiles] != "" {
		t.Error("two containers rotate the same volume")
	}
	files := byName(list(p, "spec", "initContainers"), FilesContainerName)
	if files["securityContext"].(map[string]any)["runAsUser"] != float64(InitUser) {
		t.Error("cloudtaser-files does not run as the runtime's user when the rotating container's user is unknown")
	}
}

func TestFilesDenials(t *testing.T) {
	cfg := testConfig()
	for name, tc := range map[string]struct {
		pod    map[string]any
		reason string
		says   string
	}{
		"invalid annotation": {servedPod(annotations(contract.AnnotationSecretFiles, `[{"volume":"certs"}]`)), webhook.ReasonBadAnnotations, "has no defaultMode"},
		"an absolute file":   {servedPod(annotations(contract.AnnotationSecretFiles, strings.Replace(filesAnnotation, `"file":"tls.crt"`, `"file":"/etc/passwd"`, 1))), webhook.ReasonBadAnnotations, "not a relative path"},
		"a volume the pod does not have": {servedPod(annotations(contract.AnnotationSecretFiles, strings.Replace(filesAnnotation, `"volume":"config"`, `"volume":"gone"`, 1))),
			webhook.ReasonBadAnnotations, "names volume gone, which the pod does not have"},
		"a ConfigMap volume": {servedPod(annotations(contract.AnnotationSecretFiles, strings.Replace(filesAnnotation, `"volume":"config"`, `"volume":"settings"`, 1))),
			webhook.ReasonBadAnnotations, "a configMap volume"},
		"a mount where the files go": {func() map[string]any {
			p := servedPod(filesAnn())
			c := list(p, "spec", "containers")[1].(map[string]any)
			c["volumeMounts"] = append(list(c, "volumeMounts"), map[string]any{"name": "settings", "mountPath": contract.FilesDir + "/x"})
			return p
		}(), webhook.ReasonEnvConflict, contract.FilesDir},
		"a container named cloudtaser-files": {func() map[string]any {
			p := servedPod(filesAnn())
			list(p, "spec", "initContainers")[0].(map[string]any)["name"] = FilesContainerName
			return p
		}(), webhook.ReasonEnvConflict, FilesContainerName},
	} {
		t.Run(name, func(t *testing.T) {
			if msg := denied(t, cfg, tc.pod, tc.reason); !strings.Contains(msg, tc.says) {
				t.Fatalf("message %q does not say %q", msg, tc.says)
			}
		})
	}
	// a mixed projected volume and a disk emptyDir are no Secret's
	for kind, src := range map[string]map[string]any{
		"projected (with non-secret sources)": {"projected": map[string]any{"sources": []any{map[string]any{"secret": map[string]any{"name": "a"}}, map[string]any{"configMap": map[string]any{"name": "b"}}}}},
		"emptyDir (on the node's disk)":       {"emptyDir": map[string]any{}},
	} {
		p := servedPod(filesAnn())
		v := list(p, "spec", "volumes")[2].(map[string]any)
		delete(v, "projected")
		for k, x := range src {
			v[k] = x
		}
		if msg := denied(t, cfg, p, webhook.ReasonBadAnnotations); !strings.Contains(msg, kind) {
			t.Errorf("%s: %q", kind, msg)
		}
	}
}

func TestFilesPlaceholderEmptyDirIsServed(t *testing.T) {
	p := servedPod(filesAnn())
	v := list(p, "spec", "volumes")[1].(map[string]any)
	delete(v, "secret")
	v["emptyDir"] = map[string]any{"medium": "Memory"} // after target finalize
	out := mutated(t, testConfig(), p)
	if got := byName(list(out, "spec", "volumes"), "certs"); !reflect.DeepEqual(got["emptyDir"], map[string]any{"medium": "Memory", "sizeLimit": FilesSizeLimit}) {
		t.Fatalf("certs: %v", got)
	}
}

// The memory volume's root is sticky: cloudtaser-files runs as the rotating container's user,
// and a rotating container of another user owns nothing.
func TestFilesRotationRunsCloudtaserFilesAsTheRotatingUser(t *testing.T) {
	rot := []any{map[string]any{"name": contract.EnvMode, "value": "resident"}, map[string]any{"name": contract.EnvRotation, "value": "30s"}}
	p := servedPod(filesAnn(), rot...)
	p["spec"].(map[string]any)["securityContext"] = map[string]any{"runAsUser": 1000, "fsGroup": 2000}
	proxy := list(p, "spec", "containers")[1].(map[string]any)
	proxy["env"] = rot
	proxy["securityContext"] = map[string]any{"runAsUser": 1001}
	out := mutated(t, testConfig(), p)
	files := byName(list(out, "spec", "initContainers"), FilesContainerName)
	if sc := files["securityContext"].(map[string]any); sc["runAsUser"] != float64(1000) || sc["runAsNonRoot"] != true {
		t.Fatalf("cloudtaser-files security context %v", sc)
	}
	if e := filesEnvOf(list(out, "spec", "containers")[1].(map[string]any)); e[contract.EnvSecretFiles] != "" {
		t.Fatal("a rotating container of another user owns a volume")
	}
	if e := filesEnvOf(list(out, "spec", "containers")[0].(map[string]any)); e[contract.EnvSecretFiles] == "" {
		t.Fatal("the first rotating container owns nothing")
	}
}

// encodeFiles (a rotating container's CLOUDTASER_SECRET_FILES) writes back exactly what it
// read: every valid vector of spec/contract/secret-files.json survives the round trip.
func TestFilesEncodeRoundTripsEveryValidVector(t *testing.T) {
	_, here, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "..", "spec", "contract", "secret-files.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []struct {
			Name  string `json:"name"`
			Input struct {
				Value string `json:"value"`
			} `json:"input"`
			Error string `json:"error"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range doc.Cases {
		vols, err := contract.ParseSecretFiles("v", c.Input.Value)
		if c.Error != "" || len(vols) == 0 {
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		again, err := contract.ParseSecretFiles("v", encodeFiles(vols))
		if err != nil || !reflect.DeepEqual(again, vols) {
			t.Fatalf("%s: round trip gives %+v, %v", c.Name, again, err)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d valid vectors", n)
	}
}
