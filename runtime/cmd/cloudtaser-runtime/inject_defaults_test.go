package main

import (
	"bytes"
	"strings"
	"testing"

	"cloudtaser/runtime/internal/contract"
)

// The cluster defaults reach the injector's configuration as given (inject.Config validates
// them); a bad one stops the injector at start with exit 2 and a line naming the flag.
func TestInjectDefaultFlags(t *testing.T) {
	args := append(append([]string{}, goodArgs...), "--default-vault-address", "https://vault:8200", "--default-auth-path", "auth/jwt-eu",
		"--default-auth-method", "jwt", "--default-vault-namespace", "eu/prod", "--jwt-token-expiration", "900")
	f, err := parseInjectFlags(args, envOf(goodEnv), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := contract.Defaults{Address: "https://vault:8200", AuthMount: "auth/jwt-eu", AuthMethod: "jwt", Namespace: "eu/prod"}
	if f.defaults != want || f.jwtTokenExpiration != 900 {
		t.Fatalf("parsed %+v %d", f.defaults, f.jwtTokenExpiration)
	}
	for _, bad := range [][]string{
		{"--default-vault-address", "https://other:8200"},
		{"--default-auth-method", "oidc"},
		{"--default-vault-namespace", "a b"},
		{"--jwt-token-expiration", "60"},
	} {
		var stderr bytes.Buffer
		code := injectMain(append(append([]string{}, goodArgs...), bad...), envOf(goodEnv), &stderr)
		if code != 2 || !strings.Contains(stderr.String(), bad[0]) {
			t.Errorf("%v: exit %d, %q", bad, code, stderr.String())
		}
	}
}
