package contract

import (
	"encoding/json"
	"testing"
)

// spec/contract/rules.json: the rule book's names, lengths, mounts and vault addresses
// (generated from cloudtaser/plan/rules.py by tests/unit/test_contract_rules.py), against the
// Go rules. A limit or pattern changed on the Python side fails here until names.go follows.
func TestRulesVectors(t *testing.T) {
	checks := map[string]func(string) bool{
		"dns-label":       DNSLabel,
		"dns-subdomain":   DNSSubdomain,
		"env-name":        ValidEnvName,
		"field-name":      ValidField,
		"role-name":       ValidRole,
		"vault-path":      ValidVaultPath,
		"mount":           ValidMount,
		"audience":        ValidAudience,
		"vault-namespace": ValidNamespace,
	}
	// the plan's narrower env-name rules (metadata.envNameRule); "env-name" is the widest,
	// what the annotations carry
	checks["env-name-identifier"] = func(v string) bool { return ValidEnvNameUnder(EnvNamesIdentifier, v) }
	checks["env-name-kubernetes"] = func(v string) bool { return ValidEnvNameUnder(EnvNamesKubernetes, v) }
	for _, c := range loadVectors(t, "rules.json") {
		t.Run(c.Name, func(t *testing.T) {
			var in struct {
				Rule  string `json:"rule"`
				Value string `json:"value"`
			}
			if err := json.Unmarshal(c.Input, &in); err != nil {
				t.Fatal(err)
			}
			var got any
			var err error
			switch in.Rule {
			case "auth-mount":
				var m string
				m, err = NormaliseAuthMount(AnnotationAuthPath, in.Value)
				got = map[string]any{"mount": m}
			case "vault-address":
				var a string
				a, err = ValidateAddress(AnnotationVaultAddress, in.Value)
				got = map[string]any{"address": a}
			default:
				check, ok := checks[in.Rule]
				if !ok {
					t.Fatalf("unknown rule %q", in.Rule)
				}
				got = map[string]any{"valid": check(in.Value)}
			}
			checkOutcome(t, c, got, err, false)
		})
	}
}

// The injector's own names (its pod, webhook and SANs) are host names: subdomains whose every
// label is a DNS label.
func TestHostName(t *testing.T) {
	for s, want := range map[string]bool{
		"cloudtaser-injector.cloudtaser-system.svc": true,
		"inject.cloudtaser.io":                      true,
		"a..b":                                      false,
		"a.-b":                                      false,
		"a-.b":                                      false,
		"Upper.case":                                false,
		string(make([]byte, 64)):                    false,
	} {
		if HostName(s) != want {
			t.Errorf("HostName(%q) = %v", s, !want)
		}
	}
	label := "a"
	for len(label) < 64 {
		label += "a"
	}
	if HostName(label+".b") || !DNSSubdomain(label+".b") {
		t.Error("a label over 63 characters: a subdomain, not a host name")
	}
}
