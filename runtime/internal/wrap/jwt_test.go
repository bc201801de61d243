package wrap

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/vault"
)

// jwt mode logs in like kubernetes mode (POST auth/<mount>/login {role, jwt}, the JWT read
// from the token file), in the configured namespace (X-Vault-Namespace); the jwt method's
// refusals get a hint.
func TestJWTModeLogsInThroughTheMountInTheNamespace(t *testing.T) {
	type seen struct{ path, namespace, role, jwt string }
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		got = append(got, seen{r.URL.Path, r.Header.Get("X-Vault-Namespace"), body["role"], body["jwt"]})
		w.Header().Set("Content-Type", "application/json")
		if body["role"] == "other" {
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"errors":["error validating claims: claim \"/kubernetes.io/namespace\" does not match any associated bound claim values"]}`))
			return
		}
		_, _ = w.Write([]byte(`{"auth":{"client_token":"s.test","lease_duration":300,"renewable":true}}`))
	}))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("eyJhbGciOi.eyJzdWIiOi.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		contract.EnvAddr: srv.URL, contract.EnvAuthMethod: "jwt", contract.EnvAuthRole: "shop",
		contract.EnvAuthMountPath: "auth/jwt-eu", contract.EnvNamespace: "eu/prod",
		contract.EnvSecretPaths: "secret/data/shop/db", contract.EnvEnvMap: "pw=PW", contract.EnvSATokenPath: tokenFile,
	}
	cfg, err := contract.ResolveEnv(env, func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Options{Address: cfg.Address, Namespace: cfg.Namespace, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := login(context.Background(), c, &cfg); err != nil {
		t.Fatalf("login: %v", err)
	}
	want := seen{"/v1/auth/jwt-eu/login", "eu/prod", "shop", "eyJhbGciOi.eyJzdWIiOi.c2ln"}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("requests %+v, want %+v", got, want)
	}
	cfg.Role = "other"
	_, err = login(context.Background(), c, &cfg)
	if err == nil || !strings.Contains(err.Error(), "does not bind this pod's namespace/ServiceAccount (jwt)") {
		t.Fatalf("refusal: %v", err)
	}
	if strings.Contains(err.Error(), "eyJ") {
		t.Fatal("the JWT is in the message")
	}
}
