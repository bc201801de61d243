package kubeapi

// Hostile answers a real API server does not give (the client's normal use is proven against
// a real kube-apiserver in cmd/cloudtaser-runtime/inject_e2e_test.go).

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const canaryToken = "CANARY-SA-TOKEN-91c2"

func hostile(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	tok := filepath.Join(dir, "token")
	_ = os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	_ = os.WriteFile(tok, []byte(canaryToken+"\n"), 0o600)
	u, _ := url.Parse(srv.URL)
	host, port, _ := net.SplitHostPort(u.Host)
	c, err := New(Config{Host: host, Port: port, TokenFile: tok, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOversizedAnswerIsRefused(t *testing.T) {
	c := hostile(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"items":"`))
		w.Write([]byte(strings.Repeat("a", MaxBody+10)))
	})
	var out map[string]any
	err := c.Get(context.Background(), "/api/v1/pods", &out)
	if err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("oversized answer: %v", err)
	}
}

func TestErrorsCarryStatusNeverTheToken(t *testing.T) {
	c := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+canaryToken {
			t.Errorf("token not sent: %q", r.Header.Get("Authorization"))
		}
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"kind":"Status","reason":"Conflict","message":"the object has been modified"}`))
	})
	err := c.Patch(context.Background(), "/apis/x/v1/y?dryRun=All", JSONPatch, "cloudtaser-injector", []byte("[]"), nil)
	if !IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "the object has been modified") {
		t.Fatalf("409: %v", err)
	}
	if strings.Contains(err.Error(), canaryToken) || strings.Contains(err.Error(), "dryRun") {
		t.Errorf("error shows the token or the query: %v", err)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var hits int
	c := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.Redirect(w, r, "https://elsewhere.example/steal", http.StatusFound)
	})
	err := c.Get(context.Background(), "/api", nil)
	if !IsStatus(err, http.StatusFound) || hits != 1 {
		t.Fatalf("redirect: %v (hits %d)", err, hits)
	}
}

func TestBadConfigurationIsOneClearError(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	for name, cfg := range map[string]Config{
		"no host":  {Port: "443", TokenFile: empty, CAFile: empty},
		"bad port": {Host: "10.0.0.1", Port: "4:43", TokenFile: empty, CAFile: empty},
		"no CA":    {Host: "10.0.0.1", Port: "443", TokenFile: empty, CAFile: filepath.Join(dir, "missing")},
		"empty CA": {Host: "10.0.0.1", Port: "443", TokenFile: empty, CAFile: empty},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
