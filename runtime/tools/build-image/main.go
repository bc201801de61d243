// Command build-image writes the cloudtaser-runtime image (OCI layout) from the binaries
// that `nox -s runtime` built: build-image -out DIR -tag NAME:TAG -version V arch=path...
// It prints the index digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"cloudtaser/runtime/internal/ociimage"
)

func main() {
	out := flag.String("out", "", "layout directory (replaced)")
	tag := flag.String("tag", "cloudtaser-runtime:dev", "reference name recorded in index.json")
	version := flag.String("version", "dev", "version label")
	flag.Parse()
	bins := map[string]string{}
	for _, a := range flag.Args() {
		arch, path, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintln(os.Stderr, "build-image: arguments are arch=path")
			os.Exit(2)
		}
		bins[arch] = path
	}
	if *out == "" || len(bins) == 0 {
		fmt.Fprintln(os.Stderr, "usage: build-image -out DIR [-tag T] [-version V] amd64=PATH arm64=PATH")
		os.Exit(2)
	}
	d, err := ociimage.Build(*out, *tag, *version, bins)
	if err == nil {
		_, err = ociimage.Verify(*out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "build-image:", err)
		os.Exit(1)
	}
	fmt.Println(d.Digest)
}
