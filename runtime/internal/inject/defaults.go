package inject

import (
	"fmt"

	"cloudtaser/runtime/internal/contract"
)

// Cluster defaults and the jwt token lifetime (issue 31; docs/injector.md, "Cluster
// defaults").
//
// An injector may carry the cluster's vault address, auth mount, auth method and vault
// namespace (`inject --default-vault-address`, `--default-auth-path`, `--default-auth-method`,
// `--default-vault-namespace`, which `cloudtaser target install` sets). A pod whose
// annotation is absent gets the default; a present annotation is validated and wins, and
// the resulting address is still judged by the --allowed-vault-address list. So one set of
// pod templates (inject label, role, secret paths, env map) serves every cluster, each
// injector filling in its own cluster's values.
//
// In jwt mode the vault checks the projected token offline with the cluster's public keys,
// without asking the API server whether the pod still exists: a stolen token stays valid
// until it expires. Its lifetime is therefore JWTTokenExpiration (default 600 s, the API
// server's minimum), not the 3600 s of kubernetes mode.

// Token lifetimes of the projected ServiceAccount token (expirationSeconds).
const (
	// DefaultJWTTokenExpiration: jwt mode, 10 minutes (--jwt-token-expiration).
	DefaultJWTTokenExpiration = 600
	// MinTokenExpiration: the API server refuses a shorter expirationSeconds.
	MinTokenExpiration = 600
	// MaxTokenExpiration: the API server refuses a longer one (2^32 seconds).
	MaxTokenExpiration = 1 << 32
)

// validateDefaults checks the defaults with the annotations' own rules; a default address
// must itself be on the allow-list (c.allowed is filled before).
func (c *Config) validateDefaults() error {
	d, err := contract.ValidateDefaults(c.Defaults, func(field string) string { return "--default-" + field })
	if err != nil {
		return err
	}
	if d.Address != "" && !c.allowed[canonAddress(d.Address)] {
		return fmt.Errorf("--default-vault-address %s is not one of the --allowed-vault-address values: a default must itself be allowed", clip(d.Address, 200))
	}
	c.Defaults = d
	if c.JWTTokenExpiration == 0 {
		c.JWTTokenExpiration = DefaultJWTTokenExpiration
	}
	if c.JWTTokenExpiration < MinTokenExpiration || c.JWTTokenExpiration > MaxTokenExpiration {
		return fmt.Errorf("--jwt-token-expiration %d must be between %d and %d seconds (the API server's limits for a projected token)",
			c.JWTTokenExpiration, MinTokenExpiration, int64(MaxTokenExpiration))
	}
	return nil
}

// tokenExpiration is the projected token's expirationSeconds for a pod's auth method.
func (c *Config) tokenExpiration(method string) int64 {
	if method == contract.AuthJWT {
		return c.JWTTokenExpiration
	}
	return TokenExpiration
}
