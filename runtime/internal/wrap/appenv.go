package wrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/secmem"
)

// `cloudtaser-runtime exec -- COMMAND [ARGS...]`: what the injector puts in front of an exec
// probe or an exec lifecycle hook that uses a migrated variable (docs/injector.md, "Exec
// probes and hooks"). The kubelet runs probes and hooks with the container spec's
// environment, which has no migrated value (after finalize, not even the variable); the app
// has them. So the runner takes the app's own environment, as the wrapper gave it at exec
// time, and execs COMMAND with it: no vault login, no token, no socket.
//
// The app is found in /proc: the processes of this container (the same mount namespace as
// the runner), whose environment this user can read (the kernel's rule for
// /proc/<pid>/environ: same user and a dumpable process, so never the resident wrapper, which
// is not dumpable and holds no value in its environment anyway), and which hold every
// variable of CLOUDTASER_ENV_MAP; of those, the oldest (by start time): in exec mode PID 1,
// in resident mode the wrapper's child. Processes started later in the container (an earlier
// probe, a `kubectl exec` shell, whose environment is the spec's) lose to it.
//
// Fail closed: when no such process appears within CLOUDTASER_START_TIMEOUT (default 60 s;
// the kubelet's probe timeout usually ends it first) the runner exits 4 without running
// COMMAND: the probe or hook fails visibly, it never runs without its secrets.

// RunExec is the exec subcommand; environ is the runner's own environment (the spec's).
func RunExec(argv, environ []string, stderr io.Writer) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "cloudtaser-runtime exec: "+format+"\n", args...)
	}
	if len(argv) == 0 {
		logf("no command: cloudtaser-runtime exec -- COMMAND [ARGS...]")
		return ExitConfig
	}
	_ = secmem.SetNotDumpable() // the app's environment is in this process until the exec
	env := contract.EnvMap(environ)
	secrets, err := contract.ParseMapping(contract.EnvSecretPaths, env[contract.EnvSecretPaths], contract.EnvEnvMap, env[contract.EnvEnvMap])
	if err != nil {
		logf("%v", err)
		return ExitConfig
	}
	var want []string
	for _, s := range secrets {
		for _, f := range s.Fields {
			want = append(want, f.Env)
		}
	}
	if len(want) == 0 {
		logf("%s maps no variable: there is nothing to take from the app", contract.EnvEnvMap)
		return ExitConfig
	}
	timeout, err := contract.ParseDuration(contract.EnvStartTimeout, env[contract.EnvStartTimeout], contract.DefaultStartTimeout)
	if err != nil {
		logf("%v", err)
		return ExitConfig
	}
	deadline := time.Now().Add(timeout)
	for {
		appEnv, err := AppEnviron("/proc", os.Getpid(), want)
		if err == nil {
			path, err := lookPath(argv[0], envPath(appEnv))
			if err != nil {
				logf("%v", err)
				return err.(*Failure).Code
			}
			err = syscall.Exec(path, argv, appEnv)
			var f *Failure
			errors.As(execFailure(argv[0], err), &f)
			logf("%s", f.Msg)
			return f.Code
		}
		if time.Now().After(deadline) {
			logf("%v within %s; not running %s without its secrets", err, timeout, filepath.Base(argv[0]))
			return ExitMissing
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ErrNoApp: no process of this container with the app's environment (yet).
var ErrNoApp = errors.New("the app's environment could not be read (the app has not started yet, has exited, or runs as another user than this command)")

// AppEnviron is the environment of the app process of this container (see RunExec), read
// from procDir; self is the caller's PID (skipped); want are the variables it must hold.
func AppEnviron(procDir string, self int, want []string) ([]string, error) {
	ns, err := os.Readlink(filepath.Join(procDir, "self", "ns", "mnt"))
	if err != nil {
		return nil, fmt.Errorf("cannot read this process's mount namespace: %w", err)
	}
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	type candidate struct {
		pid   int
		start uint64
		env   []string
	}
	var found []candidate
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := filepath.Join(procDir, e.Name())
		if n, err := os.Readlink(filepath.Join(dir, "ns", "mnt")); err != nil || n != ns {
			continue
		}
		start, ok := startTime(dir)
		if !ok {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil || len(raw) == 0 {
			continue
		}
		env := splitEnviron(raw)
		clear(raw)
		if holdsAll(env, want) {
			found = append(found, candidate{pid, start, env})
		}
	}
	if len(found) == 0 {
		return nil, ErrNoApp
	}
	sort.Slice(found, func(i, j int) bool {
		if found[i].start != found[j].start {
			return found[i].start < found[j].start
		}
		return found[i].pid < found[j].pid
	})
	return found[0].env, nil
}

// startTime is field 22 of /proc/<pid>/stat (clock ticks since boot).
func startTime(dir string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')') // comm may hold blanks and parentheses
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 { // fields[0] is field 3 (state)
		return 0, false
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	return v, err == nil
}

func splitEnviron(raw []byte) []string {
	var out []string
	for _, kv := range bytes.Split(bytes.TrimRight(raw, "\x00"), []byte{0}) {
		if len(kv) > 0 {
			out = append(out, string(kv))
		}
	}
	return out
}

func holdsAll(env, want []string) bool {
	have := make(map[string]bool, len(env))
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok {
			have[k] = true
		}
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}
