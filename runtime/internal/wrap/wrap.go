// Package wrap is `cloudtaser-runtime wrap -- CMD ARGS…`: log in with the pod's
// ServiceAccount JWT, read the mapped KV v2 secrets (fail closed), and start the app with
// them in its environment, without the wrapper's own CLOUDTASER_* and token variables.
//
// Exec mode (default) revokes the wrapper's token and execve(2)s the app: same PID, the app's
// own exit code and signals, no parent left holding secrets. Resident mode stays as the
// parent (PID 1 in a container): see resident.go.
package wrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/secmem"
	"cloudtaser/runtime/internal/vault"
)

// Wrapper is one run of the wrapper.
type Wrapper struct {
	Cfg     contract.Config
	Argv    []string
	Expand  contract.ExpandPlan // $(VAR) references to expand with the vault's values (expand.go)
	Environ []string            // the inherited environment (os.Environ())
	Stderr  io.Writer
	Started time.Time // process start, for timing output

	client    *vault.Client
	vaultTime time.Duration
	requests  int
	ownToken  bool // the token came from our login (so we revoke it)
	login     *vault.Login
	files     *fileRotation // files.go: the volumes a resident wrapper re-renders
	rawArgv   []string      // the command line before expansion (expand.go)
}

// Logf writes one diagnostic line. Callers never pass a value or a token.
func (w *Wrapper) Logf(format string, args ...any) {
	fmt.Fprintf(w.Stderr, "cloudtaser-runtime: "+format+"\n", args...)
}

// Run executes the wrapper and returns the exit code (exec mode does not return on success).
func (w *Wrapper) Run() int {
	if err := w.run(); err != nil {
		var f *Failure
		if errors.As(err, &f) {
			if f.Msg != "" {
				w.Logf("%s", f.Msg)
			}
			return f.Code
		}
		w.Logf("unexpected error (this is a bug in cloudtaser-runtime): %v", err)
		return ExitInternal
	}
	return 0
}

func (w *Wrapper) run() error {
	if len(w.Argv) == 0 {
		return fail(ExitConfig, "no command to run: cloudtaser-runtime wrap -- COMMAND [ARGS...]")
	}
	// Not dumpable while secrets are in this process: /proc/self/* root-owned, no same-UID
	// ptrace, no core dump. execve resets it for the app.
	if err := secmem.SetNotDumpable(); err != nil {
		return fail(ExitInternal, "prctl(PR_SET_DUMPABLE, 0) failed: %v", err)
	}
	if err := w.connect(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.Cfg.StartTimeout)
	defer cancel()
	got, err := w.acquire(ctx)
	if err != nil {
		return err
	}
	if w.Cfg.Mode == contract.ModeResident {
		return w.resident(got)
	}
	return w.execApp(got)
}

// connect makes the vault client (no request yet).
func (w *Wrapper) connect() error {
	c, err := vault.New(vault.Options{
		Address: w.Cfg.Address, Namespace: w.Cfg.Namespace, CACert: w.Cfg.CACert,
		SkipVerify: w.Cfg.SkipVerify, RequestTimeout: w.Cfg.RequestTimeout,
	})
	if err != nil {
		return fail(ExitConfig, "%v", err)
	}
	c.OnRequest = func(method, path string, status int, d time.Duration) {
		w.vaultTime += d
		w.requests++
		if w.Cfg.Debug {
			w.Logf("debug: %s %s -> %d in %.1f ms", method, path, status, ms(d))
		}
	}
	w.client = c
	return nil
}

// acquire logs in and fetches; a failed fetch revokes our token before it returns.
func (w *Wrapper) acquire(ctx context.Context) (*fetched, error) {
	l, err := login(ctx, w.client, &w.Cfg)
	if err != nil {
		return nil, err
	}
	w.login, w.ownToken = l, l != nil
	got, err := fetch(ctx, w.client, &w.Cfg)
	if err == nil {
		err = w.expand(got)
	}
	if err != nil {
		w.revoke() // the start fails: the token is of no use to anybody
		return nil, err
	}
	return got, nil
}

// revoke revokes a token we created (best effort, bounded); a given token is only forgotten.
func (w *Wrapper) revoke() {
	if !w.ownToken {
		w.client.Forget()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := w.client.RevokeSelf(ctx); err != nil {
		w.Logf("could not revoke the wrapper's vault token (it expires with its TTL): %v", err)
		w.client.Forget()
	}
	w.ownToken = false
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (w *Wrapper) timing(what string) {
	if !w.Cfg.Debug {
		return
	}
	total := time.Since(w.Started)
	w.Logf("debug: timing %s: total %.2f ms, vault %.2f ms in %d request(s), wrapper %.2f ms",
		what, ms(total), ms(w.vaultTime), w.requests, ms(total-w.vaultTime))
}

// execApp replaces this process with the app.
func (w *Wrapper) execApp(got *fetched) error {
	w.revoke()
	env := contract.ChildEnv(w.Environ, got.vars)
	path, err := lookPath(w.Argv[0], envPath(env))
	if err != nil {
		return err
	}
	w.timing("exec")
	err = syscall.Exec(path, w.Argv, env)
	return execFailure(w.Argv[0], err)
}

func execFailure(cmd string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fail(ExitNotFound, "command not found: %s", cmd)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fail(ExitNotExecutable, "permission denied executing %s", cmd)
	}
	return fail(ExitNotExecutable, "cannot execute %s: %v", cmd, err)
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func envPath(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			return v
		}
	}
	return defaultPath
}

// lookPath finds cmd on the child's PATH (a name with a slash is used as it is).
func lookPath(cmd, pathEnv string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, nil
	}
	denied := false
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, cmd)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
		denied = true
	}
	if denied {
		return "", fail(ExitNotExecutable, "permission denied executing %s", cmd)
	}
	return "", fail(ExitNotFound, "command not found: %s (PATH=%s)", cmd, pathEnv)
}
