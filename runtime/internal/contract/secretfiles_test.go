package contract

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSecretFilesVectors(t *testing.T) {
	for _, c := range loadVectors(t, "secret-files.json") {
		t.Run(c.Name, func(t *testing.T) {
			var in struct {
				Value *string `json:"value"`
			}
			if err := json.Unmarshal(c.Input, &in); err != nil || in.Value == nil {
				t.Fatalf("input.value: %v", err)
			}
			vols, err := ParseSecretFiles(AnnotationSecretFiles, *in.Value)
			if vols == nil {
				vols = []FileVolume{}
			}
			checkOutcome(t, c, map[string]any{"volumes": vols}, err, false)
			if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
				t.Fatal("a message repeats a value")
			}
		})
	}
}

// The per-volume file limit cannot be reached through a value within the byte limit, so the
// vectors cannot show it: checked here on one volume directly.
func TestSecretFilesTooManyInOneVolume(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"volume":"v","defaultMode":420,"files":[`)
	for i := range MaxFilesPerVolume + 1 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"file":"f` + strings.Repeat("x", i%7) + `","key":"k","path":"s/data/x"}`)
	}
	b.WriteString(`]}`)
	_, err := parseFileVolume("v", json.RawMessage(b.String()))
	if e, ok := err.(*Error); !ok || e.Code != CodeTooManyFiles {
		t.Fatalf("want %s, got %v", CodeTooManyFiles, err)
	}
}
