package contract

import "testing"

// The plan rule book's mount and path rules, as the wrapper applies them (the refusals are
// in spec/contract/wrapper-env.json; these are the names every side must accept).
func TestGoodMountsAndPathsAreAccepted(t *testing.T) {
	for _, m := range []string{"kubernetes", "k8s/eu-prod", "tokens", "sys1"} {
		got, err := NormaliseAuthMount(EnvAuthMountPath, "auth/"+m)
		if err != nil || got != m {
			t.Errorf("auth/%s: got %q, %v", m, got, err)
		}
	}
	for _, p := range []string{"secret/data/t/a.b", "kv-eu/data/payments/db", "tokens/data/x"} {
		if !ValidVaultPath(p) {
			t.Errorf("%s refused", p)
		}
	}
	for _, p := range []string{"SYS/data/x", "Token/data/x", "secret/data/.db", "secret/metadata/x", "secret/data/a/../b"} {
		if ValidVaultPath(p) {
			t.Errorf("%s accepted", p)
		}
	}
}
