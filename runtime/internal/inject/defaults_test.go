package inject

import (
	"strings"
	"testing"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/webhook"
)

func defaultsConfig(d contract.Defaults) *Config {
	c := testConfig()
	c.Defaults = d
	return c
}

// A default must itself pass the rules its annotation passes, and a default address must be
// on the allow-list: otherwise the injector does not start (Validate names the flag).
func TestInvalidDefaultsAreRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		d    contract.Defaults
		exp  int64
		flag string
	}{
		{contract.Defaults{Address: "https://elsewhere.example:8200"}, 0, "--default-vault-address"},
		{contract.Defaults{Address: "https://user:pw@" + strings.TrimPrefix(testAddr, "https://")}, 0, "--default-vault-address"},
		{contract.Defaults{AuthMount: "auth/sys"}, 0, "--default-auth-path"},
		{contract.Defaults{AuthMethod: "token"}, 0, "--default-auth-method"},
		{contract.Defaults{Namespace: "eu/../prod"}, 0, "--default-vault-namespace"},
		{contract.Defaults{Namespace: "root"}, 0, "--default-vault-namespace"},
		{contract.Defaults{}, 599, "--jwt-token-expiration"},
		{contract.Defaults{}, MaxTokenExpiration + 1, "--jwt-token-expiration"},
	} {
		c := defaultsConfig(tc.d)
		c.JWTTokenExpiration = tc.exp
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%+v exp %d: want an error naming %s, got %v", tc.d, tc.exp, tc.flag, err)
		}
		// and every pod is refused, none mutated with a bad configuration
		denied(t, c, testPod(annotations()), webhook.ReasonInternal)
	}
}

// The defaults are normalised like the annotations (address case and slash, auth/ prefix).
func TestDefaultsAreNormalised(t *testing.T) {
	c := defaultsConfig(contract.Defaults{Address: testAddr + "/", AuthMount: "/auth/k8s/eu/", AuthMethod: " JWT ", Namespace: "/eu/prod/"})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := contract.Defaults{Address: testAddr, AuthMount: "k8s/eu", AuthMethod: "jwt", Namespace: "eu/prod"}
	if c.Defaults != want || c.JWTTokenExpiration != DefaultJWTTokenExpiration {
		t.Fatalf("got %+v, %d", c.Defaults, c.JWTTokenExpiration)
	}
}

// A pod that carries no cluster-specific annotation gets every default; the wrapper's own
// parser reads the injected env back to them; in jwt mode the token lives 600 s.
func TestDefaultsReachTheWrapper(t *testing.T) {
	ann := annotations()
	delete(ann, contract.AnnotationVaultAddress)
	c := defaultsConfig(contract.Defaults{Address: testAddr, AuthMount: "k8s-eu", AuthMethod: "jwt", Namespace: "eu/prod"})
	p := mutated(t, c, testPod(ann))
	got, err := contract.ResolveEnv(envOf(get(p, "spec", "containers", 0)), func(string) bool { return false })
	if err != nil {
		t.Fatalf("the wrapper refuses the injected env: %v", err)
	}
	if got.Address != testAddr || got.AuthMount != "k8s-eu" || got.AuthMethod != "jwt" || got.Namespace != "eu/prod" || got.Role != "payments" {
		t.Fatalf("wrapper config %v", got)
	}
	tok := get(p, "spec", "volumes", 1, "projected", "sources", 0, "serviceAccountToken", "expirationSeconds")
	if tok != float64(DefaultJWTTokenExpiration) {
		t.Fatalf("jwt token lifetime %v", tok)
	}
	// Without defaults the same pod is refused: nothing else supplied the address.
	denied(t, testConfig(), testPod(ann), webhook.ReasonBadAnnotations)
}

// An annotation wins over a default, but the address it names is judged by the allow-list.
func TestAnnotationsOverrideDefaultsWithinTheAllowList(t *testing.T) {
	c := defaultsConfig(contract.Defaults{Address: testAddr, AuthMethod: "jwt", Namespace: "eu"})
	p := mutated(t, c, testPod(annotations("cloudtaser.io/vault-address", "http://vault.vault.svc:8200",
		"cloudtaser.io/vault-auth-method", "kubernetes", "cloudtaser.io/vault-namespace", "team-a")))
	env := envOf(get(p, "spec", "containers", 0))
	if env[contract.EnvAddr] != "http://vault.vault.svc:8200" || env[contract.EnvAuthMethod] != "kubernetes" || env[contract.EnvNamespace] != "team-a" {
		t.Fatalf("env %v", env)
	}
	if tok := get(p, "spec", "volumes", 1, "projected", "sources", 0, "serviceAccountToken", "expirationSeconds"); tok != float64(TokenExpiration) {
		t.Fatalf("kubernetes-mode token lifetime %v", tok)
	}
	denied(t, c, testPod(annotations("cloudtaser.io/vault-address", "https://evil.example:8200")), webhook.ReasonAddressNotAllowed)
}
