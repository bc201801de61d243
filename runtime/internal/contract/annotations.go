package contract

import "strings"

// Pod-template annotation keys written by `cloudtaser target protect`
// (cloudtaser/annotations.py is the Python twin).
const (
	AnnotationInject       = "cloudtaser.io/inject"
	AnnotationVaultAddress = "cloudtaser.io/vault-address"
	AnnotationVaultRole    = "cloudtaser.io/vault-role"
	AnnotationSecretPaths  = "cloudtaser.io/secret-paths"
	AnnotationEnvMap       = "cloudtaser.io/env-map"
	AnnotationAuthPath     = "cloudtaser.io/vault-auth-path"
	// AnnotationAuthMethod: kubernetes (default) or jwt (issue 31).
	AnnotationAuthMethod = "cloudtaser.io/vault-auth-method"
	// AnnotationVaultNamespace: the vault namespace sent as X-Vault-Namespace (issue 31).
	AnnotationVaultNamespace = "cloudtaser.io/vault-namespace"
	// AnnotationSecretFiles: the Secrets read as files, compact JSON (issue 29,
	// docs/secret-files.md).
	AnnotationSecretFiles = "cloudtaser.io/secret-files"
)

// DefaultAuthMount is the Kubernetes auth mount when no vault-auth-path annotation is set.
const DefaultAuthMount = "kubernetes"

// Auth methods a pod may log in with (cloudtaser.io/vault-auth-method). Both send the same
// login body, POST auth/<mount>/login {role, jwt}; they differ in how the vault checks the
// token (TokenReview against the cluster, or the cluster's public keys offline).
const (
	AuthKubernetes = "kubernetes"
	AuthJWT        = "jwt"
)

// Annotations is what a pod's annotations ask the runtime to do.
type Annotations struct {
	Inject     bool
	Address    string
	Role       string
	AuthMount  string
	AuthMethod string // AuthKubernetes or AuthJWT
	Namespace  string // vault namespace without surrounding slashes; "" = none
	Secrets    []Secret
	Files      []FileVolume // cloudtaser.io/secret-files (secretfiles.go)
}

// Defaults are the cluster's defaults an injector applies to a pod whose annotation is
// absent (cloudtaser-runtime inject --default-*; docs/injector.md, "Cluster defaults"): the
// vault address, auth mount (without auth/), auth method and vault namespace. Empty fields
// leave the built-in default (no address, auth/kubernetes, kubernetes, no namespace). The
// injector validates them once at start (ValidateDefaults); an annotation always wins.
type Defaults struct {
	Address    string `json:"address,omitempty"`
	AuthMount  string `json:"authMount,omitempty"`
	AuthMethod string `json:"authMethod,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
}

// ValidateDefaults checks and normalises cluster defaults with the annotations' own rules;
// what names the flag each field came from (e.g. "--default-").
func ValidateDefaults(d Defaults, what func(field string) string) (Defaults, error) {
	var err error
	if d.Address != "" {
		if d.Address, err = ValidateAddress(what("vault-address"), d.Address); err != nil {
			return d, err
		}
	}
	if d.AuthMount != "" {
		if d.AuthMount, err = NormaliseAuthMount(what("auth-path"), d.AuthMount); err != nil {
			return d, err
		}
	}
	if d.AuthMethod != "" {
		if d.AuthMethod, err = ParseAuthMethod(what("auth-method"), d.AuthMethod); err != nil {
			return d, err
		}
	}
	if d.Namespace != "" {
		if d.Namespace, err = ParseNamespace(what("vault-namespace"), d.Namespace); err != nil {
			return d, err
		}
	}
	return d, nil
}

// ParseAuthMethod reads an auth method annotation: kubernetes or jwt (blanks and case
// ignored; contract.parse_auth_method).
func ParseAuthMethod(name, value string) (string, error) {
	m := strings.ToLower(strings.TrimSpace(value))
	if m != AuthKubernetes && m != AuthJWT {
		return "", errorf(CodeBadAuthMethod, "%s must be kubernetes or jwt, not %s", name, quote(value, 20))
	}
	return m, nil
}

// ParseNamespace reads a vault namespace path (surrounding blanks and slashes ignored;
// contract.parse_vault_namespace): segments of the rule book's safe characters, none a name
// the vault reserves (ValidNamespace).
func ParseNamespace(name, value string) (string, error) {
	ns := strings.Trim(strings.TrimSpace(value), "/")
	if !ValidNamespace(ns) {
		return "", errorf(CodeBadNamespace, "%s %s is not a vault namespace path such as team-a or eu/prod", name, quote(value, 80))
	}
	return ns, nil
}

// ParseAnnotations validates the cloudtaser.io/* annotations of a pod. A pod that does not
// opt in (inject false or absent) yields Inject=false and nothing else is checked.
func ParseAnnotations(a map[string]string) (Annotations, error) {
	return ParseAnnotationsWith(a, Defaults{})
}

// ParseAnnotationsWith is ParseAnnotations with an injector's cluster defaults (validated by
// ValidateDefaults) standing in for the absent vault-address, vault-auth-path,
// vault-auth-method and vault-namespace annotations. A blank address, method or namespace
// counts as absent; a present annotation is validated and wins over the default.
func ParseAnnotationsWith(a map[string]string, d Defaults) (Annotations, error) {
	inject, err := ParseBool(AnnotationInject, a[AnnotationInject])
	if err != nil || !inject {
		return Annotations{}, err
	}
	out := Annotations{Inject: true, Address: d.Address, AuthMethod: AuthKubernetes, Namespace: d.Namespace}
	if addr := a[AnnotationVaultAddress]; strings.TrimSpace(addr) != "" {
		if out.Address, err = ValidateAddress(AnnotationVaultAddress, addr); err != nil {
			return Annotations{}, err
		}
	}
	if out.Address == "" {
		return Annotations{}, errorf(CodeMissingAddr, "%s is not set and the injector has no default vault address: the wrapper would not know the vault address", AnnotationVaultAddress)
	}
	out.Role = strings.TrimSpace(a[AnnotationVaultRole])
	if out.Role == "" {
		return Annotations{}, errorf(CodeMissingRole, "%s is not set (the vault role of this workload)", AnnotationVaultRole)
	}
	if !ValidRole(out.Role) {
		return Annotations{}, errorf(CodeBadRole, "%s %s is not a valid role name", AnnotationVaultRole, quote(out.Role, 80))
	}
	out.AuthMount = DefaultAuthMount
	if d.AuthMount != "" {
		out.AuthMount = d.AuthMount
	}
	if v, ok := a[AnnotationAuthPath]; ok {
		if out.AuthMount, err = NormaliseAuthMount(AnnotationAuthPath, v); err != nil {
			return Annotations{}, err
		}
	}
	if d.AuthMethod != "" {
		out.AuthMethod = d.AuthMethod
	}
	if v := a[AnnotationAuthMethod]; strings.TrimSpace(v) != "" {
		if out.AuthMethod, err = ParseAuthMethod(AnnotationAuthMethod, v); err != nil {
			return Annotations{}, err
		}
	}
	if v := a[AnnotationVaultNamespace]; strings.TrimSpace(v) != "" {
		if out.Namespace, err = ParseNamespace(AnnotationVaultNamespace, v); err != nil {
			return Annotations{}, err
		}
	}
	if out.Files, err = ParseSecretFiles(AnnotationSecretFiles, a[AnnotationSecretFiles]); err != nil {
		return Annotations{}, err
	}
	if strings.TrimSpace(a[AnnotationSecretPaths]) == "" && len(out.Files) == 0 {
		return Annotations{}, errorf(CodeMissingPaths, "%s is not set: there are no secrets to fetch", AnnotationSecretPaths)
	}
	out.Secrets, err = ParseMapping(AnnotationSecretPaths, a[AnnotationSecretPaths], AnnotationEnvMap, a[AnnotationEnvMap])
	if err != nil {
		return Annotations{}, err
	}
	return out, nil
}
