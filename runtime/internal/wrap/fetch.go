package wrap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/vault"
)

// Exit codes before the app runs (the same as the Python CLI's): once the app runs, its own.
const (
	ExitConfig        = 2   // bad configuration or usage
	ExitRemote        = 3   // vault unreachable, login refused, read denied
	ExitMissing       = 4   // a secret path or field is missing, deleted or unusable
	ExitInternal      = 70  // a bug
	ExitNotExecutable = 126 // the command cannot be executed
	ExitNotFound      = 127 // the command is not found
)

// Failure is an error with the exit code it maps to. Messages never hold a value or token.
type Failure struct {
	Code int
	Msg  string
}

func (f *Failure) Error() string { return f.Msg }

func fail(code int, format string, args ...any) *Failure {
	return &Failure{Code: code, Msg: fmt.Sprintf(format, args...)}
}

const maxTokenFile = 64 << 10

// readJWT reads the ServiceAccount token afresh (projected tokens rotate).
func readJWT(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		var perr *os.PathError
		if errors.As(err, &perr) {
			err = perr.Err
		}
		return "", fail(ExitConfig, "cannot read the ServiceAccount token %s: %v; is a token mounted (automountServiceAccountToken) or %s set?", path, err, contract.EnvSATokenPath)
	}
	defer f.Close()
	buf := make([]byte, maxTokenFile+1)
	n, _ := f.Read(buf)
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
	}
	defer clear(buf)
	if n > maxTokenFile {
		return "", fail(ExitConfig, "the ServiceAccount token file %s is too large", path)
	}
	tok := string(bytes.TrimSpace(buf[:n]))
	if !contract.HeaderSafeToken(tok) {
		return "", fail(ExitConfig, "the ServiceAccount token file %s is empty or not a JWT", path)
	}
	return tok, nil
}

// login logs the client in with the ServiceAccount JWT (the kubernetes and the jwt auth
// methods take the same body at auth/<mount>/login) or sets the given token.
func login(ctx context.Context, c *vault.Client, cfg *contract.Config) (*vault.Login, error) {
	if cfg.AuthMethod == contract.AuthToken {
		c.SetToken(cfg.Token)
		return nil, nil
	}
	jwt, err := readJWT(cfg.SATokenPath)
	if err != nil {
		return nil, err
	}
	l, err := c.LoginKubernetes(ctx, cfg.AuthMount, cfg.Role, jwt)
	if err == nil {
		return l, nil
	}
	var verr *vault.Error
	if errors.As(err, &verr) {
		said := strings.Join(verr.Errors, "; ")
		if said == "" {
			said = fmt.Sprintf("HTTP %d", verr.Status)
		}
		hint := ""
		switch {
		case strings.Contains(said, "does not match any associated bound claim"):
			hint = ": the role does not bind this pod's namespace/ServiceAccount (jwt)"
		case strings.Contains(said, "error validating token") || strings.Contains(said, "no known key"):
			hint = ": the vault could not verify the token with the cluster's public keys (jwt; after a signing-key rotation re-run 'cloudtaser target connect')"
		case strings.Contains(said, "not authorized"):
			hint = ": the role does not bind this pod's namespace/ServiceAccount"
		case strings.Contains(said, "audience"):
			hint = ": the token's audience does not match the role's"
		case strings.Contains(said, "invalid role name"):
			hint = ": no such role on this mount"
		case said == "permission denied":
			hint = ": the vault could not verify the token with the cluster (run 'cloudtaser target connect --check' to find out why)"
		}
		return nil, fail(ExitRemote, "login to auth/%s with role %q was refused (%s)%s", cfg.AuthMount, cfg.Role, said, hint)
	}
	return nil, fail(ExitRemote, "login to auth/%s with role %q failed: %v", cfg.AuthMount, cfg.Role, err)
}

// fetched is the result of reading every mapped path: the env vars in mapping order and the
// version of each path.
type fetched struct {
	vars     []contract.EnvVar
	versions map[string]int64
}

// fetch reads every mapped path once and fails closed on anything missing.
func fetch(ctx context.Context, c *vault.Client, cfg *contract.Config) (*fetched, error) {
	out := &fetched{versions: map[string]int64{}}
	cache := map[string]*vault.Secret{}
	for _, s := range cfg.Secrets {
		sec, ok := cache[s.Path]
		if !ok {
			mount, rest := contract.SplitVaultPath(s.Path)
			var err error
			sec, err = c.ReadKV2(ctx, mount, rest)
			if err != nil {
				return nil, readFailure(s.Path, err)
			}
			cache[s.Path] = sec
			out.versions[s.Path] = sec.Version
		}
		var missing []string
		for _, fe := range s.Fields {
			if _, ok := sec.Data[fe.Field]; !ok {
				missing = append(missing, "'"+fe.Field+"'")
			}
		}
		if len(missing) > 0 {
			return nil, fail(ExitMissing, "secret %s has no field(s) %s; refusing to start", s.Path, strings.Join(missing, ", "))
		}
		for _, fe := range s.Fields {
			where := fmt.Sprintf("field '%s' of %s", fe.Field, s.Path)
			v, err := envValue(sec.Data[fe.Field], where)
			if err != nil {
				return nil, err
			}
			out.vars = append(out.vars, contract.EnvVar{Name: fe.Env, Value: v})
		}
	}
	return out, nil
}

func readFailure(path string, err error) error {
	var verr *vault.Error
	switch {
	case errors.Is(err, vault.ErrNeverWritten), errors.Is(err, vault.ErrDeleted), errors.Is(err, vault.ErrDestroyed):
		return fail(ExitMissing, "secret %s does not exist in the vault: it %v; refusing to start", path, strings.TrimPrefix(err.Error(), "does not exist in the vault "))
	case errors.As(err, &verr) && verr.Status == 403:
		return fail(ExitRemote, "permission denied reading %s (HTTP 403): the role's policy does not grant read on it; refusing to start", path)
	case errors.As(err, &verr):
		return fail(ExitRemote, "reading %s failed: %v; refusing to start", path, err)
	}
	return fail(ExitRemote, "reading %s failed: %v; refusing to start", path, err)
}

// envValue turns a vault field into an environment string (fieldText), refusing null and NUL
// bytes.
func envValue(v any, where string) (string, error) {
	text, ok := fieldText(v)
	if !ok {
		return "", fail(ExitMissing, "%s is null in the vault or cannot be turned into text; refusing to start", where)
	}
	if err := contract.CheckValue(where, text); err != nil {
		return "", fail(ExitMissing, "%s; refusing to start", err.Error())
	}
	return text, nil
}

// fieldText is the text of a vault field, for an environment variable or a file: strings as
// they are; numbers as written in the vault's JSON; booleans true/false; objects and arrays as
// compact JSON with sorted keys. ok is false for null.
func fieldText(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		if x {
			return "true", true
		}
		return "false", true
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", false
	}
	return strings.TrimSuffix(b.String(), "\n"), true
}
