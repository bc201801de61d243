package vault

// "No proxy, ever" (package doc; issue 28, finding 7): the app's HTTPS_PROXY/HTTP_PROXY/
// ALL_PROXY, which the wrapper inherits, must never see the login. A real CONNECT proxy
// records every connection; the vault is a TLS server on a non-loopback address of this
// machine (Go never proxies loopback, so a loopback vault could not show the hole).

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// connectProxy is a real HTTP proxy (CONNECT tunnels and plain forwarding) that records the
// target of every connection it gets.
type connectProxy struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []string
}

func startProxy(t *testing.T) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	target := "?"
	if err == nil {
		target = req.Method + " " + req.Host
	}
	p.mu.Lock()
	p.seen = append(p.seen, target)
	p.mu.Unlock()
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go io.Copy(up, br)
	io.Copy(c, up)
}

func (p *connectProxy) connections() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// nonLoopbackIP is an address of this machine that Go's proxy rules would proxy.
func nonLoopbackIP(t *testing.T) net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address: the proxy test cannot show anything")
	return nil
}

// tlsVault is a TLS vault on ip whose certificate is in the returned CA file.
func tlsVault(t *testing.T, ip net.IP, h http.Handler) (*httptest.Server, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vault"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{ip}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, caFile
}

func TestAProxyInTheEnvironmentIsNeverUsed(t *testing.T) {
	proxy := startProxy(t)
	for _, v := range []string{"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"} {
		t.Setenv(v, "http://"+proxy.ln.Addr().String())
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	var logins sync.Map
	srv, caFile := tlsVault(t, nonLoopbackIP(t), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logins.Store(r.URL.Path, true)
		w.Write([]byte(`{"auth":{"client_token":"s.new","lease_duration":60,"renewable":true}}`))
	}))

	// So the check can fail: a client that honours the environment goes through the proxy.
	pem, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	std := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := std.Get(srv.URL + "/v1/sys/health")
	if err != nil {
		t.Fatalf("the control request through the proxy failed: %v", err)
	}
	resp.Body.Close()
	if got := proxy.connections(); len(got) != 1 || got[0] != "CONNECT "+srv.Listener.Addr().String() {
		t.Fatalf("the proxy did not record the control connection: %v", got)
	}

	c, err := New(Options{Address: srv.URL, CACert: caFile, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LoginKubernetes(context.Background(), "kubernetes", "r", "JWT-CANARY"); err != nil {
		t.Fatalf("login: %v", err)
	}
	if _, ok := logins.Load("/v1/auth/kubernetes/login"); !ok {
		t.Fatal("the login did not reach the vault")
	}
	if got := proxy.connections(); len(got) != 1 {
		t.Fatalf("the vault client went through the proxy: %v", got)
	}
}
