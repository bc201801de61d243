// Package ociimage writes the runtime image as an OCI image layout (image-spec v1.1), with
// the standard library only: a scratch image per platform whose single layer holds the
// binary at /cloudtaser-runtime, and a multi-arch index over them.
//
// Reproducible by construction: tar headers are fixed (USTAR, uid/gid 0, mtime 0, no user or
// group names), gzip has a fixed level, no name and no mtime, JSON is marshalled from structs
// (fixed field order), the config's created time is the epoch, and platforms are sorted. The
// same binaries give the same digests, byte for byte.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Media types.
const (
	MediaIndex    = "application/vnd.oci.image.index.v1+json"
	MediaManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaConfig   = "application/vnd.oci.image.config.v1+json"
	MediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	// BinaryPath is where the binary sits in the image.
	BinaryPath = "/cloudtaser-runtime"
)

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform of a manifest in an index.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type imageConfig struct {
	Created      string    `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       runConfig `json:"config"`
	RootFS       rootFS    `json:"rootfs"`
	History      []history `json:"history"`
}

type runConfig struct {
	User       string            `json:"User"`
	Entrypoint []string          `json:"Entrypoint"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

const epoch = "1970-01-01T00:00:00Z"

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

type writer struct{ dir string }

func (w writer) blob(media string, b []byte) (Descriptor, error) {
	d := digest(b)
	p := filepath.Join(w.dir, "blobs", "sha256", d[len("sha256:"):])
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return Descriptor{}, err
	}
	return Descriptor{MediaType: media, Digest: d, Size: int64(len(b))}, nil
}

func (w writer) jsonBlob(media string, v any) (Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Descriptor{}, err
	}
	return w.blob(media, b)
}

// layer builds the tar (uncompressed, for the diff ID) and its gzip.
func layer(binary []byte) (tarball, gz []byte, err error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg, Name: BinaryPath[1:], Mode: 0o555, Size: int64(len(binary)),
		Format: tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	var gb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gb, gzip.BestCompression)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return tb.Bytes(), gb.Bytes(), nil
}

// Build writes the layout into dir (emptied first) with one image per entry of binaries
// (architecture -> path of the linux binary) and returns the index descriptor. tag names the
// index in index.json (org.opencontainers.image.ref.name).
func Build(dir, tag, version string, binaries map[string]string) (Descriptor, error) {
	if err := os.RemoveAll(dir); err != nil {
		return Descriptor{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return Descriptor{}, err
	}
	w := writer{dir}
	arches := make([]string, 0, len(binaries))
	for a := range binaries {
		arches = append(arches, a)
	}
	sort.Strings(arches)
	var manifests []Descriptor
	for _, arch := range arches {
		bin, err := os.ReadFile(binaries[arch])
		if err != nil {
			return Descriptor{}, err
		}
		tarball, gz, err := layer(bin)
		if err != nil {
			return Descriptor{}, err
		}
		layerDesc, err := w.blob(MediaLayer, gz)
		if err != nil {
			return Descriptor{}, err
		}
		cfg := imageConfig{
			Created: epoch, Architecture: arch, OS: "linux",
			Config: runConfig{
				User: "65532:65532", Entrypoint: []string{BinaryPath},
				Labels: map[string]string{"org.opencontainers.image.title": "cloudtaser-runtime", "org.opencontainers.image.version": version},
			},
			RootFS:  rootFS{Type: "layers", DiffIDs: []string{digest(tarball)}},
			History: []history{{Created: epoch, CreatedBy: "cloudtaser-runtime " + version + " (ociimage)"}},
		}
		cfgDesc, err := w.jsonBlob(MediaConfig, cfg)
		if err != nil {
			return Descriptor{}, err
		}
		m, err := w.jsonBlob(MediaManifest, manifest{SchemaVersion: 2, MediaType: MediaManifest, Config: cfgDesc, Layers: []Descriptor{layerDesc}})
		if err != nil {
			return Descriptor{}, err
		}
		m.Platform = &Platform{Architecture: arch, OS: "linux"}
		manifests = append(manifests, m)
	}
	idx, err := w.jsonBlob(MediaIndex, index{SchemaVersion: 2, MediaType: MediaIndex, Manifests: manifests})
	if err != nil {
		return Descriptor{}, err
	}
	idx.Annotations = map[string]string{"org.opencontainers.image.ref.name": tag}
	top, _ := json.Marshal(index{SchemaVersion: 2, MediaType: MediaIndex, Manifests: []Descriptor{idx}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), top, 0o644); err != nil {
		return Descriptor{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return Descriptor{}, err
	}
	idx.Annotations = nil
	return idx, nil
}

// Verify re-reads a layout: every blob's digest and size match its descriptor. Returns the
// index digest.
func Verify(dir string) (string, error) {
	var top index
	if err := readJSON(filepath.Join(dir, "index.json"), &top); err != nil {
		return "", err
	}
	if len(top.Manifests) != 1 {
		return "", fmt.Errorf("index.json: want one index, got %d", len(top.Manifests))
	}
	check := func(d Descriptor) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Digest[len("sha256:"):]))
		if err != nil {
			return nil, err
		}
		if digest(b) != d.Digest || int64(len(b)) != d.Size {
			return nil, fmt.Errorf("blob %s does not match its descriptor", d.Digest)
		}
		return b, nil
	}
	raw, err := check(top.Manifests[0])
	if err != nil {
		return "", err
	}
	var idx index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return "", err
	}
	for _, m := range idx.Manifests {
		raw, err := check(m)
		if err != nil {
			return "", err
		}
		var man manifest
		if err := json.Unmarshal(raw, &man); err != nil {
			return "", err
		}
		for _, d := range append([]Descriptor{man.Config}, man.Layers...) {
			if _, err := check(d); err != nil {
				return "", err
			}
		}
	}
	return top.Manifests[0].Digest, nil
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
