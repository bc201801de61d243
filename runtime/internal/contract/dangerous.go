package contract

import "strings"

// Dangerous targets (issue 28, finding 8). A vault field mapped to a variable that changes
// which code a process loads or runs (loader, shell, interpreter and trust-store variables)
// lets whoever can write the tenant's vault path run code in the pod. Such a mapping is a
// reviewer's decision: the injector denies it unless the pod annotation
// cloudtaser.io/accept-dangerous-env names the variable, and the wrapper refuses it unless
// CLOUDTASER_ACCEPT_DANGEROUS_ENV (which the injector sets from that annotation) does.
// Variables under a reserved prefix (the runtime's own CLOUDTASER_*) can never be accepted.
//
// The lists are spec/contract/dangerous-env.json (the plan rule book's twin, checked by
// TestDangerousEnvMatchesTheSharedList). Names compare case-sensitively, as libc does.

// AnnotationAcceptDangerousEnv names, comma-separated, the dangerous variables a reviewer
// accepted as targets of a vault field (cloudtaser.contract.ACCEPT_DANGEROUS_ENV).
const AnnotationAcceptDangerousEnv = "cloudtaser.io/accept-dangerous-env"

// DangerousNames are dangerous variable names.
var DangerousNames = map[string]bool{
	"BASHOPTS": true, "BASH_ENV": true, "CLASSPATH": true, "CORECLR_ENABLE_PROFILING": true,
	"CORECLR_PROFILER_PATH": true, "CURL_CA_BUNDLE": true, "DOTNET_STARTUP_HOOKS": true,
	"EDITOR": true, "ENV": true, "GCONV_PATH": true, "GIT_EXEC_PATH": true, "GIT_SSH_COMMAND": true,
	"GLIBC_TUNABLES": true, "HOSTALIASES": true, "IFS": true, "JAVA_TOOL_OPTIONS": true,
	"JDK_JAVA_OPTIONS": true, "LOCPATH": true, "LUA_CPATH": true, "LUA_INIT": true, "LUA_PATH": true,
	"MALLOC_CHECK_": true, "NLSPATH": true, "NODE_EXTRA_CA_CERTS": true, "NODE_OPTIONS": true,
	"NODE_PATH": true, "PAGER": true, "PATH": true, "PERL5LIB": true, "PERL5OPT": true,
	"PERLLIB": true, "PHPRC": true, "PHP_INI_SCAN_DIR": true, "PROMPT_COMMAND": true, "PS4": true,
	"PYTHONHOME": true, "PYTHONPATH": true, "PYTHONSTARTUP": true, "PYTHONUSERBASE": true,
	"REQUESTS_CA_BUNDLE": true, "RUBYLIB": true, "RUBYOPT": true, "SHELLOPTS": true,
	"SSL_CERT_DIR": true, "SSL_CERT_FILE": true, "TCLLIBPATH": true, "VISUAL": true,
	"_JAVA_OPTIONS": true,
}

// DangerousPrefixes: every name starting with one of them is dangerous.
var DangerousPrefixes = []string{"LD_", "DYLD_", "BASH_FUNC_", "CLOUDTASER_"}

// ReservedPrefixes: names that are never an accepted target (the runtime's control names).
var ReservedPrefixes = []string{"CLOUDTASER_"}

// Dangerous reports whether a target variable needs a reviewer's acceptance.
func Dangerous(name string) bool {
	return DangerousNames[name] || hasAnyPrefix(name, DangerousPrefixes)
}

// Reserved reports whether a target variable can never be accepted.
func Reserved(name string) bool { return hasAnyPrefix(name, ReservedPrefixes) }

func hasAnyPrefix(name string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// ParseAcceptDangerous parses an acceptance list: variable names joined by ",", blanks
// around them tolerated; empty means none. A name that is not an environment variable name is
// an error naming where the list came from.
func ParseAcceptDangerous(where, value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var out []string
	for _, part := range strings.Split(value, ",") {
		n := strings.TrimSpace(part)
		if !ValidEnvName(n) {
			return nil, errorf(CodeBadEnvName, "%s: %s is not an environment variable name", where, quote(n, 80))
		}
		out = append(out, n)
	}
	return out, nil
}

// CheckTargets refuses a mapping whose target is reserved, or dangerous and not accepted.
// The message names the variable and the field, never a value.
func CheckTargets(where string, secrets []Secret, accepted []string) error {
	ok := make(map[string]bool, len(accepted))
	for _, a := range accepted {
		ok[a] = true
	}
	for _, s := range secrets {
		for _, f := range s.Fields {
			switch {
			case Reserved(f.Env):
				return errorf(CodeReservedEnv, "%s maps field %s of %s to %s, a variable the runtime reserves for itself; no acceptance can allow it",
					where, quote(f.Field, 80), s.Path, f.Env)
			case Dangerous(f.Env) && !ok[f.Env]:
				return errorf(CodeDangerousEnv, "%s maps field %s of %s to %s, which changes what code the app loads or runs: whoever can write that vault path could run code in the pod; a reviewer must accept it (%s)",
					where, quote(f.Field, 80), s.Path, f.Env, AnnotationAcceptDangerousEnv)
			}
		}
	}
	return nil
}
