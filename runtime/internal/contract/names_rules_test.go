package contract

import (
	"strings"
	"testing"
)

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

// Issue 30: envFrom keys that are not C identifiers (tls.crt) reach the child's environment
// as the kubelet passes them: the env-map carries them and ChildEnv sets them unchanged; what
// the annotation cannot carry (its separators, '$') is refused.
func TestEnvMapCarriesTheClustersNamesIntoTheChildEnv(t *testing.T) {
	secrets, err := ParseMapping("paths", "secret/data/web/tls", "map", "tls.crt=tls.crt,ca.crt=ca.crt,key=1st key")
	if err != nil {
		t.Fatal(err)
	}
	var vars []EnvVar
	for _, f := range secrets[0].Fields {
		vars = append(vars, EnvVar{Name: f.Env, Value: "v-" + f.Field})
	}
	got := ChildEnv([]string{"PATH=/bin", "tls.crt=inherited"}, vars)
	want := []string{"PATH=/bin", "tls.crt=v-tls.crt", "ca.crt=v-ca.crt", "1st key=v-key"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("child env %q, want %q", got, want)
	}
	for _, bad := range []string{"k=a$b", "k=a\tb", "k=ä"} {
		if _, err := ParseEnvMap("map", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
