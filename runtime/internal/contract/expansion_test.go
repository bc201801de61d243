package contract

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

type expansionVectors struct {
	Vars    map[string]string `json:"vars"`
	Strings []struct {
		Name     string `json:"name"`
		Input    string `json:"input"`
		Expected string `json:"expected"`
	} `json:"strings"`
	Env []struct {
		Name     string            `json:"name"`
		Context  map[string]string `json:"context"`
		Env      []struct{ Name, Value string }
		Expected map[string]string `json:"expected"`
	} `json:"env"`
}

func loadExpansionVectors(t *testing.T) expansionVectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "spec", "contract", "var-expansion.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v expansionVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Strings) < 20 || len(v.Env) < 5 {
		t.Fatalf("too few vectors: %d strings, %d env", len(v.Strings), len(v.Env))
	}
	return v
}

func TestExpansionVectorsStrings(t *testing.T) {
	v := loadExpansionVectors(t)
	lookup := func(name string) (string, bool) { s, ok := v.Vars[name]; return s, ok }
	for _, c := range v.Strings {
		if got := Expand(c.Input, lookup); got != c.Expected {
			t.Errorf("%s: Expand(%q) = %q, want %q", c.Name, c.Input, got, c.Expected)
		}
		// escaped, any string comes back unchanged, whatever is defined
		if got := Expand(EscapeExpansion(c.Input), lookup); got != c.Input {
			t.Errorf("%s: escaped %q came back as %q", c.Name, c.Input, got)
		}
	}
}

func TestExpansionVectorsEnvOrder(t *testing.T) {
	v := loadExpansionVectors(t)
	for _, c := range v.Env {
		env := make([]EnvVar, len(c.Env))
		for i, e := range c.Env {
			env[i] = EnvVar{Name: e.Name, Value: e.Value}
		}
		got := map[string]string{}
		for _, e := range ExpandEnv(c.Context, env) {
			got[e.Name] = e.Value
		}
		if len(got) != len(c.Expected) {
			t.Errorf("%s: got %v, want %v", c.Name, got, c.Expected)
		}
		for k, want := range c.Expected {
			if got[k] != want {
				t.Errorf("%s: %s = %q, want %q", c.Name, k, got[k], want)
			}
		}
	}
}

func TestReferencesAreWhatExpandLooksUp(t *testing.T) {
	got := References("$$(A) $(B) $(C$(D)) $(E $($()")
	want := []string{"B", "C$(D", "E $($("}
	if len(got) != len(want) {
		t.Fatalf("References = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("References = %q, want %q", got, want)
		}
	}
}
