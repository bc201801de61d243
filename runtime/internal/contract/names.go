package contract

import (
	"net/url"
	"strings"
)

// The name, length, mount and address rules of the plan's rule book
// (cloudtaser/plan/rules.py: DNS_LABEL, DNS_SUBDOMAIN, env_name_problem, FIELD_NAME, VAULT_PATH, MOUNT,
// valid_role_name, valid_audience and the MAX_* limits; cloudtaser/contract.py: parse_vault_address,
// parse_auth_path), as the runtime applies them. spec/contract/rules.json holds the vectors
// both languages run, generated from the rule book's limits, so a limit changed on one side
// fails the other side's tests.

// The rule book's length limits (rules.MAX_*).
const (
	MaxDNSLabel     = 63
	MaxDNSSubdomain = 253
	MaxEnvName      = 256
	MaxField        = 253
	MaxVaultPath    = 512
	MaxSegment      = 128 // one segment of a vault path
	MaxMount        = 128 // a whole mount path
	MaxRole         = 255
	MaxAudience     = 256
	MaxNamespace    = 256 // a whole vault namespace path
)

// reservedMounts are mounts the vault reserves: never a KV engine or a Kubernetes auth method.
var reservedMounts = map[string]bool{"sys": true, "auth": true, "identity": true, "cubbyhole": true, "token": true}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// pathChars: s is one or more of [A-Za-z0-9._-] and not "." or "..".
func pathChars(s string) bool {
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

// mountSegment: one segment of a vault path or mount, [A-Za-z0-9_-][A-Za-z0-9._-]* (never
// starting with a dot), at most MaxSegment characters (rules.safe_segment, MAX_SEGMENT).
func mountSegment(s string) bool {
	return pathChars(s) && s[0] != '.' && len(s) <= MaxSegment
}

// DNSLabel reports whether s is a Kubernetes DNS-1123 label (a namespace): lower-case letters,
// digits and '-', starting and ending with a letter or digit, at most 63 (rules.DNS_LABEL).
func DNSLabel(s string) bool {
	if s == "" || len(s) > MaxDNSLabel || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// DNSSubdomain reports whether s is a Kubernetes object name as the rule book has it: lower-case
// letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253
// (rules.DNS_SUBDOMAIN).
func DNSSubdomain(s string) bool {
	if s == "" || len(s) > MaxDNSSubdomain || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerAlnum(s[i]) && s[i] != '-' && s[i] != '.' {
			return false
		}
	}
	return true
}

// HostName reports whether s is a lower-case DNS host name: a DNSSubdomain whose every
// dot-separated part is a DNSLabel (so no empty label and none over 63 characters). The
// injector's own names (its pod, its webhook, its serving certificate's SANs) are checked with it.
func HostName(s string) bool {
	if !DNSSubdomain(s) {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !DNSLabel(label) {
			return false
		}
	}
	return true
}

// ValidVaultPath reports whether p is a KV v2 API path `<mount>/data/<segment>[/...]` of
// safe segments on a non-reserved mount, at most MaxVaultPath characters (rules.VAULT_PATH,
// rules.vault_path_problem).
func ValidVaultPath(p string) bool {
	segs := strings.Split(p, "/")
	if len(segs) < 3 || segs[1] != "data" {
		return false
	}
	if len(p) > MaxVaultPath || reservedMount(segs[0]) {
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
// matched in any case (rules.is_reserved_mount).
func reservedMount(first string) bool { return reservedMounts[strings.ToLower(first)] }

// ValidMount reports whether m is a usable KV or auth mount path (`kubernetes`, `k8s/eu-prod`):
// safe segments, not reserved in any case, at most MaxMount characters (rules.usable_mount).
func ValidMount(m string) bool {
	if m == "" || len(m) > MaxMount {
		return false
	}
	segs := strings.Split(m, "/")
	for _, s := range segs {
		if !mountSegment(s) {
			return false
		}
	}
	return !reservedMount(segs[0])
}

// SplitVaultPath splits a valid `<mount>/data/<rest>` into mount and rest.
func SplitVaultPath(p string) (mount, rest string) {
	mount, rest, _ = strings.Cut(p, "/data/")
	return mount, rest
}

// ValidField reports whether f is a vault field name: [A-Za-z0-9._-]+, not "." or "..", at
// most MaxField characters (rules.FIELD_NAME, rules.is_field_name).
func ValidField(f string) bool { return len(f) <= MaxField && pathChars(f) }

// The environment variable name rules a plan may record (metadata.envNameRule; rules.py
// ENV_NAME_RULES, env_name_problem): the portable identifier [A-Za-z_][A-Za-z0-9_]*,
// Kubernetes' IsEnvVarName ([-._a-zA-Z][-._a-zA-Z0-9]*, not "." and not starting with "..")
// and its relaxed rule (IsRelaxedEnvVarName: any printable ASCII but '='). Under every rule a
// name must fit the env-map annotation: no ',', ';' or '=' (its separators), no '$' (the
// injector hands the mapping to the wrapper in an env value, where the kubelet expands
// $(...)) and no blank at either end (tokens are trimmed), at most MaxEnvName characters.
const (
	EnvNamesIdentifier = "identifier"
	EnvNamesKubernetes = "kubernetes"
	EnvNamesRelaxed    = "relaxed"
)

// ValidEnvName reports whether n is an environment variable name the annotations may carry:
// the widest rule any plan may record (EnvNamesRelaxed). The plan's own rule is the same or
// narrower, and protect writes env-map only from a validated plan; the wrapper sets the name
// in the child's environment as it is.
func ValidEnvName(n string) bool { return ValidEnvNameUnder(EnvNamesRelaxed, n) }

// ValidEnvNameUnder reports whether n is a mapped environment variable name under rule.
func ValidEnvNameUnder(rule, n string) bool {
	if n == "" || len(n) > MaxEnvName || n[0] == ' ' || n[len(n)-1] == ' ' {
		return false
	}
	if rule == EnvNamesKubernetes && (n == "." || strings.HasPrefix(n, "..")) {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c < ' ' || c > '~' || c == '=' || c == ',' || c == ';' || c == '$' {
			return false
		}
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		digit := c >= '0' && c <= '9'
		switch rule {
		case EnvNamesIdentifier:
			if !letter && (i == 0 || !digit) {
				return false
			}
		case EnvNamesKubernetes:
			if !letter && c != '-' && c != '.' && (i == 0 || !digit) {
				return false
			}
		case EnvNamesRelaxed:
		default:
			return false
		}
	}
	return true
}

// ValidRole reports whether r is a Kubernetes-auth role name the vault accepts: letters,
// digits, '.', '_', '-', starting with a letter or digit, at most MaxRole characters
// (rules.valid_role_name).
func ValidRole(r string) bool {
	if r == "" || len(r) > MaxRole || !isPathChar(r[0]) || r[0] == '.' || r[0] == '_' || r[0] == '-' {
		return false
	}
	for i := 0; i < len(r); i++ {
		if !isPathChar(r[i]) {
			return false
		}
	}
	return true
}

// ValidAudience reports whether a is a ServiceAccount token audience both the vault role
// (apply-plan) and the injector's projected token may carry: letters, digits and
// '.', '_', ':', '/', '@', '+', '=', '-', at most MaxAudience characters (rules.valid_audience).
func ValidAudience(a string) bool {
	return a != "" && len(a) <= MaxAudience &&
		strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@+=-") == ""
}

// NormaliseAuthMount turns `auth/kubernetes`, `/auth/k8s/eu/`, `k8s-eu` into the mount path
// (`kubernetes`, `k8s/eu`, `k8s-eu`), refusing unsafe, reserved or over-long mounts
// (contract.parse_auth_path).
func NormaliseAuthMount(name, value string) (string, error) {
	m := strings.TrimLeft(strings.TrimSpace(value), "/")
	m = strings.Trim(strings.TrimPrefix(m, "auth/"), "/")
	if !ValidMount(m) {
		return "", errorf(CodeBadAuthMount, "%s %s is not an auth mount path such as auth/kubernetes", name, quote(value, 80))
	}
	return m, nil
}

// reservedNamespaces are the names OpenBao refuses for a namespace (sys/namespaces answers
// "is a reserved path"); matched in any case, as reservedMount.
var reservedNamespaces = map[string]bool{"root": true, "sys": true, "audit": true, "auth": true, "cubbyhole": true, "identity": true}

// ValidNamespace reports whether ns (without surrounding slashes) is a vault namespace path:
// segments of the safe characters (mountSegment), none a reserved name in any case, at most
// MaxNamespace characters (rules.vault_namespace_problem).
func ValidNamespace(ns string) bool {
	if ns == "" || len(ns) > MaxNamespace {
		return false
	}
	for _, s := range strings.Split(ns, "/") {
		if !mountSegment(s) || reservedNamespaces[strings.ToLower(s)] {
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

// ValidateAddress checks a vault URL (contract.parse_vault_address, the same steps in the same
// order): no credentials (anything before an '@' in the authority); printable ASCII without
// blank, '?' or '#'; scheme http or https; a host of letters, digits, '.', '_', '-' (or an
// IPv6 literal in brackets); a port, when given, of digits up to 65535; every '%' of the path
// a valid escape. Returns it without a trailing slash.
func ValidateAddress(name, value string) (string, error) {
	a := strings.TrimSpace(value)
	scheme, rest, found := strings.Cut(a, "://")
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	if found && strings.Contains(authority, "@") {
		return "", errorf(CodeAddrCredentials, "%s must not carry credentials in the URL", name)
	}
	bad := func() error {
		return errorf(CodeBadAddr, "%s is not an http(s) URL with a host, e.g. https://vault.example.com:8200 (no query, fragment or blank)", name)
	}
	for i := 0; i < len(a); i++ {
		if a[i] <= ' ' || a[i] >= 0x7f || a[i] == '?' || a[i] == '#' {
			return "", bad()
		}
	}
	scheme = strings.ToLower(scheme)
	if !found || (scheme != "http" && scheme != "https") || !validAuthority(authority) || !validEscapes(rest[len(authority):]) {
		return "", bad()
	}
	if u, err := url.Parse(a); err != nil || u.Hostname() == "" { // the vault client parses it again
		return "", bad()
	}
	return strings.TrimRight(a, "/"), nil
}

// validAuthority: host[:port], the host a name of [A-Za-z0-9._-] or a bracketed IPv6 literal.
func validAuthority(s string) bool {
	host, port, hasPort := s, "", false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host = s[1:end]
		switch after := s[end+1:]; {
		case after == "":
		case after[0] == ':':
			port, hasPort = after[1:], true
		default:
			return false
		}
		if host == "" || strings.Trim(host, "0123456789abcdefABCDEF:.") != "" {
			return false
		}
	} else {
		if h, p, ok := strings.Cut(s, ":"); ok {
			host, port, hasPort = h, p, true
		}
		if host == "" || strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			return false
		}
	}
	if !hasPort {
		return true
	}
	if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
		return false
	}
	n := 0
	for i := 0; i < len(port); i++ {
		n = n*10 + int(port[i]-'0')
	}
	return n <= 65535
}

// validEscapes: every '%' is followed by two hex digits.
func validEscapes(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
