// Package contract is the runtime's half of the contract with the Python CLI: the pod
// annotations that `cloudtaser target protect` writes, the wrapper's environment variables,
// the child environment, and the shared value syntaxes (booleans, durations).
//
// Every rule here has a twin on the Python side; both run the JSON vectors in
// spec/contract/*.json, so the two cannot drift. Errors carry a short stable Code (the
// vectors' "error" field) and a free-text message that names the variable, path or field
// concerned and never a secret value or token.
//
// The package is pure (no I/O except the existence check of CLOUDTASER_VAULT_CACERT) so that the
// injector can reuse it.
package contract

import "fmt"

// Stable error codes, as used in spec/contract/*.json.
const (
	CodeBadBool         = "bad-bool"
	CodeBadDuration     = "bad-duration"
	CodeMissingAddr     = "missing-addr"
	CodeBadAddr         = "bad-addr"
	CodeAddrCredentials = "addr-credentials"
	CodeBadAuthMethod   = "bad-auth-method"
	CodeMissingRole     = "missing-role"
	CodeBadRole         = "bad-role"
	CodeBadAuthMount    = "bad-auth-mount"
	CodeMissingToken    = "missing-token"
	CodeBadToken        = "bad-token"
	CodeBadNamespace    = "bad-namespace"
	CodeMissingCACert   = "missing-cacert"
	CodeMissingPaths    = "missing-secret-paths"
	CodeUnsafePath      = "unsafe-path"
	CodeBadPair         = "bad-pair"
	CodeBadField        = "bad-field"
	CodeBadEnvName      = "bad-env-name"
	CodeDuplicateField  = "duplicate-field"
	CodeDuplicateEnv    = "duplicate-env"
	CodeMappingMismatch = "mapping-mismatch"
	CodeBadMode         = "bad-mode"
	CodeBadSATokenPath  = "bad-sa-token-path"
	CodeNulInValue      = "nul-in-value"
	CodeDangerousEnv    = "dangerous-env"
	CodeReservedEnv     = "reserved-env"
)

// Error is a contract violation: a stable Code plus a message for people.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// quote shows untrusted input in a message: at most n characters, control characters escaped.
// Only ever used for configuration values, never for secret values or tokens.
func quote(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		s = string(r[:n]) + "…"
	}
	return fmt.Sprintf("%q", s)
}
