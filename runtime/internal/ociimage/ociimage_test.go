package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestLayoutIsReproducibleAndValid(t *testing.T) {
	dir := t.TempDir()
	bins := map[string]string{}
	for _, arch := range []string{"arm64", "amd64"} {
		p := filepath.Join(dir, arch)
		_ = os.WriteFile(p, []byte("\x7fELF fake binary for "+arch), 0o755)
		bins[arch] = p
	}
	a, err := Build(filepath.Join(dir, "a"), "cloudtaser-runtime:dev", "dev", bins)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(filepath.Join(dir, "b"), "cloudtaser-runtime:dev", "dev", bins)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest {
		t.Fatalf("not reproducible: %s vs %s", a.Digest, b.Digest)
	}
	got, err := Verify(filepath.Join(dir, "a"))
	if err != nil || got != a.Digest {
		t.Fatalf("%s %v", got, err)
	}
	// a different binary gives a different digest
	_ = os.WriteFile(bins["amd64"], []byte("changed"), 0o755)
	c, _ := Build(filepath.Join(dir, "c"), "cloudtaser-runtime:dev", "dev", bins)
	if c.Digest == a.Digest {
		t.Fatal("digest ignores the binary")
	}
	// the index lists amd64 then arm64, each a manifest whose layer holds only the binary
	raw, _ := os.ReadFile(filepath.Join(dir, "a", "blobs", "sha256", a.Digest[7:]))
	var idx index
	_ = json.Unmarshal(raw, &idx)
	if len(idx.Manifests) != 2 || idx.Manifests[0].Platform.Architecture != "amd64" || idx.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index %s", raw)
	}
	raw, _ = os.ReadFile(filepath.Join(dir, "a", "blobs", "sha256", idx.Manifests[1].Digest[7:]))
	var man manifest
	_ = json.Unmarshal(raw, &man)
	gz, _ := os.ReadFile(filepath.Join(dir, "a", "blobs", "sha256", man.Layers[0].Digest[7:]))
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil || h.Name != "cloudtaser-runtime" || h.Mode != 0o555 || h.ModTime.Unix() != 0 || h.Uid != 0 {
		t.Fatalf("%+v %v", h, err)
	}
	body, _ := io.ReadAll(tr)
	if string(body) != "\x7fELF fake binary for arm64" {
		t.Fatalf("layer content %q", body)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatal("more than one file in the layer")
	}
}
