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

// Annotations is what a pod's annotations ask the runtime to do.
type Annotations struct {
	Inject    bool
	Address   string
	Role      string
	AuthMount string
	Secrets   []Secret
	Files     []FileVolume // cloudtaser.io/secret-files (secretfiles.go)
}

// ParseAnnotations validates the cloudtaser.io/* annotations of a pod. A pod that does not
// opt in (inject false or absent) yields Inject=false and nothing else is checked.
func ParseAnnotations(a map[string]string) (Annotations, error) {
	inject, err := ParseBool(AnnotationInject, a[AnnotationInject])
	if err != nil || !inject {
		return Annotations{}, err
	}
	out := Annotations{Inject: true}
	addr := a[AnnotationVaultAddress]
	if strings.TrimSpace(addr) == "" {
		return Annotations{}, errorf(CodeMissingAddr, "%s is not set: the wrapper would not know the vault address", AnnotationVaultAddress)
	}
	if out.Address, err = ValidateAddress(AnnotationVaultAddress, addr); err != nil {
		return Annotations{}, err
	}
	out.Role = strings.TrimSpace(a[AnnotationVaultRole])
	if out.Role == "" {
		return Annotations{}, errorf(CodeMissingRole, "%s is not set (the vault role of this workload)", AnnotationVaultRole)
	}
	if !ValidRole(out.Role) {
		return Annotations{}, errorf(CodeBadRole, "%s %s is not a valid role name", AnnotationVaultRole, quote(out.Role, 80))
	}
	out.AuthMount = DefaultAuthMount
	if v, ok := a[AnnotationAuthPath]; ok {
		if out.AuthMount, err = NormaliseAuthMount(AnnotationAuthPath, v); err != nil {
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
