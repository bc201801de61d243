package main

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Pushes a layout written by build-image to go-containerregistry's own registry
// implementation (in memory, loopback) and pulls the index back by tag.
func TestPushToARegistry(t *testing.T) {
	dir := t.TempDir()
	for _, arch := range []string{"amd64", "arm64"} {
		_ = os.WriteFile(filepath.Join(dir, arch), []byte("binary "+arch), 0o755)
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(gobin, "run", "./tools/build-image", "-out", filepath.Join(dir, "layout"),
		"amd64="+filepath.Join(dir, "amd64"), "arm64="+filepath.Join(dir, "arm64"))
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("build-image: %v", err)
	}
	want := strings.TrimSpace(string(out))
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/cloudtaser/runtime:test"
	got, err := Push(filepath.Join(dir, "layout"), ref)
	if err != nil || got != want {
		t.Fatalf("push: %s %v (want %s)", got, err, want)
	}
	r, _ := name.ParseReference(ref)
	desc, err := remote.Get(r)
	if err != nil || desc.Digest.String() != want || string(desc.MediaType) != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("pulled %v %v", desc, err)
	}
	idx, _ := desc.ImageIndex()
	m, _ := idx.IndexManifest()
	if len(m.Manifests) != 2 {
		t.Fatalf("%d platforms", len(m.Manifests))
	}
}
