package vault

// Hostile-server cases a real OpenBao cannot be driven into (the only use of a hand-made
// server in the runtime's tests): oversized bodies, cross-origin redirects, servers that
// never answer, endless 503s.

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func client(t *testing.T, addr string) *Client {
	c, err := New(Options{Address: addr, RequestTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("s.TOKEN-CANARY")
	return c
}

func TestBodyOverTheCapIsRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"data":{"data":{"x":"`))
		chunk := []byte(strings.Repeat("A", 1<<20))
		for i := 0; i < MaxBody>>20+2; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c, _ := New(Options{Address: srv.URL, RequestTimeout: 20 * time.Second})
	_, err := c.ReadKV2(context.Background(), "secret", "x")
	if !errors.Is(err, errTooLarge) {
		t.Fatalf("want the size cap, got %v", err)
	}
}

func TestCrossOriginRedirectIsRefusedAndTheTokenNotSent(t *testing.T) {
	var leaked atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") != "" || r.ContentLength > 0 {
			leaked.Store(true)
		}
		w.Write([]byte(`{"auth":{"client_token":"x"}}`))
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := client(t, srv.URL)
	_, err := c.LoginKubernetes(context.Background(), "kubernetes", "r", "JWT-CANARY")
	if err == nil || !strings.Contains(err.Error(), "another origin") {
		t.Fatalf("want a refused redirect, got %v", err)
	}
	if leaked.Load() {
		t.Fatal("the credential reached the other origin")
	}
	if strings.Contains(err.Error(), "CANARY") {
		t.Fatal("credential in the message")
	}
}

func TestSameOriginRedirectIsFollowed(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/auth/kubernetes/login", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/v1/auth/k2/login", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/v1/auth/k2/login", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"auth":{"client_token":"s.new","lease_duration":60,"renewable":true}}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	l, err := client(t, srv.URL).LoginKubernetes(context.Background(), "kubernetes", "r", "jwt")
	if err != nil || l.TTL != time.Minute || !l.Renewable {
		t.Fatalf("%v %v", l, err)
	}
}

func TestASilentServerHitsTheDeadline(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := client(t, srv.URL).ReadKV2(ctx, "secret", "x")
	var u *UnreachableError
	if !errors.As(err, &u) {
		t.Fatalf("want unreachable, got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("deadline not honoured: %s", d)
	}
}

func TestRetriesUntilTheServerIsReady(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 3 {
			w.WriteHeader(503)
			w.Write([]byte(`{"errors":["Vault is sealed"]}`))
			return
		}
		w.Write([]byte(`{"data":{"data":{"p":"v"},"metadata":{"version":3}}}`))
	}))
	defer srv.Close()
	s, err := client(t, srv.URL).ReadKV2(context.Background(), "secret", "x")
	if err != nil || s.Version != 3 || n.Load() != 3 {
		t.Fatalf("%v %v %d", s, err, n.Load())
	}
}

func TestDenialIsFinalAndNamesNoCredential(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(403)
		w.Write([]byte("{\"errors\":[\"permission denied\\n\\u001b[31m\"]}"))
	}))
	defer srv.Close()
	_, err := client(t, srv.URL).ReadKV2(context.Background(), "secret", "x")
	var verr *Error
	if !errors.As(err, &verr) || verr.Status != 403 || n.Load() != 1 {
		t.Fatalf("%v (%d requests)", err, n.Load())
	}
	if strings.ContainsAny(err.Error(), "\n\x1b") || strings.Contains(err.Error(), "CANARY") {
		t.Fatalf("unsafe message %q", err)
	}
}
