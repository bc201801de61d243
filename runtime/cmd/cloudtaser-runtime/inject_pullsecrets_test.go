package main

// --read-pull-secrets end to end: the webhook reads a pod's imagePullSecrets through the real
// API server (RBAC decides), skips a listed secret that does not exist, and uses the right
// one against a registry (go-containerregistry's, behind Basic auth) to read ENTRYPOINT/CMD.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
)

const regPassword = "CANARY-REGISTRY-PASSWORD-5d1e"

func TestInjectorReadsPullSecretsThroughTheAPI(t *testing.T) {
	k := startKube(t)
	port := freePorts(t, 1)[0]
	tokenFile := setupInjectorCluster(t, k, port)

	var locked, authorized atomic.Int64
	inner := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if locked.Load() == 1 {
			if u, p, ok := r.BasicAuth(); !ok || u != "puller" || p != regPassword {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			authorized.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	pushImage(t, host, "private/app:1", []string{"/app", "--from-image"})
	pushImage(t, host, "private/app:2", []string{"/app2"})
	locked.Store(1)

	auth := base64.StdEncoding.EncodeToString([]byte("puller:" + regPassword))
	cfgJSON, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	k.must(t, "POST", "/api/v1/namespaces/"+appNS+"/secrets", map[string]any{
		"metadata": map[string]any{"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
		"data": map[string]string{".dockerconfigjson": base64.StdEncoding.EncodeToString(cfgJSON)},
	})
	replicaPod(t, k, "inj-ps")
	r := startReplica(t, k, "inj-ps", port, tokenFile, "1h", "--reuse-port", "--read-pull-secrets")
	k.waitFor(t, "the webhook serving", 30*time.Second, func() bool { return strings.Contains(r.stderr.String(), "serving on") })

	pod := func(tag string, secrets ...string) map[string]any {
		p := appPod(true, allowed)
		spec := p["spec"].(map[string]any)
		c := spec["containers"].([]any)[0].(map[string]any)
		delete(c, "command")
		delete(c, "args")
		c["image"] = host + "/private/app:" + tag
		var ps []any
		for _, s := range secrets {
			ps = append(ps, map[string]string{"name": s})
		}
		spec["imagePullSecrets"] = ps
		return p
	}

	// Without `get secrets` the pull secrets cannot be read: refused, and it says so.
	code, out := createPod(t, k, pod("1", "gone", "regcred"))
	msg, _ := out["message"].(string)
	if code != 403 || !strings.Contains(msg, "could not be read") {
		t.Fatalf("without get secrets: HTTP %d %q", code, msg)
	}

	// The RBAC install adds with --read-pull-secrets.
	k.must(t, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", map[string]any{
		"metadata": map[string]any{"name": "cloudtaser-injector-pull-secrets"},
		"rules":    []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"secrets"}, "verbs": []string{"get"}}},
	})
	k.must(t, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", map[string]any{
		"metadata": map[string]any{"name": "cloudtaser-injector-pull-secrets"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "cloudtaser-injector", "namespace": sysNS}},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cloudtaser-injector-pull-secrets"},
	})
	var mutated map[string]any
	k.waitFor(t, "a pod injected with its ENTRYPOINT read with the pull secret", 15*time.Second, func() bool {
		code, out = createPod(t, k, pod("1", "gone", "regcred"))
		mutated = out
		return code == 201
	})
	c := mutated["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	if got := fmt.Sprint(c["command"], c["args"]); got != "[/cloudtaser/bin/cloudtaser-runtime wrap -- /app --from-image] [--serve]" {
		t.Errorf("command/args from the private image: %s", got)
	}
	if authorized.Load() == 0 {
		t.Error("the registry never saw the pull secret's credentials")
	}

	// Only a secret that does not exist: skipped (as the kubelet does), so the lookup (of a
	// tag not in the cache) is anonymous and the registry refuses it.
	code, out = createPod(t, k, pod("2", "gone"))
	msg, _ = out["message"].(string)
	if code != 403 || strings.Contains(msg, "could not be read") || !strings.Contains(msg, "container app has no command") {
		t.Errorf("a missing pull secret: HTTP %d %q", code, msg)
	}
	t.Logf("anonymous lookup refused: %s", msg)

	metrics := scrape(t, port, "inj-ps")["inj-ps"]
	if metricValue(metrics, "cloudtaser_injector_registry_lookups_total") < 3 {
		t.Errorf("registry lookups not counted:\n%s", metrics)
	}
	for _, where := range []string{r.stderr.String(), metrics} {
		if strings.Contains(where, regPassword) || strings.Contains(where, auth) {
			t.Error("the registry password reached the webhook's log or metrics")
		}
	}
}
