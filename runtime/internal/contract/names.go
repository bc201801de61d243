package contract

import (
	"net/url"
	"strings"
)

// The rules below are those of cloudtaser/plan.py (VAULT_PATH, FIELD_NAME, ENV_VAR) and
// cloudtaser/naming.py (role names, mount paths, reserved mounts); see the vectors.

// reservedMounts are mounts the vault reserves: never a KV engine or a Kubernetes auth method.
var reservedMounts = map[string]bool{"sys": true, "auth": true, "identity": true, "cubbyhole": true, "token": true}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// pathSegment: one vault path segment, [A-Za-z0-9._-]+, not "." or "..".
func pathSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isPathChar(s[i]) {
			return false
		}
	}
	return true
}

// ValidVaultPath reports whether p is a KV v2 API path `<mount>/data/<segment>[/...]` of
// safe segments (no segment starts with a dot) on a non-reserved mount (the plan's VAULT_PATH rule).
func ValidVaultPath(p string) bool {
	segs := strings.Split(p, "/")
	if len(segs) < 3 || segs[1] != "data" {
		return false
	}
	if len(p) > 512 || reservedMount(segs[0]) {
		return false
	}
	for _, s := range segs {
		if !mountSegment(s) {
			return false
		}
	}
	return true
}

// reservedMount: the vault routes `SYS/` and `Sys/` like `sys/`, so reserved names are
// matched in any case (the plan rule book's rule).
func reservedMount(first string) bool { return reservedMounts[strings.ToLower(first)] }

// SplitVaultPath splits a valid `<mount>/data/<rest>` into mount and rest.
func SplitVaultPath(p string) (mount, rest string) {
	mount, rest, _ = strings.Cut(p, "/data/")
	return mount, rest
}

// ValidField reports whether f is a vault field name (the plan's FIELD_NAME rule).
func ValidField(f string) bool { return pathSegment(f) }

// ValidEnvName reports whether n is an environment variable name [A-Za-z_][A-Za-z0-9_]*.
func ValidEnvName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// ValidRole reports whether r is a Kubernetes-auth role name the vault accepts.
func ValidRole(r string) bool {
	if r == "" || len(r) > 255 || !isPathChar(r[0]) || r[0] == '.' || r[0] == '_' || r[0] == '-' {
		return false
	}
	for i := 0; i < len(r); i++ {
		if !isPathChar(r[i]) {
			return false
		}
	}
	return true
}

// mountSegment: [A-Za-z0-9_-][A-Za-z0-9._-]*, not "." or "..".
func mountSegment(s string) bool {
	return pathSegment(s) && s[0] != '.'
}

// NormaliseAuthMount turns `auth/kubernetes`, `/auth/k8s/eu/`, `k8s-eu` into the mount path
// (`kubernetes`, `k8s/eu`, `k8s-eu`), refusing unsafe or reserved mounts.
func NormaliseAuthMount(name, value string) (string, error) {
	m := strings.TrimLeft(strings.TrimSpace(value), "/")
	m = strings.Trim(strings.TrimPrefix(m, "auth/"), "/")
	ok := m != ""
	for _, s := range strings.Split(m, "/") {
		ok = ok && mountSegment(s)
	}
	if !ok || reservedMount(strings.Split(m, "/")[0]) {
		return "", errorf(CodeBadAuthMount, "%s %s is not an auth mount path such as auth/kubernetes", name, quote(value, 80))
	}
	return m, nil
}

// ValidNamespace reports whether ns (without surrounding slashes) is a vault namespace path.
func ValidNamespace(ns string) bool {
	if ns == "" {
		return false
	}
	for _, s := range strings.Split(ns, "/") {
		if !mountSegment(s) {
			return false
		}
	}
	return true
}

// HeaderSafeToken: a token is sent as an HTTP header: printable ASCII without blanks.
func HeaderSafeToken(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ValidateAddress checks a vault URL: http(s) with a host, no credentials, query, fragment,
// blank or control character, ASCII only; returns it without a trailing slash.
func ValidateAddress(name, value string) (string, error) {
	a := strings.TrimSpace(value)
	u, err := url.Parse(a)
	if err == nil && u.User != nil {
		return "", errorf(CodeAddrCredentials, "%s must not carry credentials in the URL", name)
	}
	bad := func() error {
		return errorf(CodeBadAddr, "%s is not an http(s) URL with a host, e.g. https://vault.example.com:8200 (no query, fragment or blank)", name)
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Opaque != "" {
		return "", bad()
	}
	for i := 0; i < len(a); i++ {
		if a[i] <= ' ' || a[i] >= 0x7f || a[i] == '?' || a[i] == '#' {
			return "", bad()
		}
	}
	return strings.TrimRight(a, "/"), nil
}
