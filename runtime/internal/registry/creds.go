package registry

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Pull secret types and keys (Kubernetes).
const (
	SecretTypeDockerConfigJSON = "kubernetes.io/dockerconfigjson"
	SecretTypeDockercfg        = "kubernetes.io/dockercfg"
	KeyDockerConfigJSON        = ".dockerconfigjson"
	KeyDockercfg               = ".dockercfg"
)

// dockerAuth is one registry entry of a pull secret. Never printed.
type dockerAuth struct {
	host string // canonical registry host
	cfg  authn.AuthConfig
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

var errBadSecret = errors.New("is not a readable docker config (kubernetes.io/dockerconfigjson with .dockerconfigjson, or kubernetes.io/dockercfg with .dockercfg)")

// parseSecret reads the registry entries of a pull secret. The error never shows content.
func parseSecret(s *Secret) ([]dockerAuth, error) {
	var entries map[string]authEntry
	switch s.Type {
	case SecretTypeDockerConfigJSON:
		var doc struct {
			Auths map[string]authEntry `json:"auths"`
		}
		if json.Unmarshal(s.Data[KeyDockerConfigJSON], &doc) != nil {
			return nil, errBadSecret
		}
		entries = doc.Auths
	case SecretTypeDockercfg:
		if json.Unmarshal(s.Data[KeyDockercfg], &entries) != nil {
			return nil, errBadSecret
		}
	default:
		return nil, errBadSecret
	}
	var out []dockerAuth
	// Deterministic order within one secret: keys sorted.
	for _, k := range sortedKeys(entries) {
		e := entries[k]
		cfg := authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, errBadSecret
			}
			u, p, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, errBadSecret
			}
			cfg.Username, cfg.Password = u, p
		}
		out = append(out, dockerAuth{host: canonicalHost(k), cfg: cfg})
	}
	return out, nil
}

func sortedKeys(m map[string]authEntry) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
