package wrap

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/vault"
)

// syncBuf is a goroutine-safe stderr for the wrapper under test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// residentWrapper runs the resident loop with already-fetched secrets (no vault involved:
// these tests are about processes and signals; the vault side is in e2e_test.go).
func residentWrapper(t *testing.T, helper string, extra ...string) (*Wrapper, *syncBuf) {
	t.Helper()
	c, err := vault.New(vault.Options{Address: "http://127.0.0.1:1", RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	buf := &syncBuf{}
	env := append([]string{"CT_HELPER=" + helper, "PATH=/usr/bin:/bin", "CLOUDTASER_SECRET_PATHS=secret/data/x", "CLOUDTASER_VAULT_TOKEN=s.never"}, extra...)
	return &Wrapper{
		Cfg:     contract.Config{Mode: contract.ModeResident, GracePeriod: 2 * time.Second, StartTimeout: 5 * time.Second},
		Argv:    []string{self},
		Environ: env,
		Stderr:  buf,
		Started: time.Now(),
		client:  c,
	}, buf
}

func runResident(w *Wrapper, vars ...contract.EnvVar) <-chan int {
	done := make(chan int, 1)
	go func() {
		err := w.resident(&fetched{vars: vars, versions: map[string]int64{}})
		if err == nil {
			done <- 0
			return
		}
		done <- err.(*Failure).Code
	}()
	return done
}

func waitFor(t *testing.T, path, text string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), text) {
			return string(b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%q never appeared in %s: %q", text, path, b)
	return ""
}

func childPid(t *testing.T, out string) int {
	var pid int
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "ready "); ok {
			for _, c := range rest {
				pid = pid*10 + int(c-'0')
			}
		}
	}
	if pid == 0 {
		t.Fatal("no pid")
	}
	return pid
}

func TestResidentExitsWithTheAppsCode(t *testing.T) {
	for _, code := range []int{0, 3, 77} {
		w, _ := residentWrapper(t, "exit", "CT_CODE="+strconv.Itoa(code))
		select {
		case got := <-runResident(w):
			if got != code {
				t.Fatalf("exit %d, want %d", got, code)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("wrapper did not exit")
		}
	}
}

func TestResidentForwardsTheListedSignalsAndExitsWithTheAppsCode(t *testing.T) {
	out := filepath.Join(t.TempDir(), "signals")
	w, _ := residentWrapper(t, "trap", "CT_OUT="+out)
	done := runResident(w)
	waitFor(t, out, "ready")
	for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGINT, syscall.SIGQUIT} {
		_ = syscall.Kill(os.Getpid(), s) // the wrapper is this process
		waitFor(t, out, s.String())
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case got := <-done:
		if got != 42 {
			t.Fatalf("exit %d, want the app's 42", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wrapper did not exit")
	}
	got := waitFor(t, out, "terminated")
	if strings.Contains(got, "urgent") || strings.Contains(got, "child exited") {
		t.Fatalf("forwarded a signal that is not on the list: %q", got)
	}
}

func TestResidentReportsDeathBySignalAs128PlusSignal(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ready")
	w, _ := residentWrapper(t, "sleep", "CT_OUT="+out)
	done := runResident(w)
	pid := childPid(t, waitFor(t, out, "ready"))
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if got := <-done; got != 128+9 {
		t.Fatalf("exit %d, want 137", got)
	}
}

func TestResidentReapsOrphans(t *testing.T) {
	w, _ := residentWrapper(t, "orphans")
	if got := <-runResident(w); got != 5 {
		t.Fatalf("exit %d, want 5", got)
	}
	// The grandchildren were re-parented to us (child subreaper) and reaped by the loop:
	// no zombie is left among our children.
	entries, _ := os.ReadDir("/proc")
	me := os.Getpid()
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == itoa(me) && fields[0] == "Z" {
			t.Fatalf("zombie child %s left", e.Name())
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestResidentChildEnvHasSecretsAndNoWrapperVariables(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	w, _ := residentWrapper(t, "env", "CT_OUT="+out, "KEEP=1")
	if got := <-runResident(w, contract.EnvVar{Name: "DB_PASSWORD", Value: "CANARY-resident"}); got != 0 {
		t.Fatalf("exit %d", got)
	}
	env := contract.EnvMap(strings.Split(strings.TrimSpace(waitFor(t, out, "KEEP")), "\n"))
	if env["DB_PASSWORD"] != "CANARY-resident" || env["KEEP"] != "1" {
		t.Fatalf("env %v", env)
	}
	for k := range env {
		if strings.HasPrefix(k, "CLOUDTASER_") || k == "VAULT_TOKEN" {
			t.Fatalf("%s reached the app", k)
		}
	}
}

func TestCommandNotFoundAndNotExecutable(t *testing.T) {
	w, _ := residentWrapper(t, "exit")
	w.Argv = []string{"no-such-command-xyz"}
	if err := w.resident(&fetched{versions: map[string]int64{}}); err == nil || err.(*Failure).Code != ExitNotFound {
		t.Fatalf("want 127, got %v", err)
	}
	plain := filepath.Join(t.TempDir(), "plain")
	_ = os.WriteFile(plain, []byte("x"), 0o644)
	w.Argv = []string{plain}
	if err := w.resident(&fetched{versions: map[string]int64{}}); err == nil || err.(*Failure).Code != ExitNotExecutable {
		t.Fatalf("want 126, got %v", err)
	}
}

func TestEnvValueConversionFailsClosedWithoutTheValue(t *testing.T) {
	cases := map[string]any{"s": "s3cr3t", "n": jsonNumber("5432"), "t": true, "o": map[string]any{"b": jsonNumber("1"), "a": []any{"<x>"}}}
	want := map[string]string{"s": "s3cr3t", "n": "5432", "t": "true", "o": `{"a":["<x>"],"b":1}`}
	for k, v := range cases {
		got, err := envValue(v, "field 'x' of secret/data/p")
		if err != nil || got != want[k] {
			t.Fatalf("%s: %q %v", k, got, err)
		}
	}
	if _, err := envValue(nil, "field 'x' of secret/data/p"); err == nil || !strings.Contains(err.Error(), "null") {
		t.Fatalf("null accepted: %v", err)
	}
	_, err := envValue("top\x00secret", "field 'x' of secret/data/p")
	if err == nil || strings.Contains(err.Error(), "top") || !strings.Contains(err.Error(), "secret/data/p") {
		t.Fatalf("NUL: %v", err)
	}
}

func TestJWTIsReadAndChecked(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	_ = os.WriteFile(p, []byte("eyJhbGciOi.eyJzdWIiOi.c2ln\n"), 0o600)
	if tok, err := readJWT(p); err != nil || tok != "eyJhbGciOi.eyJzdWIiOi.c2ln" {
		t.Fatalf("%q %v", tok, err)
	}
	_ = os.WriteFile(p, nil, 0o600)
	if _, err := readJWT(p); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty: %v", err)
	}
	if _, err := readJWT(filepath.Join(dir, "missing")); err == nil || err.(*Failure).Code != ExitConfig {
		t.Fatalf("missing: %v", err)
	}
	_ = os.WriteFile(p, bytes.Repeat([]byte("a"), maxTokenFile+1), 0o600)
	if _, err := readJWT(p); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("large: %v", err)
	}
}
