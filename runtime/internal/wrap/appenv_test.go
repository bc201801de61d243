package wrap

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloudtaser/runtime/internal/contract"
)

func uniqueName(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "CT_TEST_" + strings.ToUpper(hex.EncodeToString(b))
}

// startApp starts the test binary as a sleeping "app" with env; it is killed at the end.
func startApp(t *testing.T, env ...string) *exec.Cmd {
	t.Helper()
	self, _ := os.Executable()
	out := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(self)
	cmd.Env = append([]string{"CT_HELPER=sleep", "CT_OUT=" + out, "PATH=/usr/bin:/bin"}, env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, out, "ready")
	return cmd
}

func TestAppEnvironIsTheOldestProcessHoldingTheVariables(t *testing.T) {
	name := uniqueName(t)
	if _, err := AppEnviron("/proc", os.Getpid(), []string{name}); !errors.Is(err, ErrNoApp) {
		t.Fatalf("no app yet: %v", err)
	}
	startApp(t, name+"=CANARY-app", "OTHER=1")
	time.Sleep(20 * time.Millisecond) // a later start time, in clock ticks
	startApp(t, name+"=CANARY-later-shell")
	env, err := AppEnviron("/proc", os.Getpid(), []string{name})
	if err != nil {
		t.Fatal(err)
	}
	if got := contract.EnvMap(env); got[name] != "CANARY-app" || got["OTHER"] != "1" {
		t.Fatalf("env of the wrong process: %v", got[name])
	}
	if _, err := AppEnviron("/proc", os.Getpid(), []string{name, uniqueName(t)}); !errors.Is(err, ErrNoApp) {
		t.Fatalf("a process without every variable was taken: %v", err)
	}
}

func runExec(t *testing.T, name string, timeout string, script string) (string, int) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, "sh", "-c", script)
	cmd.Env = []string{"CT_HELPER=runexec", "PATH=/usr/bin:/bin", "CLOUDTASER_SECRET_PATHS=secret/data/x",
		"CLOUDTASER_ENV_MAP=f=" + name, "CLOUDTASER_START_TIMEOUT=" + timeout, "SPEC_ONLY=1"}
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

func TestExecRunsTheCommandWithTheAppsEnvironment(t *testing.T) {
	name := uniqueName(t)
	startApp(t, name+"=CANARY-v1")
	out, code := runExec(t, name, "5s", `test "$`+name+`" = CANARY-v1 && test -z "$SPEC_ONLY" && test -z "$CLOUDTASER_ENV_MAP" && echo probe-ok`)
	if code != 0 || strings.TrimSpace(out) != "probe-ok" {
		t.Fatalf("exit %d: %q", code, out)
	}
	out, code = runExec(t, name, "5s", "exit 7")
	if code != 7 {
		t.Fatalf("the command's own exit code: %d %q", code, out)
	}
}

func TestExecFailsClosedWithoutTheApp(t *testing.T) {
	name := uniqueName(t)
	start := time.Now()
	out, code := runExec(t, name, "400ms", "echo RAN")
	if code != ExitMissing || strings.Contains(out, "RAN") {
		t.Fatalf("exit %d: %q", code, out)
	}
	if !strings.Contains(out, "not running sh without its secrets") || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("message %q after %s", out, time.Since(start))
	}
	// it waits for an app that starts late (a postStart hook runs while the wrapper logs in)
	go func() { time.Sleep(300 * time.Millisecond); startApp(t, name+"=CANARY-late") }()
	out, code = runExec(t, name, "5s", `echo "got-$`+name+`"`)
	if code != 0 || strings.TrimSpace(out) != "got-CANARY-late" {
		t.Fatalf("exit %d: %q", code, out)
	}
}

func TestResidentExpandsThePlanWithTheVaultsValues(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	w, _ := residentWrapper(t, "argv-env", "CT_OUT="+out, "KEEP=1",
		"DATABASE_URL=postgres://$(DB_USER):$(DB_PASSWORD)@db/app", "PLAIN=$(DB_PASSWORD)")
	self := w.Argv[0]
	w.Argv = []string{self, "--requirepass", "$(DB_PASSWORD)", "$(DATABASE_URL)", "$$(DB_PASSWORD)"}
	w.Expand = contract.ExpandPlan{Args: []int{2, 3, 4}, Env: []contract.ExpandEntry{{Name: "DATABASE_URL"}}}
	got := &fetched{vars: []contract.EnvVar{{Name: "DB_USER", Value: "app"}, {Name: "DB_PASSWORD", Value: "CANARY-pw"}}, versions: map[string]int64{}}
	if err := w.expand(got); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		if err := w.resident(got); err != nil {
			done <- err.(*Failure).Code
			return
		}
		done <- 0
	}()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(waitFor(t, out, "KEEP")), "\n")
	want := []string{"ARG=--requirepass", "ARG=CANARY-pw", "ARG=postgres://app:CANARY-pw@db/app", "ARG=$(DB_PASSWORD)"}
	if strings.Join(lines[:4], "|") != strings.Join(want, "|") {
		t.Fatalf("argv %q", lines[:4])
	}
	env := contract.EnvMap(lines[4:])
	if env["DATABASE_URL"] != "postgres://app:CANARY-pw@db/app" || env["PLAIN"] != "$(DB_PASSWORD)" || env["KEEP"] != "1" {
		t.Fatalf("env DATABASE_URL=%q PLAIN=%q", env["DATABASE_URL"], env["PLAIN"])
	}
	if w.rawArgv[2] != "$(DB_PASSWORD)" {
		t.Fatal("the raw command line was lost (a rotation could not expand again)")
	}
}
