package main

// A real control plane for the injector's end-to-end tests: etcd and kube-apiserver built
// from source by the test bed (tests/testenv/build-k8s.sh; docs/testing.md), started here on
// loopback with a PKI made by the test. No controllers, no nodes: pods stay Pending, which
// is all admission needs. The processes die with the test binary (PR_SET_PDEATHSIG).

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// k8sBinDir follows tests/testenv/binaries.py: CLOUDTASER_TESTENV_BIN > KUBEBUILDER_ASSETS >
// ~/.cache/cloudtaser-testenv/v<version>/bin.
func k8sBinDir() string {
	for _, v := range []string{"CLOUDTASER_TESTENV_BIN", "KUBEBUILDER_ASSETS"} {
		if d := os.Getenv(v); d != "" {
			return d
		}
	}
	version := strings.TrimPrefix(os.Getenv("CLOUDTASER_K8S_VERSION"), "v")
	if version == "" {
		version = "1.36.3"
	}
	root := os.Getenv("CLOUDTASER_TESTENV_CACHE")
	if root == "" {
		home, _ := os.UserHomeDir()
		root = filepath.Join(home, ".cache", "cloudtaser-testenv")
	}
	return filepath.Join(root, "v"+version, "bin")
}

type kubeEnv struct {
	dir    string
	server string // https://127.0.0.1:PORT
	port   int
	caFile string
	caPEM  []byte
	admin  *http.Client
	logs   map[string]string
	pids   map[string]int // process of each spawned component, by name
}

type pkiCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func issue(t testing.TB, parent *pkiCert, tmpl *x509.Certificate, dir, name string) *pkiCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = sn
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
	kder, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, filepath.Join(dir, name+".key"), "EC PRIVATE KEY", kder)
	return &pkiCert{cert: c, key: key}
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// startKube starts etcd and kube-apiserver (RBAC on) or skips (fails under CI) when the
// test-bed binaries are missing. The calling goroutine's OS thread is locked so that the
// death signal of the children stays tied to it.
func startKube(t testing.TB) *kubeEnv {
	t.Helper()
	bin := k8sBinDir()
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if st, err := os.Stat(filepath.Join(bin, b)); err != nil || st.Mode()&0o111 == 0 {
			msg := fmt.Sprintf("%s missing in %s: run `nox -s testenv` (or set CLOUDTASER_TESTENV_BIN)", b, bin)
			if os.Getenv("CI") != "" {
				t.Fatal("CI: " + msg)
			}
			t.Skip(msg)
		}
	}
	runtime.LockOSThread()
	dir := t.TempDir()
	ca := issue(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "ct-test-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, dir, "ca")
	issue(t, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"}, DNSNames: []string{"localhost", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}, dir, "serving")
	admin := issue(t, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, dir, "admin")
	saKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kder, _ := x509.MarshalECPrivateKey(saKey)
	writePEM(t, filepath.Join(dir, "sa.key"), "EC PRIVATE KEY", kder)
	pub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	writePEM(t, filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub)

	ports := freePorts(t, 3)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	k := &kubeEnv{dir: dir, port: ports[2], server: fmt.Sprintf("https://127.0.0.1:%d", ports[2]), caFile: filepath.Join(dir, "ca.crt"), logs: map[string]string{}, pids: map[string]int{}}
	k.caPEM, _ = os.ReadFile(k.caFile)
	k.spawn(t, "etcd", filepath.Join(bin, "etcd"), "--name=ct", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL, "--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL, "--initial-cluster=ct="+peerURL, "--listen-metrics-urls=",
		"--unsafe-no-fsync=true", "--log-level=warn")
	k.waitFor(t, "etcd", 30*time.Second, func() bool {
		resp, err := http.Get(etcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	k.spawn(t, "kube-apiserver", filepath.Join(bin, "kube-apiserver"), "--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", k.port),
		"--tls-cert-file="+filepath.Join(dir, "serving.crt"), "--tls-private-key-file="+filepath.Join(dir, "serving.key"),
		"--cert-dir="+filepath.Join(dir, "apiserver-certs"), "--client-ca-file="+k.caFile, "--authorization-mode=Node,RBAC",
		"--service-account-issuer="+k.server, "--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"), "--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none", "--profiling="+strconv.FormatBool(os.Getenv("CLOUDTASER_BENCH_PROFILE") != ""), "--v=1")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	k.admin = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{admin.cert.Raw}, PrivateKey: admin.key}}}}}
	k.waitFor(t, "kube-apiserver /readyz", 120*time.Second, func() bool {
		resp, err := k.admin.Get(k.server + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return k
}

func (k *kubeEnv) spawn(t testing.TB, name, path string, args ...string) {
	t.Helper()
	logPath := filepath.Join(k.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k.logs[name] = logPath
	k.pids[name] = cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = cmd.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
}

func (k *kubeEnv) tail(name string) string {
	b, _ := os.ReadFile(k.logs[name])
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func (k *kubeEnv) waitFor(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			var b strings.Builder
			for n := range k.logs {
				fmt.Fprintf(&b, "--- %s log:\n%s\n", n, k.tail(n))
			}
			t.Fatalf("%s not ready after %s\n%s", what, d, b.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// do sends a request as admin; body may be nil or any JSON-encodable value.
func (k *kubeEnv) do(t testing.TB, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, k.server+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.admin.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

// must is do that fails the test on a non-2xx answer.
func (k *kubeEnv) must(t testing.TB, method, path string, body any) map[string]any {
	t.Helper()
	code, out := k.do(t, method, path, body)
	if code/100 != 2 {
		t.Fatalf("%s %s: HTTP %d %v", method, path, code, out["message"])
	}
	return out
}

// withToken GETs path with a bearer token (no client certificate) and returns the status.
func (k *kubeEnv) withToken(t testing.TB, token, path string) int {
	t.Helper()
	tr := k.admin.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = nil
	req, _ := http.NewRequest("GET", k.server+path, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
