package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A server on a real TLS listener with a small mutator standing in for runtime/internal/inject
// (the real one is wired in cmd/cloudtaser-runtime and proven against kube-apiserver there).
type testServer struct {
	srv    *Server
	url    string
	client *http.Client
	logs   *strings.Builder
	mu     *sync.Mutex
	done   chan error
}

func startServer(t testing.TB, mutate Mutator) *testServer {
	t.Helper()
	certs := &CertManager{Self: Identity{"ns", "pod"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Validity: time.Hour}
	if err := certs.Init(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	logs := &strings.Builder{}
	srv := New(Options{Mutate: mutate, Certs: certs, Logf: func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(logs, f+"\n", a...)
	}})
	ln, err := Listen(context.Background(), "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, url: "https://" + ln.Addr().String(), logs: logs, mu: &mu, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ln) }()
	pool := x509.NewCertPool()
	pool.AddCert(certs.ServingCA())
	ts.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return ts
}

func (ts *testServer) log() string { ts.mu.Lock(); defer ts.mu.Unlock(); return ts.logs.String() }

func (ts *testServer) post(t testing.TB, query string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := ts.client.Post(ts.url+"/mutate"+query, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

func reviewBody(uid, pod string) []byte {
	return []byte(fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":%q,"operation":"CREATE","object":{"metadata":{"name":%q},"spec":{"containers":[{"name":"app","env":[{"name":"X","value":"CANARY-ENV-VALUE"}]}]}}}}`, uid, pod))
}

func canaryMutator(ctx context.Context, req *Request) Decision {
	var object struct {
		Metadata struct{ Name string } `json:"metadata"`
	}
	_ = json.Unmarshal(req.Object, &object)
	switch object.Metadata.Name {
	case "deny":
		return Decision{Reason: "env-conflict", Message: "cloudtaser: container app sets X. Remove it."}
	case "panic":
		panic("CANARY-PANIC-VALUE")
	case "deadline":
		dl, ok := ctx.Deadline()
		return Decision{Allowed: true, Warnings: []string{fmt.Sprint(ok, time.Until(dl).Round(time.Second))}}
	case "same":
		return Decision{Allowed: true}
	}
	return Decision{Allowed: true, Patch: []byte(`[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]`)}
}

func TestMutateAnswersAdmissionReviews(t *testing.T) {
	ts := startServer(t, canaryMutator)

	code, out := ts.post(t, "?timeout=10s", reviewBody("u-1", "ok"))
	resp, _ := out["response"].(map[string]any)
	if code != 200 || out["kind"] != "AdmissionReview" || out["apiVersion"] != "admission.k8s.io/v1" || resp["uid"] != "u-1" || resp["allowed"] != true || resp["patchType"] != "JSONPatch" {
		t.Fatalf("mutated answer wrong: %d %v", code, out)
	}
	if resp["patch"] != "W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2Fubm90YXRpb25zIiwidmFsdWUiOnsiYSI6ImIifX1d" {
		t.Errorf("patch not base64 of the mutator's: %v", resp["patch"])
	}

	_, out = ts.post(t, "", reviewBody("u-2", "deny"))
	resp = out["response"].(map[string]any)
	st, _ := resp["status"].(map[string]any)
	if resp["allowed"] != false || st["code"] != float64(403) || st["reason"] != "env-conflict" || !strings.HasPrefix(st["message"].(string), "cloudtaser: ") {
		t.Errorf("denial wrong: %v", out)
	}

	_, out = ts.post(t, "", reviewBody("u-3", "panic"))
	resp = out["response"].(map[string]any)
	st, _ = resp["status"].(map[string]any)
	if resp["allowed"] != false || st["reason"] != "internal" {
		t.Errorf("a panic did not fail closed: %v", out)
	}

	_, out = ts.post(t, "?timeout=5s", reviewBody("u-4", "deadline"))
	resp = out["response"].(map[string]any)
	if w := fmt.Sprint(resp["warnings"]); w != "[true 4s]" {
		t.Errorf("?timeout=5s gave the mutator %s, want a deadline 4s away", w)
	}

	_, out = ts.post(t, "", reviewBody("u-5", "same"))
	resp = out["response"].(map[string]any)
	if resp["allowed"] != true || resp["patch"] != nil || resp["patchType"] != nil {
		t.Errorf("empty decision carried a patch: %v", out)
	}

	// A request the server cannot read as a Request is answered, with its uid, as bad-request.
	_, out = ts.post(t, "", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-6","kind":"Pod"}}`))
	resp = out["response"].(map[string]any)
	st, _ = resp["status"].(map[string]any)
	if resp["uid"] != "u-6" || resp["allowed"] != false || st["code"] != float64(400) || st["reason"] != ReasonBadRequest {
		t.Errorf("an unreadable request was not denied as bad-request: %v", out)
	}

	for name, body := range map[string][]byte{
		"not json":      []byte("{"),
		"wrong version": []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`),
		"no request":    []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`),
		"no uid":        []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`),
	} {
		if code, _ := ts.post(t, "", body); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", name, code)
		}
	}
	big := append([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","pad":"`), bytes.Repeat([]byte("a"), MaxBody)...)
	big = append(big, []byte(`"}}`)...)
	if code, _ := ts.post(t, "", big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: HTTP %d, want 413", code)
	}
	resp2, err := ts.client.Get(ts.url + "/mutate")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /mutate: %d", resp2.StatusCode)
	}
	r3, _ := http.NewRequest("POST", ts.url+"/mutate", bytes.NewReader(reviewBody("u", "ok")))
	r3.Header.Set("Content-Type", "text/plain")
	resp3, err := ts.client.Do(r3)
	if err != nil {
		t.Fatal(err)
	}
	resp3.Body.Close()
	if resp3.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: %d", resp3.StatusCode)
	}

	metrics := ts.get(t, "/metrics")
	for _, want := range []string{
		`cloudtaser_injector_admission_requests_total{result="mutated"} 1`,
		`cloudtaser_injector_admission_requests_total{result="denied"} 3`,
		`cloudtaser_injector_admission_requests_total{result="unchanged"} 2`,
		`cloudtaser_injector_admission_requests_total{result="invalid"} 7`,
		`cloudtaser_injector_admission_denials_total{reason="env-conflict"} 1`,
		`cloudtaser_injector_admission_denials_total{reason="internal"} 1`,
		`cloudtaser_injector_admission_denials_total{reason="bad-request"} 1`,
		`cloudtaser_injector_admission_duration_seconds_count 13`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
	logs := ts.log()
	for _, canary := range []string{"CANARY-ENV-VALUE", "CANARY-PANIC-VALUE"} {
		if strings.Contains(logs, canary) || strings.Contains(metrics, canary) {
			t.Errorf("%s leaked into the log or metrics:\n%s", canary, logs)
		}
	}
	if !strings.Contains(logs, "denied (env-conflict) request u-2") {
		t.Errorf("denial not logged:\n%s", logs)
	}
}

func (ts *testServer) get(t *testing.T, path string) string {
	t.Helper()
	code, body := ts.getCode(t, path)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return body
}

func (ts *testServer) getCode(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := ts.client.Get(ts.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyzNeedsThePublishedCAAndTurnsFalseOnDrain(t *testing.T) {
	ts := startServer(t, canaryMutator)
	if code, body := ts.getCode(t, "/readyz"); code != 503 || !strings.Contains(body, "caBundle") {
		t.Errorf("readyz before the CA is published: %d %q", code, body)
	}
	ts.srv.opt.Certs.ready.Store(true)
	if code, _ := ts.getCode(t, "/readyz"); code != 200 {
		t.Errorf("readyz once published: %d", code)
	}
	ts.srv.Drain()
	if code, body := ts.getCode(t, "/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("readyz while draining: %d %q", code, body)
	}
	if code, _ := ts.getCode(t, "/healthz"); code != 200 {
		t.Errorf("healthz while draining: %d", code)
	}
}

func TestShutdownFinishesInFlightRequests(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	ts := startServer(t, func(ctx context.Context, req *Request) Decision {
		close(entered)
		<-release
		return Decision{Allowed: true}
	})
	got := make(chan int, 1)
	go func() {
		code, _ := ts.post(t, "", reviewBody("slow", "x"))
		got <- code
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	time.Sleep(200 * time.Millisecond)
	// Not accepting any more.
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(ts.url, "https://"), time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections during shutdown")
	}
	select {
	case <-shut:
		t.Fatal("Shutdown returned with a request in flight")
	default:
	}
	close(release)
	if code := <-got; code != 200 {
		t.Errorf("in-flight request got %d", code)
	}
	if err := <-shut; err != nil {
		t.Error(err)
	}
	if err := <-ts.done; err != nil {
		t.Errorf("Serve after a graceful shutdown: %v", err)
	}
}

func TestIdleTimeoutOutlastsTheAPIServersKeepAlive(t *testing.T) {
	ts := startServer(t, canaryMutator)
	if ts.srv.http.IdleTimeout <= 90*time.Second {
		t.Errorf("IdleTimeout %s is not above the API server's 90 s", ts.srv.http.IdleTimeout)
	}
	if ts.srv.http.ReadHeaderTimeout == 0 || ts.srv.http.WriteTimeout <= 30*time.Second {
		t.Error("header or write timeouts unset or below the largest admission timeout")
	}
}
