package inject

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/jsonpatch"
	"cloudtaser/runtime/internal/registry"
	"cloudtaser/runtime/internal/webhook"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	testAddr     = "https://bao.internal:8200"
	testImage    = "registry.example.com/cloudtaser/runtime:1.4.0"
	testAudience = "cloudtaser"
	testVersion  = "1.4.0"
)

func testConfig() *Config {
	return &Config{RuntimeImage: testImage, AllowedAddresses: []string{testAddr, "http://vault.vault.svc:8200"}, Audience: testAudience, Version: testVersion}
}

func annotations(extra ...string) map[string]string {
	a := map[string]string{
		"cloudtaser.io/inject":        "true",
		"cloudtaser.io/vault-address": testAddr,
		"cloudtaser.io/vault-role":    "payments",
		"cloudtaser.io/secret-paths":  "secret/data/payments/db",
		"cloudtaser.io/env-map":       "username=DB_USER,password=DB_PASSWORD",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "\x00delete" {
			delete(a, extra[i])
			continue
		}
		a[extra[i]] = extra[i+1]
	}
	return a
}

// testPod is a labelled pod with one container that has a command.
func testPod(ann map[string]string) map[string]any {
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata": map[string]any{
			"generateName": "payments-7d9f-",
			"namespace":    "app",
			"labels":       map[string]any{"app": "payments", "cloudtaser.io/inject": "true"},
			"annotations":  ann,
		},
		"spec": map[string]any{
			"containers": []any{
				map[string]any{"name": "app", "image": "busybox:1.37", "command": []any{"sh", "-c", "echo $DB_USER"}, "args": []any{"x"}},
			},
		},
	}
}

func request(t *testing.T, obj any) *webhook.Request {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &webhook.Request{UID: "uid-1", Kind: webhook.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: webhook.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "app", Operation: webhook.OperationCreate, Object: raw}
}

// mutated runs Mutate, checks the answer is an allowed JSON patch and returns the patched pod.
func mutated(t *testing.T, cfg *Config, obj any) map[string]any {
	t.Helper()
	req := request(t, obj)
	resp := Mutate(context.Background(), cfg, req)
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp)
	}
	if resp.Result() != webhook.ResultMutated || len(resp.Patch) == 0 {
		t.Fatalf("not a JSON patch answer: %+v", resp)
	}
	out, err := jsonpatch.Apply(req.Object, resp.Patch)
	if err != nil {
		t.Fatalf("patch does not apply: %v\n%s", err, resp.Patch)
	}
	var p map[string]any
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	// Idempotency: the mutated pod, sent again (reinvocation), gets no patch.
	again := Mutate(context.Background(), cfg, request(t, p))
	if !again.Allowed || len(again.Patch) != 0 || again.Result() != webhook.ResultUnchanged {
		t.Fatalf("second call on the mutated pod: %+v", again)
	}
	return p
}

func denied(t *testing.T, cfg *Config, obj any, reason string) string {
	t.Helper()
	resp := Mutate(context.Background(), cfg, request(t, obj))
	if resp.Allowed {
		t.Fatalf("allowed, want denial %s", reason)
	}
	if resp.Code != 403 || resp.Reason != reason {
		t.Fatalf("want reason %s, got %+v", reason, resp)
	}
	msg := resp.Message
	if !strings.HasPrefix(msg, "cloudtaser: ") || !strings.Contains(msg, ". ") || len(resp.Patch) != 0 {
		t.Fatalf("message not 'cloudtaser: why. what to do': %q", msg)
	}
	if len(msg) > 1200 {
		t.Fatalf("message of %d bytes", len(msg))
	}
	return msg
}

func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := []string{}
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func envOf(c any) map[string]string {
	out := map[string]string{}
	for _, e := range get(c, "env").([]any) {
		out[get(e, "name").(string)] = get(e, "value").(string)
	}
	return out
}

func asJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestPodWithoutTheLabelIsNotTouched(t *testing.T) {
	for _, label := range []any{nil, "false", "0", ""} {
		p := testPod(annotations())
		labels := get(p, "metadata", "labels").(map[string]any)
		if label == nil {
			delete(labels, "cloudtaser.io/inject")
		} else {
			labels["cloudtaser.io/inject"] = label
		}
		resp := Mutate(context.Background(), testConfig(), request(t, p))
		if !resp.Allowed || resp.Patch != nil || resp.Reason != "" || resp.Result() != webhook.ResultUnchanged {
			t.Fatalf("label %v: %+v", label, resp)
		}
	}
}

func TestInjectedPodShape(t *testing.T) {
	cfg := testConfig()
	p := mutated(t, cfg, testPod(annotations()))
	spec := get(p, "spec")
	wantInit := `{"command":["/cloudtaser-runtime","install","/cloudtaser/bin"],"image":"` + testImage + `","name":"cloudtaser-init",` +
		`"resources":{"limits":{"memory":"32Mi"},"requests":{"cpu":"10m","memory":"16Mi"}},` +
		`"securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]},"readOnlyRootFilesystem":true,"runAsNonRoot":true,"runAsUser":65532,"seccompProfile":{"type":"RuntimeDefault"}},` +
		`"volumeMounts":[{"mountPath":"/cloudtaser/bin","name":"cloudtaser-bin"},` +
		`{"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount","name":"cloudtaser-bin","readOnly":true}]}`
	if got := asJSON(get(spec, "initContainers", 0)); got != wantInit {
		t.Fatalf("init container\n got %s\nwant %s", got, wantInit)
	}
	wantVolumes := `[{"emptyDir":{"medium":"Memory","sizeLimit":"32Mi"},"name":"cloudtaser-bin"},` +
		`{"name":"cloudtaser-token","projected":{"sources":[{"serviceAccountToken":{"audience":"cloudtaser","expirationSeconds":3600,"path":"token"}}]}}]`
	if got := asJSON(get(spec, "volumes")); got != wantVolumes {
		t.Fatalf("volumes\n got %s\nwant %s", got, wantVolumes)
	}
	c := get(spec, "containers", 0)
	if got := strs(get(c, "command")); !reflect.DeepEqual(got, []string{WrapperPath, "wrap", "--", "sh", "-c", "echo $DB_USER"}) {
		t.Fatalf("command %v", got)
	}
	if got := strs(get(c, "args")); !reflect.DeepEqual(got, []string{"x"}) {
		t.Fatalf("args %v", got)
	}
	wantMounts := `[{"mountPath":"/cloudtaser/bin","name":"cloudtaser-bin","readOnly":true},{"mountPath":"/var/run/secrets/cloudtaser","name":"cloudtaser-token","readOnly":true}]`
	if got := asJSON(get(c, "volumeMounts")); got != wantMounts {
		t.Fatalf("mounts %s", got)
	}
	wantEnv := `[{"name":"CLOUDTASER_VAULT_ADDR","value":"https://bao.internal:8200"},{"name":"CLOUDTASER_VAULT_AUTH_METHOD","value":"kubernetes"},` +
		`{"name":"CLOUDTASER_VAULT_AUTH_ROLE","value":"payments"},{"name":"CLOUDTASER_VAULT_AUTH_MOUNT_PATH","value":"auth/kubernetes"},` +
		`{"name":"CLOUDTASER_VAULT_TOKEN","value":""},{"name":"CLOUDTASER_VAULT_NAMESPACE","value":""},{"name":"CLOUDTASER_VAULT_CACERT","value":""},` +
		`{"name":"CLOUDTASER_VAULT_SKIP_VERIFY","value":""},` +
		`{"name":"CLOUDTASER_SECRET_PATHS","value":"secret/data/payments/db"},{"name":"CLOUDTASER_ENV_MAP","value":"username=DB_USER,password=DB_PASSWORD"},` +
		`{"name":"CLOUDTASER_SA_TOKEN_PATH","value":"/var/run/secrets/cloudtaser/token"},{"name":"CLOUDTASER_ACCEPT_DANGEROUS_ENV","value":""}]`
	if got := asJSON(get(c, "env")); got != wantEnv {
		t.Fatalf("env\n got %s\nwant %s", got, wantEnv)
	}
	if got := get(p, "metadata", "annotations", AnnotationInjected); got != testVersion {
		t.Fatalf("annotation %v", got)
	}
	// Everything else is as it was.
	if get(p, "metadata", "labels", "app") != "payments" || get(p, "metadata", "generateName") != "payments-7d9f-" || get(c, "image") != "busybox:1.37" {
		t.Fatalf("pod changed elsewhere: %s", asJSON(p))
	}
}

// The env the webhook writes is read back by the wrapper's own parser to what the
// annotations say: the two halves of the runtime agree.
func TestWrapperEnvRoundTripsThroughTheWrappersParser(t *testing.T) {
	for _, ann := range []map[string]string{
		annotations(),
		annotations("cloudtaser.io/vault-auth-path", "auth/k8s/eu", "cloudtaser.io/secret-paths", " secret/data/a , kv/data/b/c ", "cloudtaser.io/env-map", " u = U ; c=C,d=D "),
		annotations("cloudtaser.io/vault-address", "http://vault.vault.svc:8200/"),
	} {
		want, err := contract.ParseAnnotations(ann)
		if err != nil {
			t.Fatal(err)
		}
		p := mutated(t, testConfig(), testPod(ann))
		got, err := contract.ResolveEnv(envOf(get(p, "spec", "containers", 0)), func(string) bool { return false })
		if err != nil {
			t.Fatalf("the wrapper refuses the injected env: %v", err)
		}
		if got.Address != want.Address || got.Role != want.Role || got.AuthMount != want.AuthMount || !reflect.DeepEqual(got.Secrets, want.Secrets) || got.SATokenPath != TokenPath {
			t.Fatalf("wrapper config %v, annotations %+v", got, want)
		}
	}
}

// The auth mount is always written (the default too): every variable the injector owns is set,
// so that nothing else can set it.
func TestAuthMountPathIsAlwaysWritten(t *testing.T) {
	p := mutated(t, testConfig(), testPod(annotations("cloudtaser.io/vault-auth-path", "/auth/kubernetes/")))
	if v := envOf(get(p, "spec", "containers", 0))[contract.EnvAuthMountPath]; v != "auth/kubernetes" {
		t.Fatalf("default mount %q", v)
	}
	p = mutated(t, testConfig(), testPod(annotations("cloudtaser.io/vault-auth-path", "k8s-eu")))
	if v := envOf(get(p, "spec", "containers", 0))[contract.EnvAuthMountPath]; v != "auth/k8s-eu" {
		t.Fatalf("mount %q", v)
	}
}

// Reinvocation does not bypass the policy: an injected pod whose address was changed by
// someone else afterwards is refused.
func TestInjectedPodIsStillChecked(t *testing.T) {
	p := mutated(t, testConfig(), testPod(annotations()))
	get(p, "metadata", "annotations").(map[string]any)["cloudtaser.io/vault-address"] = "https://evil.example:8200"
	denied(t, testConfig(), p, webhook.ReasonAddressNotAllowed)
	get(p, "metadata", "annotations").(map[string]any)["cloudtaser.io/vault-address"] = "not a url"
	denied(t, testConfig(), p, webhook.ReasonBadAnnotations)
}

func TestOursFirstThenInitContainersAndNativeSidecarsWrapped(t *testing.T) {
	p := testPod(annotations())
	spec := p["spec"].(map[string]any)
	spec["initContainers"] = []any{
		map[string]any{"name": "migrate", "image": "migrate:1", "command": []any{"/migrate"}},
		map[string]any{"name": "proxy", "image": "envoy:1", "command": []any{"/envoy"}, "restartPolicy": "Always"},
	}
	spec["containers"] = append(spec["containers"].([]any), map[string]any{
		"name": "second", "image": "busybox:1.37", "command": []any{"sleep", "1"},
		"env":          []any{map[string]any{"name": "KEEP", "value": "1"}},
		"volumeMounts": []any{map[string]any{"name": "data", "mountPath": "/data"}},
	})
	spec["volumes"] = []any{map[string]any{"name": "data", "emptyDir": map[string]any{}}}
	out := mutated(t, testConfig(), p)
	inits := get(out, "spec", "initContainers").([]any)
	names := []string{}
	for _, c := range inits {
		names = append(names, get(c, "name").(string))
	}
	if !reflect.DeepEqual(names, []string{InitContainerName, "migrate", "proxy"}) {
		t.Fatalf("init containers %v", names)
	}
	if got := strs(get(inits[2], "command")); !reflect.DeepEqual(got, []string{WrapperPath, "wrap", "--", "/envoy"}) || len(envOf(inits[2])) != len(contract.OwnedEnv) {
		t.Fatalf("native sidecar not wrapped: %s", asJSON(inits[2]))
	}
	if get(inits[2], "restartPolicy") != "Always" || len(get(inits[2], "volumeMounts").([]any)) != 2 {
		t.Fatalf("native sidecar: %s", asJSON(inits[2]))
	}
	if got := strs(get(inits[1], "command")); !reflect.DeepEqual(got, []string{WrapperPath, "wrap", "--", "/migrate"}) || envOf(inits[1])[contract.EnvEnvMap] == "" {
		t.Fatalf("init container not wrapped: %s", asJSON(inits[1]))
	}
	second := get(out, "spec", "containers", 1)
	if got := strs(get(second, "command")); !reflect.DeepEqual(got, []string{WrapperPath, "wrap", "--", "sleep", "1"}) {
		t.Fatalf("second container %v", got)
	}
	env := get(second, "env").([]any)
	if get(env[0], "name") != "KEEP" || len(env) != 1+len(contract.OwnedEnv) {
		t.Fatalf("env %s", asJSON(env))
	}
	mounts := get(second, "volumeMounts").([]any)
	if get(mounts[0], "name") != "data" || len(mounts) != 3 {
		t.Fatalf("mounts %s", asJSON(mounts))
	}
	vols := get(out, "spec", "volumes").([]any)
	if get(vols[0], "name") != "data" || get(vols[1], "name") != VolumeBin || get(vols[2], "name") != VolumeToken {
		t.Fatalf("volumes %s", asJSON(vols))
	}
}

func TestConfigurableSizeAndAudience(t *testing.T) {
	cfg := testConfig()
	cfg.EmptyDirSize, cfg.Audience = "64Mi", "https://bao.internal"
	p := mutated(t, cfg, testPod(annotations()))
	if get(p, "spec", "volumes", 0, "emptyDir", "sizeLimit") != "64Mi" ||
		get(p, "spec", "volumes", 1, "projected", "sources", 0, "serviceAccountToken", "audience") != "https://bao.internal" {
		t.Fatalf("volumes %s", asJSON(get(p, "spec", "volumes")))
	}
}

func TestAddressPolicy(t *testing.T) {
	cfg := testConfig()
	for _, ok := range []string{"https://bao.internal:8200", "https://BAO.Internal:8200/", "HTTPS://bao.internal:8200", " https://bao.internal:8200 ", "http://vault.vault.svc:8200"} {
		mutated(t, cfg, testPod(annotations("cloudtaser.io/vault-address", ok)))
	}
	cfg443 := &Config{RuntimeImage: testImage, AllowedAddresses: []string{"https://bao.example.com"}, Audience: "a"}
	mutated(t, cfg443, testPod(annotations("cloudtaser.io/vault-address", "https://bao.example.com:443")))
	const canary = "canary-evil-host"
	for _, bad := range []string{
		"https://" + canary + ".example:8200",
		"https://bao.internal:8201",
		"http://bao.internal:8200", // same host, plain HTTP
		"https://bao.internal",     // default port 443, not 8200
		"https://bao.internal:8200/" + canary,
		"https://bao.internal.:8201",
	} {
		msg := denied(t, cfg, testPod(annotations("cloudtaser.io/vault-address", bad)), webhook.ReasonAddressNotAllowed)
		if strings.Contains(msg, canary) || strings.Contains(msg, "bao.internal") {
			t.Fatalf("the denial shows an address: %s", msg)
		}
	}
	// Not even a URL, or with credentials: the contract refuses it first.
	for _, bad := range []string{"https://user:" + canary + "@bao.internal:8200", "bao.internal:8200", "https://bao.internal:8200?x=1", "ftp://bao.internal", "https://bao.internal:8200#" + canary, "https://bao.internal:8200.evil.example"} {
		msg := denied(t, cfg, testPod(annotations("cloudtaser.io/vault-address", bad)), webhook.ReasonBadAnnotations)
		if strings.Contains(msg, canary) {
			t.Fatalf("the denial shows a credential: %s", msg)
		}
	}
}

func TestHostileAnnotationsAreDenied(t *testing.T) {
	huge := strings.Repeat("a", 200_000)
	for _, c := range []struct {
		name  string
		extra []string
	}{
		{"missing address", []string{"cloudtaser.io/vault-address", "\x00delete"}},
		{"missing role", []string{"cloudtaser.io/vault-role", "\x00delete"}},
		{"bad role", []string{"cloudtaser.io/vault-role", "../root"}},
		{"reserved mount", []string{"cloudtaser.io/secret-paths", "sys/data/x"}},
		{"reserved mount any case", []string{"cloudtaser.io/secret-paths", "SYS/data/x"}},
		{"dot-dot path", []string{"cloudtaser.io/secret-paths", "secret/data/../x"}},
		{"not kv v2", []string{"cloudtaser.io/secret-paths", "secret/payments/db"}},
		{"bad auth mount", []string{"cloudtaser.io/vault-auth-path", "auth/../sys"}},
		{"env-map newline injection", []string{"cloudtaser.io/env-map", "password=DB_PASSWORD\nVAULT_ADDR=https://evil"}},
		{"env-map $(VAR) injection", []string{"cloudtaser.io/env-map", "password=$(VAULT_ADDR)"}},
		{"env-map duplicate env", []string{"cloudtaser.io/env-map", "a=X,b=X"}},
		{"env-map groups mismatch", []string{"cloudtaser.io/env-map", "a=X;b=Y"}},
		{"env-map no pair", []string{"cloudtaser.io/env-map", "password"}},
		{"huge path", []string{"cloudtaser.io/secret-paths", "secret/data/" + huge}},
		{"huge role", []string{"cloudtaser.io/vault-role", huge}},
		{"annotation says no", []string{"cloudtaser.io/inject", "false"}},
		{"annotation not a bool", []string{"cloudtaser.io/inject", "maybe"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			denied(t, testConfig(), testPod(annotations(c.extra...)), webhook.ReasonBadAnnotations)
		})
	}
	p := testPod(annotations())
	get(p, "metadata", "labels").(map[string]any)["cloudtaser.io/inject"] = "maybe"
	denied(t, testConfig(), p, webhook.ReasonBadAnnotations)
	// A mapping at the rule book's length limits still patches; one over them is refused
	// (spec/contract/rules.json; before the rule book was shared, Go had no limit here).
	atLimit := "f" + strings.Repeat("a", contract.MaxField-1) + "=A" + strings.Repeat("A", contract.MaxEnvName-1)
	mutated(t, testConfig(), testPod(annotations("cloudtaser.io/env-map", atLimit)))
	denied(t, testConfig(), testPod(annotations("cloudtaser.io/env-map", "a=A"+huge)), webhook.ReasonBadAnnotations)
	// The label alone (no inject annotation) opts in: the annotation is optional.
	mutated(t, testConfig(), testPod(annotations("cloudtaser.io/inject", "\x00delete")))
}

func TestConflictsAreDenied(t *testing.T) {
	const canary = "value-canary-19c2"
	for _, name := range append(append([]string{}, contract.OwnedEnv...), "CLOUDTASER_FUTURE_SETTING") {
		p := testPod(annotations())
		c := get(p, "spec", "containers", 0).(map[string]any)
		c["env"] = []any{map[string]any{"name": "OK", "value": "1"}, map[string]any{"name": name, "value": canary}}
		msg := denied(t, testConfig(), p, webhook.ReasonEnvConflict)
		if !strings.Contains(msg, name) || strings.Contains(msg, canary) {
			t.Fatalf("%s: %s", name, msg)
		}
	}
	p := testPod(annotations())
	get(p, "spec", "containers", 0).(map[string]any)["env"] = []any{map[string]any{"name": "X", "valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "s", "key": "k"}}}, map[string]any{"name": "CLOUDTASER_VAULT_ADDR", "valueFrom": map[string]any{}}}
	denied(t, testConfig(), p, webhook.ReasonEnvConflict)
	for _, vol := range []string{VolumeBin, VolumeToken} {
		p := testPod(annotations())
		p["spec"].(map[string]any)["volumes"] = []any{map[string]any{"name": vol, "emptyDir": map[string]any{}}}
		denied(t, testConfig(), p, webhook.ReasonEnvConflict)
	}
	for _, mp := range []string{"/cloudtaser/bin", "/cloudtaser/bin/", "/var/run/secrets/cloudtaser", "/var/run/secrets/cloudtaser/token"} {
		p := testPod(annotations())
		get(p, "spec", "containers", 0).(map[string]any)["volumeMounts"] = []any{map[string]any{"name": "x", "mountPath": mp}}
		denied(t, testConfig(), p, webhook.ReasonEnvConflict)
	}
	// A container's own CLOUDTASER_MODE (a wrapper setting the annotations do not carry) is kept.
	p = testPod(annotations())
	get(p, "spec", "containers", 0).(map[string]any)["env"] = []any{map[string]any{"name": "CLOUDTASER_MODE", "value": "resident"}}
	out := mutated(t, testConfig(), p)
	if envOf(get(out, "spec", "containers", 0))["CLOUDTASER_MODE"] != "resident" {
		t.Fatal("own wrapper setting lost")
	}
}

func TestRequestsThatAreNotPodCreations(t *testing.T) {
	cfg := testConfig()
	ctx := context.Background()
	req := request(t, testPod(annotations()))
	req.Operation = "UPDATE"
	if r := Mutate(ctx, cfg, req); !r.Allowed || r.Patch != nil {
		t.Fatalf("update: %+v", r)
	}
	req = request(t, testPod(annotations()))
	req.Kind = webhook.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	if r := Mutate(ctx, cfg, req); r.Allowed || r.Reason != webhook.ReasonBadRequest {
		t.Fatalf("deployment: %+v", r)
	}
	for _, obj := range []string{``, `[]`, `{"metadata":{}}`, `{"spec":"x"}`, `nul`} {
		req = request(t, nil)
		req.Object = json.RawMessage(obj)
		if r := Mutate(ctx, cfg, req); r.Allowed || r.Reason != webhook.ReasonBadRequest {
			t.Fatalf("object %q: %+v", obj, r)
		}
	}
	if r := Mutate(ctx, cfg, nil); r.Allowed || r.Reason != webhook.ReasonBadRequest {
		t.Fatalf("nil: %+v", r)
	}
	noContainers := testPod(annotations())
	noContainers["spec"].(map[string]any)["containers"] = []any{}
	denied(t, cfg, noContainers, webhook.ReasonBadRequest)
	// Bad configuration: every pod refused, reason internal, nothing about the flags' values.
	bad := &Config{RuntimeImage: testImage, Audience: "a"}
	denied(t, bad, testPod(annotations()), webhook.ReasonInternal)
	if r := Mutate(ctx, nil, request(t, testPod(annotations()))); r.Allowed || r.Reason != webhook.ReasonInternal {
		t.Fatalf("nil config: %+v", r)
	}
}

// The envelope (uid, apiVersion, patchType, unreadable reviews) is the webhook's and tested
// there (internal/webhook); what a dry run gets is the mutation's.
func TestDryRunIsAnsweredLikeARealRequest(t *testing.T) {
	cfg := testConfig()
	ctx := context.Background()
	yes := true
	dry := request(t, testPod(annotations()))
	dry.DryRun = &yes
	out := Mutate(ctx, cfg, dry)
	if out.Result() != webhook.ResultMutated {
		t.Fatalf("dry run: %+v", out)
	}
	real := Mutate(ctx, cfg, request(t, testPod(annotations())))
	if string(real.Patch) != string(out.Patch) {
		t.Fatal("dry run patched differently")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct {
		cfg  *Config
		flag string
	}{
		{&Config{AllowedAddresses: []string{testAddr}, Audience: "a"}, "--runtime-image"},
		{&Config{RuntimeImage: "a b", AllowedAddresses: []string{testAddr}, Audience: "a"}, "--runtime-image"},
		{&Config{RuntimeImage: testImage, Audience: "a"}, "--allowed-vault-address"},
		{&Config{RuntimeImage: testImage, AllowedAddresses: []string{"bao:8200"}, Audience: "a"}, "--allowed-vault-address"},
		{&Config{RuntimeImage: testImage, AllowedAddresses: []string{testAddr}}, "--audience"},
		{&Config{RuntimeImage: testImage, AllowedAddresses: []string{testAddr}, Audience: "a", EmptyDirSize: "lots"}, "--emptydir-size"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%+v: %v", c.cfg.AllowedAddresses, err)
		}
	}
	good := testConfig()
	if err := good.Validate(); err != nil || good.EmptyDirSize != "32Mi" {
		t.Fatal(err, good.EmptyDirSize)
	}
}

// --- entrypoint resolution against a real registry (go-containerregistry's) ---

type imageSpec struct {
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
	Arm64      []string `json:"arm64Entrypoint,omitempty"` // when set: a multi-arch index
}

// startRegistry serves go-containerregistry's registry on 127.0.0.1, pushes the images
// (names as in a pod, e.g. docker.io/library/app:1) under their repository paths and returns
// a resolver whose mirrors send docker.io and ghcr.io there.
func startRegistry(t testing.TB, images map[string]imageSpec) *registry.Resolver {
	t.Helper()
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	for ref, spec := range images {
		src, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := name.ParseReference(u.Host + "/" + src.Context().RepositoryStr() + ":" + src.Identifier())
		if err != nil {
			t.Fatal(err)
		}
		img := configImage(t, spec.Entrypoint, spec.Cmd)
		if spec.Arm64 == nil {
			if err := remote.Write(dst, img); err != nil {
				t.Fatal(err)
			}
			continue
		}
		idx := mutate.AppendManifests(empty.Index,
			mutate.IndexAddendum{Add: configImage(t, []string{"/attestation"}, nil), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}},
			mutate.IndexAddendum{Add: configImage(t, spec.Arm64, spec.Cmd), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
		if err := remote.WriteIndex(dst, idx); err != nil {
			t.Fatal(err)
		}
	}
	r, err := registry.New(registry.Options{Mirrors: map[string]string{"docker.io": u.Host, "ghcr.io": u.Host}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func configImage(t testing.TB, ep, cmd []string) v1.Image {
	t.Helper()
	img, err := random.Image(32, 1)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Entrypoint: ep, Cmd: cmd})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func podWith(c map[string]any) map[string]any {
	p := testPod(annotations())
	c["name"] = "app"
	p["spec"].(map[string]any)["containers"] = []any{c}
	return p
}

func TestCommandAndArgsRules(t *testing.T) {
	res := startRegistry(t, map[string]imageSpec{
		"docker.io/library/nginx:1.27": {Entrypoint: []string{"/docker-entrypoint.sh"}, Cmd: []string{"nginx", "-g", "daemon off;"}},
		"docker.io/library/cmdonly:1":  {Cmd: []string{"sh", "-c", "echo $HOME $(id)"}},
		"docker.io/library/nothing:1":  {},
		"ghcr.io/team/multi:2":         {Entrypoint: []string{"/amd64"}, Arm64: []string{"/arm64"}},
	})
	cfg := testConfig()
	cfg.Resolver = res
	w := func(s ...string) []string { return append([]string{WrapperPath, "wrap", "--"}, s...) }
	for _, c := range []struct {
		name      string
		container map[string]any
		cmd, args []string // args nil: the container has no args after the patch
	}{
		{"command and args given: no lookup", map[string]any{"image": "docker.io/library/absent:1", "command": []any{"/bin/app"}, "args": []any{"--x"}}, w("/bin/app"), []string{"--x"}},
		{"no command, no args: ENTRYPOINT, then CMD as args", map[string]any{"image": "nginx:1.27"}, w("/docker-entrypoint.sh"), []string{"nginx", "-g", "daemon off;"}},
		{"no command, args given: ENTRYPOINT + args (CMD ignored)", map[string]any{"image": "nginx:1.27", "args": []any{"nginx", "-T"}}, w("/docker-entrypoint.sh"), []string{"nginx", "-T"}},
		{"CMD only: $ escaped for Kubernetes expansion", map[string]any{"image": "docker.io/library/cmdonly:1"}, w(), []string{"sh", "-c", "echo $$HOME $$(id)"}},
		{"CMD only, args given", map[string]any{"image": "cmdonly:1", "args": []any{"sleep", "1"}}, w(), []string{"sleep", "1"}},
		{"multi-arch index: amd64 by default", map[string]any{"image": "ghcr.io/team/multi:2"}, w("/amd64"), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := mutated(t, cfg, podWith(c.container))
			ct := get(p, "spec", "containers", 0)
			if got := strs(get(ct, "command")); !reflect.DeepEqual(got, c.cmd) {
				t.Fatalf("command %q, want %q", got, c.cmd)
			}
			gotArgs := get(ct, "args")
			if c.args == nil {
				if gotArgs != nil {
					t.Fatalf("args %v", gotArgs)
				}
			} else if got := strs(gotArgs); !reflect.DeepEqual(got, c.args) {
				t.Fatalf("args %q, want %q", got, c.args)
			}
		})
	}
	arm := podWith(map[string]any{"image": "ghcr.io/team/multi:2"})
	arm["spec"].(map[string]any)["nodeSelector"] = map[string]any{"kubernetes.io/arch": "arm64"}
	if got := strs(get(mutated(t, cfg, arm), "spec", "containers", 0, "command")); !reflect.DeepEqual(got, w("/arm64")) {
		t.Fatalf("arm64 node: %v", got)
	}
	pin := func(values ...string) map[string]any {
		vs := []any{}
		for _, v := range values {
			vs = append(vs, v)
		}
		return map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
			"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "kubernetes.io/arch", "operator": "In", "values": vs}}}}}}}
	}
	for _, c := range []struct {
		affinity map[string]any
		want     string
	}{{pin("arm64"), "/arm64"}, {pin("arm64", "amd64"), "/amd64"}, {pin("amd64"), "/amd64"}} {
		p := podWith(map[string]any{"image": "ghcr.io/team/multi:2"})
		p["spec"].(map[string]any)["affinity"] = c.affinity
		if got := strs(get(mutated(t, cfg, p), "spec", "containers", 0, "command")); !reflect.DeepEqual(got, w(c.want)) {
			t.Fatalf("affinity %s: %v", asJSON(c.affinity), got)
		}
	}
	for _, c := range []struct {
		name, image, want, todo string
	}{
		{"neither ENTRYPOINT nor CMD", "nothing:1", "neither ENTRYPOINT nor CMD", "Set command"},
		{"image not in the registry", "docker.io/library/absent:1", "not found", "--pin-entrypoints"},
		{"not a reference", "Bad Image", "not a valid image reference", "--pin-entrypoints"},
		{"no image", "", "neither command nor image", "Set the container's image"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := denied(t, cfg, podWith(map[string]any{"image": c.image}), webhook.ReasonImageUnresolvable)
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, c.todo) {
				t.Fatalf("message %q", msg)
			}
		})
	}
	if s := cfg.Stats(); s.Lookups == 0 || s.Errors == 0 {
		t.Fatalf("stats %+v", s)
	}
	// Without a resolver, a container without command is refused with the way out.
	msg := denied(t, testConfig(), podWith(map[string]any{"image": "nginx:1.27"}), webhook.ReasonImageUnresolvable)
	if !strings.Contains(msg, "--pin-entrypoints") {
		t.Fatal(msg)
	}
	// Several containers: each resolved, order kept.
	p := testPod(annotations())
	p["spec"].(map[string]any)["containers"] = []any{
		map[string]any{"name": "a", "image": "nginx:1.27"},
		map[string]any{"name": "b", "image": "cmdonly:1"},
		map[string]any{"name": "c", "image": "nginx:1.27", "command": []any{"/x"}},
	}
	out := mutated(t, cfg, p)
	for i, want := range [][]string{w("/docker-entrypoint.sh"), w(), w("/x")} {
		if got := strs(get(out, "spec", "containers", i, "command")); !reflect.DeepEqual(got, want) {
			t.Fatalf("container %d: %v", i, got)
		}
	}
}

func TestLookupsEndBeforeTheRequestDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	lctx, lcancel := lookupContext(ctx)
	defer lcancel()
	got, _ := lctx.Deadline()
	if d := want.Sub(got); d != LookupMargin {
		t.Fatalf("margin %v", d)
	}
	short, cancel3 := context.WithTimeout(context.Background(), time.Second)
	defer cancel3()
	want, _ = short.Deadline()
	lctx, lcancel2 := lookupContext(short)
	defer lcancel2()
	got, _ = lctx.Deadline()
	if d := want.Sub(got); d <= 0 || d > 200*time.Millisecond {
		t.Fatalf("margin of a 1 s budget: %v", d)
	}
}

func TestLookupHonoursTheContextDeadline(t *testing.T) {
	res := startRegistry(t, map[string]imageSpec{"docker.io/library/nginx:1.27": {Entrypoint: []string{"/e"}}})
	cfg := testConfig()
	cfg.Resolver = res
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := Mutate(ctx, cfg, request(t, podWith(map[string]any{"image": "nginx:1.27"})))
	if r.Allowed || r.Reason != webhook.ReasonImageUnresolvable || !strings.Contains(r.Message, "timeout") {
		t.Fatalf("%+v", r)
	}
}
