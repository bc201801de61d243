package registry

// The shared vectors spec/contract/registry-*.json, which tests/unit/test_registry_vectors.py
// runs against the Python client of `target protect --pin-entrypoints`: one rule set for
// references, the platform entry of an index and mirrors, in both languages.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type vectorFile[I, E any] struct {
	FormatVersion int `json:"formatVersion"`
	Cases         []struct {
		Name   string `json:"name"`
		Input  I      `json:"input"`
		Expect *E     `json:"expect"`
		Error  string `json:"error"`
	} `json:"cases"`
}

func loadVectors[I, E any](t *testing.T, file string) vectorFile[I, E] {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(here), "..", "..", "..", "spec", "contract", file)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc vectorFile[I, E]
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.FormatVersion != 1 || len(doc.Cases) == 0 {
		t.Fatalf("%s: formatVersion %d, %d cases", file, doc.FormatVersion, len(doc.Cases))
	}
	for _, c := range doc.Cases {
		if (c.Expect == nil) == (c.Error == "") {
			t.Fatalf("%s: case %q needs exactly one of expect and error", file, c.Name)
		}
	}
	return doc
}

// dockerHub writes go-containerregistry's name of Docker Hub as the vectors do.
func dockerHub(registry string) string {
	if registry == name.DefaultRegistry {
		return "docker.io"
	}
	return registry
}

func TestReferenceVectors(t *testing.T) {
	type expect struct {
		Registry   string `json:"registry"`
		Repository string `json:"repository"`
		Reference  string `json:"reference"`
	}
	doc := loadVectors[struct{ Image string }, expect](t, "registry-references.json")
	r := newResolver(t, Options{})
	for _, c := range doc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			ref, _, err := r.reference(c.Input.Image)
			if c.Error != "" {
				if kind(err) != c.Error {
					t.Fatalf("%q: got %v, want %s", c.Input.Image, err, c.Error)
				}
				return
			}
			if err != nil {
				t.Fatalf("%q: %v", c.Input.Image, err)
			}
			got := expect{dockerHub(ref.Context().RegistryStr()), ref.Context().RepositoryStr(), ref.Identifier()}
			if got != *c.Expect {
				t.Fatalf("%q: got %+v, want %+v", c.Input.Image, got, *c.Expect)
			}
		})
	}
}

func TestPlatformVectors(t *testing.T) {
	type input struct {
		Platform  Platform        `json:"platform"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	doc := loadVectors[input, struct{ Digest string }](t, "registry-platforms.json")
	for _, c := range doc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			got, ok := choose(c.Input.Manifests, c.Input.Platform.withDefaults())
			switch {
			case c.Error != "" && ok:
				t.Fatalf("chose %s, want %s", got.Digest, c.Error)
			case c.Error == "" && !ok:
				t.Fatalf("chose nothing, want %s", c.Expect.Digest)
			case c.Error == "" && got.Digest.String() != c.Expect.Digest:
				t.Fatalf("chose %s, want %s", got.Digest, c.Expect.Digest)
			}
		})
	}
}

func TestMirrorVectors(t *testing.T) {
	type input struct {
		Mirrors map[string]string `json:"mirrors"`
		Image   string            `json:"image"`
	}
	type expect struct {
		Accepted  bool     `json:"accepted"`
		Reference string   `json:"reference"`
		PlainHTTP []string `json:"plainHTTP"`
	}
	doc := loadVectors[input, expect](t, "registry-mirrors.json")
	for _, c := range doc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			r, err := New(Options{Mirrors: c.Input.Mirrors})
			if c.Error != "" {
				if err == nil {
					t.Fatalf("%v accepted, want %s", c.Input.Mirrors, c.Error)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %v", c.Input.Mirrors, err)
			}
			if c.Input.Image == "" {
				return
			}
			ref, plain, err := r.reference(c.Input.Image)
			if err != nil {
				t.Fatalf("%q: %v", c.Input.Image, err)
			}
			hosts := []string{}
			for h := range plain {
				hosts = append(hosts, h)
			}
			sort.Strings(hosts)
			if ref.Name() != c.Expect.Reference || !reflect.DeepEqual(hosts, c.Expect.PlainHTTP) {
				t.Fatalf("%q: got %s %v, want %s %v", c.Input.Image, ref.Name(), hosts, c.Expect.Reference, c.Expect.PlainHTTP)
			}
		})
	}
}
