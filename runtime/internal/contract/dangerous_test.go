package contract

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// The Go list is spec/contract/dangerous-env.json, the list the plan rule book checks too:
// same names, prefixes, reserved prefixes, and every case.
func TestDangerousEnvMatchesTheSharedList(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(specDir(t), "dangerous-env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		FormatVersion int      `json:"formatVersion"`
		Names         []string `json:"names"`
		Prefixes      []string `json:"prefixes"`
		Reserved      []string `json:"reserved"`
		Cases         []struct {
			Env       string `json:"env"`
			Dangerous bool   `json:"dangerous"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.FormatVersion != 1 || len(doc.Cases) == 0 {
		t.Fatalf("dangerous-env.json: %v (formatVersion %d, %d cases)", err, doc.FormatVersion, len(doc.Cases))
	}
	var names []string
	for n := range DangerousNames {
		names = append(names, n)
	}
	sort.Strings(names)
	want := append([]string(nil), doc.Names...)
	sort.Strings(want)
	if !reflect.DeepEqual(names, want) {
		t.Errorf("names: Go has %v, the shared list %v", names, want)
	}
	if !reflect.DeepEqual(DangerousPrefixes, doc.Prefixes) {
		t.Errorf("prefixes: Go has %v, the shared list %v", DangerousPrefixes, doc.Prefixes)
	}
	if !reflect.DeepEqual(ReservedPrefixes, doc.Reserved) {
		t.Errorf("reserved: Go has %v, the shared list %v", ReservedPrefixes, doc.Reserved)
	}
	for _, c := range doc.Cases {
		if got := Dangerous(c.Env); got != c.Dangerous {
			t.Errorf("%s: dangerous %v, the shared list says %v", c.Env, got, c.Dangerous)
		}
	}
}

// Every reserved name is dangerous, and no acceptance lets one through.
func TestReservedTargetsAreNeverAccepted(t *testing.T) {
	for _, name := range append(append([]string{}, OwnedEnv...), TuningEnv...) {
		if !Reserved(name) || !Dangerous(name) {
			t.Errorf("%s: reserved %v, dangerous %v", name, Reserved(name), Dangerous(name))
		}
		s := []Secret{{Path: "secret/data/x", Fields: []FieldEnv{{Field: "f", Env: name}}}}
		err := CheckTargets("env-map", s, []string{name})
		if e, ok := err.(*Error); !ok || e.Code != CodeReservedEnv || !strings.Contains(e.Msg, name) {
			t.Errorf("%s accepted: %v", name, err)
		}
	}
}

// The shared annotation vectors for dangerous targets: what protect writes (env-map and
// accept-dangerous-env) and what the injector makes of it. Go only: the Python side's rule
// book reads the plan's acceptedDangerousEnv, not this annotation.
func TestDangerousEnvAnnotationVectors(t *testing.T) {
	for _, c := range loadVectors(t, "dangerous-env-annotations.json") {
		t.Run(c.Name, func(t *testing.T) {
			var in struct {
				Annotations map[string]string `json:"annotations"`
			}
			if err := json.Unmarshal(c.Input, &in); err != nil {
				t.Fatal(err)
			}
			a, err := ParseAnnotations(in.Annotations)
			var accepted []string
			if err == nil {
				accepted, err = ParseAcceptDangerous(AnnotationAcceptDangerousEnv, in.Annotations[AnnotationAcceptDangerousEnv])
			}
			if err == nil {
				err = CheckTargets(AnnotationEnvMap, a.Secrets, accepted)
			}
			if accepted == nil {
				accepted = []string{}
			}
			checkOutcome(t, c, map[string]any{"mapping": mappingJSON(a.Secrets), "accepted": accepted}, err, false)
		})
	}
}
