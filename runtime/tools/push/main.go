// Command push copies the runtime image (an OCI layout written by build-image) to a
// registry: push -layout DIR REF. It uses go-containerregistry (registry auth with the
// docker config keychain, blob upload, manifest and index PUTs), kept in this separate module
// so the runtime binary stays standard library + golang.org/x/sys. Prints REF@digest.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push pushes the single index of the layout at dir to ref and returns its digest.
func Push(dir, ref string, opts ...remote.Option) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("bad reference %q: %w", ref, err)
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return "", fmt.Errorf("reading the layout %s: %w", dir, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(im.Manifests) != 1 {
		return "", fmt.Errorf("the layout holds %d entries, want one index", len(im.Manifests))
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(r, idx, opts...); err != nil {
		return "", fmt.Errorf("push to %s: %w", r.Context().RegistryStr(), err)
	}
	d, err := idx.Digest()
	return d.String(), err
}

func main() {
	dir := flag.String("layout", "build/runtime/image", "OCI layout directory")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: push [-layout DIR] REF")
		os.Exit(2)
	}
	d, err := Push(*dir, flag.Arg(0), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		fmt.Fprintln(os.Stderr, "push:", err)
		os.Exit(1)
	}
	fmt.Printf("%s@%s\n", flag.Arg(0), d)
}
