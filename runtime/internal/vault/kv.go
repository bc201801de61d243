package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Login is the result of a login: the token (never printed) and its lease.
type Login struct {
	Token     string
	TTL       time.Duration
	Renewable bool
}

// LoginKubernetes logs in on auth/<mount>/login with a ServiceAccount JWT and sets the token.
// The jwt auth method takes the same body ({role, jwt}), so it logs in through here too.
func (c *Client) LoginKubernetes(ctx context.Context, mount, role, jwt string) (*Login, error) {
	reply, err := c.Do(ctx, "POST", "auth/"+mount+"/login", map[string]string{"role": role, "jwt": jwt})
	if err != nil {
		return nil, err
	}
	l, err := authOf(reply)
	if err != nil {
		return nil, fmt.Errorf("login on auth/%s with role %q: %w", mount, role, err)
	}
	c.token = l.Token
	return l, nil
}

func authOf(reply *Reply) (*Login, error) {
	auth, _ := reply.Body["auth"].(map[string]any)
	tok, _ := auth["client_token"].(string)
	if tok == "" {
		return nil, errors.New("the vault returned no client token")
	}
	l := &Login{Token: tok}
	if n, ok := auth["lease_duration"].(json.Number); ok {
		if s, err := n.Int64(); err == nil && s > 0 {
			l.TTL = time.Duration(s) * time.Second
		}
	}
	l.Renewable, _ = auth["renewable"].(bool)
	return l, nil
}

// RenewSelf renews the client's token; returns the new lease.
func (c *Client) RenewSelf(ctx context.Context) (*Login, error) {
	reply, err := c.Do(ctx, "POST", "auth/token/renew-self", map[string]any{})
	if err != nil {
		return nil, err
	}
	return authOf(reply)
}

// LookupSelf returns the lease of the client's token (auth/token/lookup-self).
func (c *Client) LookupSelf(ctx context.Context) (*Login, error) {
	reply, err := c.Do(ctx, "GET", "auth/token/lookup-self", nil)
	if err != nil {
		return nil, err
	}
	data, _ := reply.Body["data"].(map[string]any)
	l := &Login{Token: c.token}
	if n, ok := data["ttl"].(json.Number); ok {
		if s, err := n.Int64(); err == nil && s > 0 {
			l.TTL = time.Duration(s) * time.Second
		}
	}
	l.Renewable, _ = data["renewable"].(bool)
	return l, nil
}

// RevokeSelf revokes the client's token and forgets it.
func (c *Client) RevokeSelf(ctx context.Context) error {
	if c.token == "" {
		return nil
	}
	_, err := c.Do(ctx, "POST", "auth/token/revoke-self", nil)
	if err == nil {
		c.token = ""
	}
	return err
}

// Forget drops the token without revoking it (a token that was given, not created by us).
func (c *Client) Forget() { c.token = "" }

// Missing reasons of a KV v2 secret.
var (
	ErrNeverWritten = errors.New("does not exist in the vault (never written)")
	ErrDeleted      = errors.New("has its latest version deleted")
	ErrDestroyed    = errors.New("has its latest version destroyed")
)

// Secret is one KV v2 secret version. Values are decoded with json.Number for numbers.
type Secret struct {
	Data    map[string]any
	Version int64
}

// ReadKV2 reads `<mount>/data/<rest>`: the latest version. A missing, deleted or destroyed
// latest version is ErrNeverWritten, ErrDeleted or ErrDestroyed; a denial is an *Error 403.
func (c *Client) ReadKV2(ctx context.Context, mount, rest string) (*Secret, error) {
	reply, err := c.Do(ctx, "GET", mount+"/data/"+rest, nil, 404)
	if err != nil {
		return nil, err
	}
	data, _ := reply.Body["data"].(map[string]any)
	meta, _ := data["metadata"].(map[string]any)
	if reply.Status == 404 {
		if meta == nil {
			return nil, ErrNeverWritten
		}
		if d, _ := meta["destroyed"].(bool); d {
			return nil, ErrDestroyed
		}
		return nil, ErrDeleted
	}
	values, ok := data["data"].(map[string]any)
	if !ok {
		if meta != nil {
			if d, _ := meta["destroyed"].(bool); d {
				return nil, ErrDestroyed
			}
			if dt, _ := meta["deletion_time"].(string); dt != "" {
				return nil, ErrDeleted
			}
		}
		return nil, errors.New("the vault's answer has no data (is this a KV v2 mount?)")
	}
	s := &Secret{Data: values}
	if n, ok := meta["version"].(json.Number); ok {
		s.Version, _ = n.Int64()
	}
	return s, nil
}

// CurrentVersion reads `<mount>/metadata/<rest>` and returns current_version (no values are
// read). A denial is an *Error 403 (the tenant policy may grant only data/ reads).
func (c *Client) CurrentVersion(ctx context.Context, mount, rest string) (int64, error) {
	reply, err := c.Do(ctx, "GET", mount+"/metadata/"+rest, nil, 404)
	if err != nil {
		return 0, err
	}
	if reply.Status == 404 {
		return 0, ErrNeverWritten
	}
	data, _ := reply.Body["data"].(map[string]any)
	n, ok := data["current_version"].(json.Number)
	if !ok {
		return 0, errors.New("the vault's metadata has no current_version")
	}
	return n.Int64()
}
