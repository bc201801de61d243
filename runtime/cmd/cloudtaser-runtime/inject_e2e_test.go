package main

// End-to-end proof of `cloudtaser-runtime inject` against a real kube-apiserver (startKube):
// the API server calls the webhook processes at https://127.0.0.1:PORT/mutate (a URL webhook,
// as install's --webhook-url mode), two replicas share that port with --reuse-port, and each
// keeps its in-memory CA in the MutatingWebhookConfiguration's caBundle.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	sysNS   = "cloudtaser-system"
	appNS   = "apps"
	mwcName = "cloudtaser-injector"
	hookNm  = "inject.cloudtaser.io"
	mwcPath = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + mwcName
	allowed = "https://bao.internal:8200"
	canary  = "CANARY-POD-ENV-VALUE-7f3a"
)

type replica struct {
	name   string
	cmd    *exec.Cmd
	stderr *lockedBuf
	done   chan struct{}
	code   int
}

func (r *replica) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// setupInjectorCluster creates what `target install --webhook-url` would (namespaces,
// ServiceAccount, least-privilege RBAC, the MWC without caBundle) and returns a token file
// of the injector's ServiceAccount.
func setupInjectorCluster(t testing.TB, k *kubeEnv, port int) string {
	for _, ns := range []string{sysNS, appNS} {
		k.must(t, "POST", "/api/v1/namespaces", map[string]any{"metadata": map[string]any{"name": ns}})
	}
	// No controller-manager: the ServiceAccount admission plugin wants "default" to exist.
	k.must(t, "POST", "/api/v1/namespaces/"+appNS+"/serviceaccounts", map[string]any{"metadata": map[string]any{"name": "default"}})
	k.must(t, "POST", "/api/v1/namespaces/"+sysNS+"/serviceaccounts", map[string]any{"metadata": map[string]any{"name": "cloudtaser-injector"}})
	k.must(t, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", map[string]any{
		"metadata": map[string]any{"name": "cloudtaser-injector"},
		"rules": []any{map[string]any{"apiGroups": []string{"admissionregistration.k8s.io"}, "resources": []string{"mutatingwebhookconfigurations"},
			"resourceNames": []string{mwcName}, "verbs": []string{"get", "patch", "update"}}},
	})
	subject := []any{map[string]any{"kind": "ServiceAccount", "name": "cloudtaser-injector", "namespace": sysNS}}
	k.must(t, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", map[string]any{
		"metadata": map[string]any{"name": "cloudtaser-injector"}, "subjects": subject,
		"roleRef": map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cloudtaser-injector"},
	})
	k.must(t, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/"+sysNS+"/roles", map[string]any{
		"metadata": map[string]any{"name": "cloudtaser-injector"},
		"rules":    []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"pods"}, "verbs": []string{"get", "list"}}},
	})
	k.must(t, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/"+sysNS+"/rolebindings", map[string]any{
		"metadata": map[string]any{"name": "cloudtaser-injector"}, "subjects": subject,
		"roleRef": map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cloudtaser-injector"},
	})
	tokenFile := filepath.Join(k.dir, "injector.token")
	writeBoundToken(t, k, tokenFile, "injector-token-1")
	k.must(t, "POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", map[string]any{
		"metadata": map[string]any{"name": mwcName},
		"webhooks": []any{map[string]any{
			"name":                    hookNm,
			"clientConfig":            map[string]any{"url": fmt.Sprintf("https://127.0.0.1:%d/mutate", port)},
			"rules":                   []any{map[string]any{"apiGroups": []string{""}, "apiVersions": []string{"v1"}, "operations": []string{"CREATE"}, "resources": []string{"pods"}}},
			"objectSelector":          map[string]any{"matchLabels": map[string]string{"cloudtaser.io/inject": "true"}},
			"namespaceSelector":       map[string]any{"matchExpressions": []any{map[string]any{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": []string{"kube-system", sysNS}}}},
			"failurePolicy":           "Fail",
			"sideEffects":             "None",
			"reinvocationPolicy":      "IfNeeded",
			"timeoutSeconds":          10,
			"admissionReviewVersions": []string{"v1"},
		}},
	})
	return tokenFile
}

// writeBoundToken writes a token of the injector's ServiceAccount bound to a Secret named
// holder (created here): deleting that Secret invalidates the token, as the kubelet's
// rotation retires an old projected token.
func writeBoundToken(t testing.TB, k *kubeEnv, tokenFile, holder string) {
	sec := k.must(t, "POST", "/api/v1/namespaces/"+sysNS+"/secrets", map[string]any{"metadata": map[string]any{"name": holder}})
	uid := sec["metadata"].(map[string]any)["uid"]
	tok := k.must(t, "POST", "/api/v1/namespaces/"+sysNS+"/serviceaccounts/cloudtaser-injector/token",
		map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": map[string]any{
			"expirationSeconds": 3600, "boundObjectRef": map[string]any{"apiVersion": "v1", "kind": "Secret", "name": holder, "uid": uid}}})
	tmp := tokenFile + ".new"
	if err := os.WriteFile(tmp, []byte(tok["status"].(map[string]any)["token"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, tokenFile); err != nil { // atomic, as the kubelet's symlink swap
		t.Fatal(err)
	}
}

// replicaPod stands for the Deployment's pod of a replica (never scheduled: no nodes).
func replicaPod(t testing.TB, k *kubeEnv, name string) {
	k.must(t, "POST", "/api/v1/namespaces/"+sysNS+"/pods", map[string]any{
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"serviceAccountName": "cloudtaser-injector", "automountServiceAccountToken": false,
			"containers": []any{map[string]any{"name": "inject", "image": "cloudtaser-runtime:test"}}},
	})
}

func startReplica(t testing.TB, k *kubeEnv, name string, port int, tokenFile, validity string, extra ...string) *replica {
	t.Helper()
	args := []string{"inject", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--san", "127.0.0.1",
		"--runtime-image", "registry.local/cloudtaser-runtime:test", "--allowed-vault-address", allowed, "--audience", "vault",
		"--cert-validity", validity, "--shutdown-delay", "2s", "--kube-token-file", tokenFile, "--kube-ca-file", k.caFile}
	if len(extra) == 0 {
		extra = []string{"--reuse-port"}
	}
	cmd := exec.Command(binary, append(args, extra...)...)
	cmd.Env = []string{"POD_NAME=" + name, "POD_NAMESPACE=" + sysNS, "KUBERNETES_SERVICE_HOST=127.0.0.1",
		fmt.Sprintf("KUBERNETES_SERVICE_PORT=%d", k.port), "PATH=/usr/bin:/bin"}
	r := &replica{name: name, cmd: cmd, stderr: &lockedBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.stderr, r.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		r.code = cmd.ProcessState.ExitCode()
		close(r.done)
	}()
	t.Cleanup(func() {
		if !r.exited() {
			_ = cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("--- %s stderr:\n%s", name, r.stderr.String())
		}
	})
	return r
}

// bundle returns the owners (pod names) of the CAs in the webhook entry's caBundle.
func bundle(t testing.TB, k *kubeEnv) []string {
	out := k.must(t, "GET", mwcPath, nil)
	hooks := out["webhooks"].([]any)
	cc := hooks[0].(map[string]any)["clientConfig"].(map[string]any)
	b64, _ := cc["caBundle"].(string)
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	var owners []string
	for _, c := range parsePEMCerts(data) {
		owners = append(owners, c.Subject.CommonName)
	}
	return owners
}

func parsePEMCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, data = pem.Decode(data); blk == nil {
			return out
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func count(owners []string, name string) int {
	n := 0
	for _, o := range owners {
		if o == name {
			n++
		}
	}
	return n
}

var podSeq int
var podMu sync.Mutex

func appPod(labelled bool, address string) map[string]any {
	podMu.Lock()
	podSeq++
	n := podSeq
	podMu.Unlock()
	labels := map[string]string{"app": "demo"}
	if labelled {
		labels["cloudtaser.io/inject"] = "true"
	}
	return map[string]any{
		"metadata": map[string]any{
			"name": fmt.Sprintf("demo-%d", n), "labels": labels,
			"annotations": map[string]string{
				"cloudtaser.io/inject": "true", "cloudtaser.io/vault-address": address, "cloudtaser.io/vault-role": "demo",
				"cloudtaser.io/secret-paths": "secret/data/demo/db", "cloudtaser.io/env-map": "password=DB_PASSWORD",
			},
		},
		"spec": map[string]any{"containers": []any{map[string]any{
			"name": "app", "image": "registry.local/demo:1", "command": []string{"/app"}, "args": []string{"--serve"},
			"env": []any{map[string]any{"name": "PLAIN", "value": canary}},
		}}},
	}
}

func createPod(t testing.TB, k *kubeEnv, pod map[string]any) (int, map[string]any) {
	return k.do(t, "POST", "/api/v1/namespaces/"+appNS+"/pods", pod)
}

func injected(pod map[string]any) bool {
	spec := pod["spec"].(map[string]any)
	inits, _ := spec["initContainers"].([]any)
	if len(inits) == 0 || inits[0].(map[string]any)["name"] != "cloudtaser-init" {
		return false
	}
	c := spec["containers"].([]any)[0].(map[string]any)
	cmd, _ := c["command"].([]any)
	return len(cmd) > 0 && cmd[0] == "/cloudtaser/bin/cloudtaser-runtime"
}

// scrape reads /metrics over fresh TLS connections until every named replica answered once
// (the serving leaf's issuer names the replica), and returns the text per replica.
func scrape(t testing.TB, port int, names ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(names) && time.Now().Before(deadline) {
		tr := &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // identifies the replica by its chain
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(fmt.Sprintf("https://127.0.0.1:%d/metrics", port))
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		owner := resp.TLS.PeerCertificates[len(resp.TLS.PeerCertificates)-1].Subject.CommonName
		got[owner] = string(body)
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			t.Fatalf("replica %s never answered /metrics on the shared port", n)
		}
	}
	return got
}

func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, series+" "), &v)
			return v
		}
	}
	return -1
}

func TestInjectorAgainstARealAPIServer(t *testing.T) {
	k := startKube(t)
	port := freePorts(t, 1)[0]
	tokenFile := setupInjectorCluster(t, k, port)
	if got := bundle(t, k); len(got) != 0 {
		t.Fatalf("the MWC starts with a caBundle: %v", got)
	}
	// Without --reuse-port (the Service mode) a replica listens at once and stays unready
	// while its CA is not in a caBundle: here it is told to maintain another configuration,
	// which its RBAC (resourceNames: [cloudtaser-injector]) does not let it read. It reports
	// that, keeps trying, and stops cleanly on SIGTERM.
	replicaPod(t, k, "inj-lonely")
	lonelyPort := freePorts(t, 1)[0]
	lonely := startReplica(t, k, "inj-lonely", lonelyPort, tokenFile, "1h", "--webhook-configuration", "no-such-configuration")
	probe := func(path string) int {
		tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // probe only
		resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get(fmt.Sprintf("https://127.0.0.1:%d%s", lonelyPort, path))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	k.waitFor(t, "the lonely replica serving /healthz", 20*time.Second, func() bool { return probe("/healthz") == 200 })
	time.Sleep(time.Second)
	if code := probe("/readyz"); code != 503 {
		t.Errorf("readyz of a replica whose CA is in no bundle: %d, want 503", code)
	}
	if !strings.Contains(lonely.stderr.String(), "no-such-configuration") || !strings.Contains(lonely.stderr.String(), "HTTP 403") {
		t.Errorf("the missing configuration is not reported:\n%s", lonely.stderr.String())
	}
	_ = lonely.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-lonely.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the lonely replica did not stop on SIGTERM")
	}
	if lonely.code != 0 {
		t.Errorf("lonely replica: exit %d", lonely.code)
	}

	replicaPod(t, k, "inj-a")
	replicaPod(t, k, "inj-b")
	a := startReplica(t, k, "inj-a", port, tokenFile, "30s")
	b := startReplica(t, k, "inj-b", port, tokenFile, "30s")

	// 1. The caBundle is filled by the webhook, with both replicas' CAs.
	k.waitFor(t, "both CAs in the caBundle", 30*time.Second, func() bool {
		got := bundle(t, k)
		return count(got, "inj-a") >= 1 && count(got, "inj-b") >= 1 && !a.exited() && !b.exited()
	})
	k.waitFor(t, "both replicas listening", 20*time.Second, func() bool {
		return strings.Contains(a.stderr.String(), "serving on") && strings.Contains(b.stderr.String(), "serving on")
	})

	// 2. A labelled pod is mutated through the real API server; an unlabelled one is not
	// touched; a pod pointing at a vault that is not allowed is denied with the reason.
	code, pod := createPod(t, k, appPod(true, allowed))
	if code != 201 || !injected(pod) {
		t.Fatalf("labelled pod: HTTP %d, injected %v: %v", code, code == 201 && injected(pod), pod["message"])
	}
	code, pod = createPod(t, k, appPod(false, allowed))
	if code != 201 || injected(pod) {
		t.Fatalf("unlabelled pod: HTTP %d, injected %v", code, code == 201 && injected(pod))
	}
	code, pod = createPod(t, k, appPod(true, "https://evil.example:8200"))
	msg, _ := pod["message"].(string)
	if code != 403 || !strings.Contains(msg, "cloudtaser: ") || !strings.Contains(msg, "inject.cloudtaser.io") {
		t.Fatalf("pod with a vault address not allowed: HTTP %d %q", code, msg)
	}

	// A container without command: the image is looked up (here: a registry that refuses
	// the connection), the lookup fails, the pod is denied with reason image-unresolvable.
	noCmd := appPod(true, allowed)
	c0 := noCmd["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	delete(c0, "command")
	c0["image"] = fmt.Sprintf("127.0.0.1:%d/demo:1", freePorts(t, 1)[0])
	code, pod = createPod(t, k, noCmd)
	msg, _ = pod["message"].(string)
	if code != 403 || !strings.Contains(msg, "container app has no command") || !strings.Contains(msg, "--pin-entrypoints") {
		t.Fatalf("pod whose image cannot be looked up: HTTP %d %q", code, msg)
	}

	// Two replicas agreeing on the bundle do not rewrite it at every resync (2.5 s here).
	rv := k.must(t, "GET", mwcPath, nil)["metadata"].(map[string]any)["resourceVersion"]
	time.Sleep(6 * time.Second)
	if now := k.must(t, "GET", mwcPath, nil)["metadata"].(map[string]any)["resourceVersion"]; now != rv {
		t.Errorf("the MWC was rewritten with nothing to change (resourceVersion %v -> %v)", rv, now)
	}

	// 3. Rotation under steady pod creation (30 s validity: each replica rotates at 20 s),
	// a third replica joining on the shared port at 8 s and leaving with SIGTERM at 22 s:
	// not one admission fails, whichever replica answers.
	replicaPod(t, k, "inj-c")
	var c *replica
	cStopped := false
	start := time.Now()
	var created, failed int
	var failures []string
	for time.Since(start) < 30*time.Second {
		if c == nil && time.Since(start) > 8*time.Second {
			c = startReplica(t, k, "inj-c", port, tokenFile, "30s")
		}
		if c != nil && !cStopped && time.Since(start) > 22*time.Second {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			cStopped = true
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, pod := createPod(t, k, appPod(true, allowed))
				mu.Lock()
				defer mu.Unlock()
				if code == 201 && injected(pod) {
					created++
				} else {
					failed++
					failures = append(failures, fmt.Sprintf("HTTP %d %v", code, pod["message"]))
				}
			}()
		}
		wg.Wait()
		time.Sleep(100 * time.Millisecond)
	}
	if failed > 0 || created < 30 {
		t.Fatalf("during rotation: %d created, %d failed: %v", created, failed, failures[:min(len(failures), 5)])
	}
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatal("inj-c did not stop after SIGTERM")
	}
	if out := c.stderr.String(); c.code != 0 || !strings.Contains(out, "serving on") || !strings.Contains(out, "CA is out of the caBundle") {
		t.Fatalf("inj-c: exit %d\n%s", c.code, out)
	}
	if got := bundle(t, k); count(got, "inj-c") != 0 {
		t.Errorf("inj-c's CA left behind: %v", got)
	}
	for _, r := range []*replica{a, b} {
		if !strings.Contains(r.stderr.String(), "now serving the new certificate") {
			t.Errorf("%s did not rotate in 35 s:\n%s", r.name, r.stderr.String())
		}
	}
	t.Logf("rotation: %d pods created, none failed", created)

	// 4. /metrics of each replica (identified by its serving chain) move.
	m := scrape(t, port, "inj-a", "inj-b")
	var mutated, denied, unresolvable, lookups float64
	for name, text := range m {
		mine := metricValue(text, `cloudtaser_injector_admission_requests_total{result="mutated"}`)
		t.Logf("%s answered %v mutated admissions", name, mine)
		mutated += mine
		denied += metricValue(text, `cloudtaser_injector_admission_denials_total{reason="address-not-allowed"}`)
		unresolvable += metricValue(text, `cloudtaser_injector_admission_denials_total{reason="image-unresolvable"}`)
		lookups += metricValue(text, "cloudtaser_injector_registry_lookups_total")
		if metricValue(text, "cloudtaser_injector_cert_rotations_total") < 1 || metricValue(text, "cloudtaser_injector_ready") != 1 {
			t.Errorf("%s metrics: no rotation counted or not ready:\n%s", name, text)
		}
		if strings.Contains(text, canary) {
			t.Errorf("%s metrics hold a pod env value", name)
		}
	}
	var cMutated int
	_, summary, _ := strings.Cut(c.stderr.String(), "inject: answered ")
	if _, err := fmt.Sscanf(summary, "%d mutated", &cMutated); err != nil {
		t.Fatalf("inj-c's summary line: %v", err)
	}
	t.Logf("inj-c answered %d mutated admissions while it was there", cMutated)
	mutated += float64(cMutated)
	if mutated < float64(created+1) || denied != 1 || unresolvable != 1 || lookups < 1 {
		t.Errorf("metrics: %v mutated (want >= %d), %v denied address-not-allowed, %v image-unresolvable (want 1 each), %v registry lookups",
			mutated, created+1, denied, unresolvable, lookups)
	}

	// The ServiceAccount token is re-read per request: a new token in the file, the old one
	// invalidated; everything below (pod list, bundle writes) needs the new one.
	oldToken, _ := os.ReadFile(tokenFile)
	writeBoundToken(t, k, tokenFile, "injector-token-2")
	k.must(t, "DELETE", "/api/v1/namespaces/"+sysNS+"/secrets/injector-token-1", nil)
	k.waitFor(t, "the old token refused (the API server caches token reviews for a few seconds)", 60*time.Second, func() bool {
		return k.withToken(t, string(oldToken), mwcPath) == http.StatusUnauthorized
	})

	// 5. kill -9 one replica (its pod goes away): the other prunes its CA, admissions go on.
	_ = a.cmd.Process.Kill()
	<-a.done
	k.must(t, "DELETE", "/api/v1/namespaces/"+sysNS+"/pods/inj-a?gracePeriodSeconds=0", nil)
	k.waitFor(t, "inj-a's CA pruned by inj-b", 20*time.Second, func() bool {
		got := bundle(t, k)
		return count(got, "inj-a") == 0 && count(got, "inj-b") >= 1
	})
	for i := 0; i < 5; i++ {
		if code, pod := createPod(t, k, appPod(true, allowed)); code != 201 || !injected(pod) {
			t.Fatalf("after inj-a was killed: HTTP %d %v", code, pod["message"])
		}
	}

	// 6. SIGTERM: /readyz false first, then the listener closes, the CA leaves the bundle,
	// exit 0. With no webhook left an opted-in pod is refused, an ordinary pod is created.
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	k.waitFor(t, "readyz false while draining", 2*time.Second, func() bool {
		tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // probe only
		resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatal("inj-b did not stop within 30 s of SIGTERM")
	}
	if b.code != 0 || !strings.Contains(b.stderr.String(), "CA is out of the caBundle") {
		t.Fatalf("inj-b: exit %d\n%s", b.code, b.stderr.String())
	}
	if got := bundle(t, k); len(got) != 0 {
		t.Errorf("caBundle after the last replica stopped: %v", got)
	}
	if code, _ := createPod(t, k, appPod(true, allowed)); code/100 == 2 {
		t.Errorf("an opted-in pod was created with no webhook running (HTTP %d)", code)
	}
	if code, _ := createPod(t, k, appPod(false, allowed)); code != 201 {
		t.Errorf("an ordinary pod was refused with no webhook running (HTTP %d)", code)
	}

	// Nothing of a pod's env or of the token reached the logs.
	token, _ := os.ReadFile(tokenFile)
	for _, r := range []*replica{a, b} {
		out := r.stderr.String()
		if strings.Contains(out, canary) || strings.Contains(out, strings.TrimSpace(string(token))) || strings.Contains(out, "eyJ") {
			t.Errorf("%s logged a pod env value or its token", r.name)
		}
	}
}
