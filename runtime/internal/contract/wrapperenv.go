package contract

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Wrapper environment variables. Under the injector all of them are CLOUDTASER_*: the wrapper
// never reads a VAULT_*/BAO_* variable, a proxy variable or any other setting the app's own
// environment may carry (issue 28, finding 7). The injector owns and always sets the variables
// of OwnedEnv (see there); the pod may set only the tuning variables of TuningEnv. Run by hand
// outside the injector, the CloudTaser-documented VAULT_* names work too (StandaloneEnv).
const (
	EnvAddr           = "CLOUDTASER_VAULT_ADDR"
	EnvAuthMethod     = "CLOUDTASER_VAULT_AUTH_METHOD"
	EnvAuthRole       = "CLOUDTASER_VAULT_AUTH_ROLE"
	EnvAuthMountPath  = "CLOUDTASER_VAULT_AUTH_MOUNT_PATH"
	EnvToken          = "CLOUDTASER_VAULT_TOKEN"
	EnvNamespace      = "CLOUDTASER_VAULT_NAMESPACE"
	EnvCACert         = "CLOUDTASER_VAULT_CACERT"
	EnvSkipVerify     = "CLOUDTASER_VAULT_SKIP_VERIFY"
	EnvSecretPaths    = "CLOUDTASER_SECRET_PATHS"
	EnvEnvMap         = "CLOUDTASER_ENV_MAP"
	EnvSATokenPath    = "CLOUDTASER_SA_TOKEN_PATH"
	EnvAcceptDanger   = "CLOUDTASER_ACCEPT_DANGEROUS_ENV"
	EnvSecretFiles    = "CLOUDTASER_SECRET_FILES" // secretfiles.go
	EnvMode           = "CLOUDTASER_MODE"
	EnvStartTimeout   = "CLOUDTASER_START_TIMEOUT"
	EnvRotation       = "CLOUDTASER_ROTATION_INTERVAL"
	EnvGracePeriod    = "CLOUDTASER_GRACE_PERIOD"
	EnvRequestTimeout = "CLOUDTASER_REQUEST_TIMEOUT"
	EnvDebug          = "CLOUDTASER_DEBUG"

	// StrippedPrefix: every variable with this prefix is removed from the child environment.
	StrippedPrefix = "CLOUDTASER_"
)

// OwnedEnv are the variables that say where the wrapper connects, how it proves who it is,
// whom it trusts and what it puts into the app's environment. The injector writes every one
// of them on every wrapped container (empty when the annotations ask for the default), after
// the container's own entries: in Kubernetes `env` wins over `envFrom` and over the image's
// ENV, so nothing else can supply them; and it denies a pod whose container sets one itself.
var OwnedEnv = []string{
	EnvAddr, EnvAuthMethod, EnvAuthRole, EnvAuthMountPath, EnvToken, EnvNamespace, EnvCACert,
	EnvSkipVerify, EnvSecretPaths, EnvEnvMap, EnvSATokenPath, EnvAcceptDanger,
}

// TuningEnv are the wrapper settings a pod may set itself (docs/connect-and-runtime.md): they
// change when and how often the wrapper works, never where it connects or what it trusts.
var TuningEnv = []string{EnvMode, EnvStartTimeout, EnvRotation, EnvGracePeriod, EnvRequestTimeout, EnvDebug}

// PodSettable reports whether a container may set the variable name itself: any name outside
// the CLOUDTASER_ prefix, and the tuning variables. Every other CLOUDTASER_* name is the
// injector's (those it sets and those a later version may set).
func PodSettable(name string) bool {
	if !strings.HasPrefix(name, StrippedPrefix) {
		return true
	}
	for _, n := range TuningEnv {
		if n == name {
			return true
		}
	}
	return false
}

// StandaloneEnv are the wrapper variables CloudTaser documents (compat-cloudtaser.md §10.3;
// BAO_* as the fallback of each, like the vault CLI), read only when the wrapper runs outside
// the injector: when CLOUDTASER_VAULT_ADDR is absent from its environment. The injector always
// writes CLOUDTASER_VAULT_ADDR (and denies a pod that sets it), so in an injected container
// these names, which the app may well carry for its own vault client, are never read.
var StandaloneEnv = map[string][]string{
	EnvAddr:          {"VAULT_ADDR", "BAO_ADDR"},
	EnvAuthMethod:    {"VAULT_AUTH_METHOD", "BAO_AUTH_METHOD"},
	EnvAuthRole:      {"VAULT_AUTH_ROLE", "BAO_AUTH_ROLE"},
	EnvAuthMountPath: {"VAULT_AUTH_MOUNT_PATH", "BAO_AUTH_MOUNT_PATH"},
	EnvToken:         {"VAULT_TOKEN", "BAO_TOKEN"},
	EnvNamespace:     {"VAULT_NAMESPACE", "BAO_NAMESPACE"},
	EnvCACert:        {"VAULT_CACERT", "BAO_CACERT"},
	EnvSkipVerify:    {"VAULT_SKIP_VERIFY", "BAO_SKIP_VERIFY"},
}

// controlEnv keeps only the variables the wrapper reads; ResolveEnv sees nothing else, so no
// variable of the app's environment can reach its configuration. Outside the injector (no
// CLOUDTASER_VAULT_ADDR at all) the documented VAULT_*/BAO_* names stand in for the
// CLOUDTASER_VAULT_* ones that are not set (StandaloneEnv).
func controlEnv(env map[string]string) map[string]string {
	out := make(map[string]string, len(OwnedEnv)+len(TuningEnv))
	for _, names := range [][]string{OwnedEnv, TuningEnv} {
		for _, n := range names {
			if v, ok := env[n]; ok {
				out[n] = v
			}
		}
	}
	if _, injected := env[EnvAddr]; injected {
		return out
	}
	for owned, names := range StandaloneEnv {
		if _, ok := out[owned]; ok {
			continue
		}
		for _, n := range names {
			if v, ok := env[n]; ok && v != "" {
				out[owned] = v
				break
			}
		}
	}
	return out
}

// Defaults.
const (
	DefaultAuthMountPath  = "auth/kubernetes"
	DefaultSATokenPath    = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultStartTimeout   = 60 * time.Second
	DefaultGracePeriod    = 10 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	MinRotationInterval   = time.Second
)

// StrippedNames are vault token variables, removed from the child environment too (the
// wrapper never reads them; an operator's token must not reach the app by accident).
var StrippedNames = map[string]bool{"VAULT_TOKEN": true, "BAO_TOKEN": true}

// AuthToken: the wrapper uses CLOUDTASER_VAULT_TOKEN as it is (outside a pod only).
const AuthToken = "token"

// Modes.
const (
	ModeExec     = "exec"
	ModeResident = "resident"
)

// Config is the wrapper's resolved configuration. Its String and GoString never show the token.
type Config struct {
	Address          string
	AuthMethod       string // AuthKubernetes, AuthJWT or AuthToken
	AuthMount        string // without "auth/"
	Role             string
	Token            string // only for AuthMethod "token"; never printed
	Namespace        string
	CACert           string
	SkipVerify       bool
	SATokenPath      string
	Secrets          []Secret
	AcceptDangerous  []string     // dangerous targets the pod's reviewers accepted
	Files            []FileVolume // the volumes this wrapper renders (EnvSecretFiles)
	Mode             string
	StartTimeout     time.Duration
	RequestTimeout   time.Duration
	RotationInterval time.Duration // 0: off
	GracePeriod      time.Duration
	Debug            bool
}

func (c Config) String() string {
	tok := "<unset>"
	if c.Token != "" {
		tok = "<set>"
	}
	return fmt.Sprintf("Config{address=%s method=%s mount=%s role=%s token=%s namespace=%s mode=%s paths=%d}",
		c.Address, c.AuthMethod, c.AuthMount, c.Role, tok, c.Namespace, c.Mode, len(c.Secrets))
}

// GoString keeps %#v from printing the token.
func (c Config) GoString() string { return c.String() }

// FileExists is the check used for CLOUDTASER_VAULT_CACERT; replaceable for the vectors.
type FileExists func(path string) bool

// OSFileExists checks a regular file on disk.
func OSFileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// ResolveEnv resolves the wrapper configuration from the environment: the variables of
// OwnedEnv and TuningEnv, nothing else. A mapping to a dangerous variable (Dangerous) that
// EnvAcceptDanger does not name, or to a reserved one, is refused.
func ResolveEnv(env map[string]string, exists FileExists) (Config, error) {
	var c Config
	var err error
	files, injectedFiles := env[EnvSecretFiles]
	env = controlEnv(env)
	addr := env[EnvAddr]
	if addr == "" {
		return c, errorf(CodeMissingAddr, "%s is not set (VAULT_ADDR when run outside the injector): the wrapper does not know the vault address", EnvAddr)
	}
	if c.Address, err = ValidateAddress(EnvAddr, addr); err != nil {
		return c, err
	}
	method := env[EnvAuthMethod]
	c.AuthMethod = strings.ToLower(strings.TrimSpace(method))
	if c.AuthMethod == "" {
		c.AuthMethod = AuthKubernetes
	}
	if c.AuthMethod != AuthKubernetes && c.AuthMethod != AuthJWT && c.AuthMethod != AuthToken {
		return c, errorf(CodeBadAuthMethod, "%s must be kubernetes, jwt or token, not %s", EnvAuthMethod, quote(method, 20))
	}
	mount := env[EnvAuthMountPath]
	if mount == "" {
		mount = DefaultAuthMountPath
	}
	if c.AuthMount, err = NormaliseAuthMount(EnvAuthMountPath, mount); err != nil {
		return c, err
	}
	role := strings.TrimSpace(env[EnvAuthRole])
	token := env[EnvToken]
	if c.AuthMethod != AuthToken { // kubernetes and jwt: a role and the ServiceAccount JWT
		if role == "" {
			return c, errorf(CodeMissingRole, "%s is not set (the vault role of this workload)", EnvAuthRole)
		}
		if !ValidRole(role) {
			return c, errorf(CodeBadRole, "%s %s is not a valid role name", EnvAuthRole, quote(role, 80))
		}
		c.Role = role
	} else {
		if token == "" {
			return c, errorf(CodeMissingToken, "%s=token but %s is not set", EnvAuthMethod, EnvToken)
		}
		c.Token = token
	}
	if token != "" && !HeaderSafeToken(token) {
		return c, errorf(CodeBadToken, "%s contains blanks, control or non-ASCII characters", EnvToken)
	}
	// In a pod with secret files the injector writes EnvSecretFiles on every container (empty
	// where the container renders none): such a pod may have no secret paths at all (admission
	// checked that it has files).
	if strings.TrimSpace(env[EnvSecretPaths]) == "" && !injectedFiles {
		return c, errorf(CodeMissingPaths, "%s is not set: there are no secrets to fetch", EnvSecretPaths)
	}
	if c.Files, err = ParseSecretFiles(EnvSecretFiles, files); err != nil {
		return c, err
	}
	if c.Secrets, err = ParseMapping(EnvSecretPaths, env[EnvSecretPaths], EnvEnvMap, env[EnvEnvMap]); err != nil {
		return c, err
	}
	if c.AcceptDangerous, err = ParseAcceptDangerous(EnvAcceptDanger, env[EnvAcceptDanger]); err != nil {
		return c, err
	}
	if err = CheckTargets(EnvEnvMap, c.Secrets, c.AcceptDangerous); err != nil {
		return c, err
	}
	ns := env[EnvNamespace]
	c.Namespace = strings.Trim(ns, "/")
	if c.Namespace != "" && !ValidNamespace(c.Namespace) {
		return c, errorf(CodeBadNamespace, "%s %s is not a valid namespace path", EnvNamespace, quote(ns, 80))
	}
	c.CACert = env[EnvCACert]
	if c.CACert != "" && !exists(c.CACert) {
		return c, errorf(CodeMissingCACert, "%s %s does not exist", EnvCACert, quote(c.CACert, 200))
	}
	if c.SkipVerify, err = ParseBool(EnvSkipVerify, env[EnvSkipVerify]); err != nil {
		return c, err
	}
	c.SATokenPath = env[EnvSATokenPath]
	if c.SATokenPath == "" {
		c.SATokenPath = DefaultSATokenPath
	}
	if !strings.HasPrefix(c.SATokenPath, "/") || strings.ContainsAny(c.SATokenPath, "\x00\n") {
		return c, errorf(CodeBadSATokenPath, "%s must be an absolute file path", EnvSATokenPath)
	}
	c.Mode = strings.ToLower(strings.TrimSpace(env[EnvMode]))
	if c.Mode == "" {
		c.Mode = ModeExec
	}
	if c.Mode != ModeExec && c.Mode != ModeResident {
		return c, errorf(CodeBadMode, "%s must be exec or resident, not %s", EnvMode, quote(env[EnvMode], 20))
	}
	if c.StartTimeout, err = ParseDuration(EnvStartTimeout, env[EnvStartTimeout], DefaultStartTimeout); err != nil {
		return c, err
	}
	if c.StartTimeout == 0 {
		return c, errorf(CodeBadDuration, "%s must be greater than zero", EnvStartTimeout)
	}
	if c.RequestTimeout, err = ParseDuration(EnvRequestTimeout, env[EnvRequestTimeout], DefaultRequestTimeout); err != nil {
		return c, err
	}
	if c.RequestTimeout == 0 {
		return c, errorf(CodeBadDuration, "%s must be greater than zero", EnvRequestTimeout)
	}
	if c.RotationInterval, err = ParseDuration(EnvRotation, env[EnvRotation], 0); err != nil {
		return c, err
	}
	if c.RotationInterval > 0 && c.RotationInterval < MinRotationInterval {
		return c, errorf(CodeBadDuration, "%s must be 0 (off) or at least 1s", EnvRotation)
	}
	if c.RotationInterval > 0 && c.Mode != ModeResident {
		return c, errorf(CodeBadMode, "%s needs %s=resident (in exec mode nothing is left to restart the app)", EnvRotation, EnvMode)
	}
	if c.GracePeriod, err = ParseDuration(EnvGracePeriod, env[EnvGracePeriod], DefaultGracePeriod); err != nil {
		return c, err
	}
	if c.Debug, err = ParseBool(EnvDebug, env[EnvDebug]); err != nil {
		return c, err
	}
	return c, nil
}

// EnvMap turns KEY=VALUE entries (os.Environ) into a map; the last entry of a key wins.
func EnvMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
