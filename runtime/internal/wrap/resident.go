package wrap

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/secmem"
	"cloudtaser/runtime/internal/vault"
)

// ForwardedSignals is the explicit list a resident wrapper passes on to the app. Never
// SIGCHLD (ours), SIGURG (the Go runtime's preemption noise) or SIGPIPE.
var ForwardedSignals = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

// stopSignals end the wrapper after the app: no rotation restart once one was received.
func stopSignal(s os.Signal) bool {
	return s == unix.SIGTERM || s == unix.SIGINT || s == unix.SIGQUIT
}

// lockedEnv is a child environment whose secret entries live in a secmem.Region.
type lockedEnv struct {
	region *secmem.Region
	vars   []contract.EnvVar // Value strings point into region
}

func lock(got *fetched) (*lockedEnv, error) {
	size := 0
	for _, v := range got.vars {
		size += len(v.Value)
	}
	region, err := secmem.New(size)
	if err != nil {
		return nil, fail(ExitInternal, "%v", err)
	}
	le := &lockedEnv{region: region}
	for _, v := range got.vars {
		s, err := region.Append(v.Value)
		if err != nil {
			region.Close()
			return nil, fail(ExitInternal, "%v", err)
		}
		le.vars = append(le.vars, contract.EnvVar{Name: v.Name, Value: s})
	}
	got.vars = nil
	return le, nil
}

// resident runs the app as a child and stays as its parent: forwards ForwardedSignals, reaps
// every child (it is a child subreaper, and PID 1 in a container), exits with the app's code
// or 128+signal, renews or re-acquires its token, and (with a rotation interval) restarts
// the app gracefully with new values when a secret's version changes.
func (w *Wrapper) resident(got *fetched) error {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	rotating := w.Cfg.RotationInterval > 0
	if !rotating {
		w.revoke() // nothing will need the token again
	}
	versions := got.versions
	env, err := lock(got)
	if err != nil {
		w.revoke()
		return err
	}
	defer func() { env.region.Close() }()
	w.Logf("resident mode: secrets held in %s memory (%d bytes mapped)", env.region.Kind(), env.region.Size())

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, ForwardedSignals...)
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, unix.SIGCHLD)
	defer signal.Stop(sigs)
	defer signal.Stop(chld)

	path, err := lookPath(w.Argv[0], envPath(contract.ChildEnv(w.Environ, nil)))
	if err != nil {
		w.revoke()
		return err
	}
	w.timing("start")
	pid, err := w.start(path, env)
	if err != nil {
		w.revoke()
		return err
	}

	var tick <-chan time.Time
	if rotating {
		t := time.NewTicker(w.Cfg.RotationInterval)
		defer t.Stop()
		tick = t.C
	}
	if rotating && w.login == nil && w.client.HasToken() {
		// a given token (token auth): learn its lease so it can be renewed in time
		ctx, cancel := context.WithTimeout(context.Background(), w.Cfg.RequestTimeout)
		if l, err := w.client.LookupSelf(ctx); err == nil {
			w.login = l
		} else {
			w.Logf("token: cannot look up the given token's TTL (it will not be renewed): %v", err)
		}
		cancel()
	}
	renew := w.renewTimer()
	defer renew.Stop()
	reap := time.NewTicker(time.Second) // a lost SIGCHLD never leaves a zombie for long
	defer reap.Stop()

	var (
		restarting bool
		stopping   bool
		pending    *lockedEnv
		pendingVer map[string]int64
		kill       <-chan time.Time
	)
	for {
		select {
		case s := <-sigs:
			if stopSignal(s) {
				stopping = true
			}
			if pid > 0 {
				_ = unix.Kill(pid, s.(syscall.Signal))
			}
		case <-chld:
		case <-reap.C:
		case <-kill:
			kill = nil
			if pid > 0 {
				w.Logf("rotation: the app did not stop within %s; sending SIGKILL", w.Cfg.GracePeriod)
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		case <-tick:
			w.rotateFiles() // in place, never a restart (files.go)
			if restarting || stopping {
				continue
			}
			changed, err := w.changed(versions)
			if err != nil {
				w.Logf("rotation: cannot check the secrets' versions (will retry): %v", err)
				continue
			}
			if len(changed) == 0 {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), w.Cfg.StartTimeout)
			fresh, err := fetch(ctx, w.client, &w.Cfg)
			cancel()
			if err == nil {
				err = w.expand(fresh)
			}
			if err != nil {
				w.Logf("rotation: %v; the app keeps running with the values it has", err)
				continue
			}
			pendingVer = fresh.versions
			if pending, err = lock(fresh); err != nil {
				w.Logf("rotation: %v", err)
				continue
			}
			w.Logf("rotation: new version of %v; restarting the app (SIGTERM, grace period %s)", changed, w.Cfg.GracePeriod)
			restarting = true
			_ = unix.Kill(pid, unix.SIGTERM)
			kill = time.After(w.Cfg.GracePeriod)
		case <-renew.C:
			w.keepToken(renew)
		}
		// Reap every child that has exited; the app's status decides what happens next.
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if got <= 0 || err != nil {
				break
			}
			if got != pid {
				continue // an orphan we adopted
			}
			pid = 0
			if restarting && !stopping {
				restarting, kill = false, nil
				env.region.Close()
				env, versions, pending = pending, pendingVer, nil
				if pid, err = w.start(path, env); err != nil {
					w.revoke()
					return err
				}
				w.Logf("rotation: the app was restarted with the new values")
				continue
			}
			if pending != nil {
				pending.region.Close()
			}
			w.revoke()
			reapExited() // orphans re-parented to us when the app exited
			return exitOf(ws)
		}
	}
}

// reapExited reaps every child that has already exited, without waiting for live ones.
func reapExited() {
	for {
		var ws unix.WaitStatus
		if got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); got <= 0 || err != nil {
			return
		}
	}
}

// exitOf turns the app's wait status into the wrapper's exit: its code, or 128+signal.
func exitOf(ws unix.WaitStatus) error {
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if code == 0 {
		return nil
	}
	return &Failure{Code: code} // no message: the app's exit code is its own
}

func (w *Wrapper) start(path string, env *lockedEnv) (int, error) {
	childEnv := contract.ChildEnv(w.Environ, env.vars)
	pid, err := syscall.ForkExec(path, w.Argv, &syscall.ProcAttr{
		Env:   childEnv,
		Files: []uintptr{0, 1, 2},
	})
	clear(childEnv) // the strings stay in locked memory; only the slice headers are dropped
	if err != nil {
		return 0, execFailure(w.Argv[0], err)
	}
	return pid, nil
}

// changed polls the KV metadata (current_version) of every path; where the policy denies
// metadata reads it falls back to the version of a data read (values dropped at once).
func (w *Wrapper) changed(versions map[string]int64) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.Cfg.StartTimeout)
	defer cancel()
	var out []string
	for path, have := range versions {
		mount, rest := contract.SplitVaultPath(path)
		v, err := w.client.CurrentVersion(ctx, mount, rest)
		var verr *vault.Error
		if errors.As(err, &verr) && verr.Status == 403 {
			var sec *vault.Secret
			sec, err = w.client.ReadKV2(ctx, mount, rest)
			if err == nil {
				v = sec.Version
				clear(sec.Data)
			}
		}
		if err != nil {
			return nil, readFailure(path, err)
		}
		if v != have {
			out = append(out, path)
		}
	}
	return out, nil
}

// renewTimer fires at two thirds of the token's TTL (never, without a token that expires).
func (w *Wrapper) renewTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	if w.client.HasToken() && w.login != nil && w.login.TTL > 0 {
		t.Reset(w.login.TTL * 2 / 3)
	}
	return t
}

// keepToken renews the token, or logs in again with a fresh JWT when it cannot be renewed
// (not renewable, past its max TTL, revoked).
func (w *Wrapper) keepToken(t *time.Timer) {
	ctx, cancel := context.WithTimeout(context.Background(), w.Cfg.StartTimeout)
	defer cancel()
	want := w.login.TTL
	if w.login.Renewable {
		if l, err := w.client.RenewSelf(ctx); err == nil && l.TTL >= want/2 {
			w.login.TTL = l.TTL
			t.Reset(l.TTL * 2 / 3)
			return
		}
	}
	if w.Cfg.AuthMethod == contract.AuthToken {
		w.Logf("the given vault token cannot be renewed any more; rotation checks will fail")
		return
	}
	l, err := login(ctx, w.client, &w.Cfg)
	if err != nil {
		w.Logf("token: re-login failed (will retry in 30s): %v", err)
		t.Reset(30 * time.Second)
		return
	}
	w.login, w.ownToken = l, true
	if l.TTL > 0 {
		t.Reset(l.TTL * 2 / 3)
	}
}
