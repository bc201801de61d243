package registry

// The reference, host and mirror rules, shared with the Python client of
// `target protect --pin-entrypoints` (cloudtaser/target/registry.py) through the vectors in
// spec/contract/registry-*.json, which both test suites run.
//
// go-containerregistry parses references but checks each part only against a character set:
// it accepts names no registry can hold and the kubelet refuses (a pod with such an image never
// starts: InvalidImageName), e.g. `a//b`, `-app`, `a:-bad`, a host with an underscore or a
// port of 99999. A reference is therefore looked up only when it also matches the distribution
// grammar (github.com/distribution/reference, the parser the kubelet uses), its port is a
// port, and it is at most 1,024 characters long; go-containerregistry then parses it (and
// refuses what it alone refuses, such as an upper-case first component without a dot).

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// MaxReferenceChars bounds an image reference.
const MaxReferenceChars = 1024

const (
	hostLabel = `(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])`
	// host[:port] or [IPv6][:port]
	hostPattern = `(?:` + hostLabel + `(?:\.` + hostLabel + `)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?`
	component   = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	pathPattern = component + `(?:/` + component + `)*`
	tagPattern  = `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
	// any algorithm here; go-containerregistry then accepts sha256, sha384 and sha512 only
	digestPattern = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
)

var (
	referenceGrammar = regexp.MustCompile(`^(?:` + hostPattern + `/)?` + pathPattern +
		`(?::` + tagPattern + `)?(?:@` + digestPattern + `)?$`)
	hostGrammar = regexp.MustCompile(`^` + hostPattern + `$`)
	portSuffix  = regexp.MustCompile(`:([0-9]+)$`)
	pathGrammar = regexp.MustCompile(`^` + pathPattern + `$`)
)

// ValidHost reports whether h is a registry host: name[:port] or [IPv6][:port], DNS labels of
// ASCII letters, digits and inner hyphens, a port from 1 to 65535.
func ValidHost(h string) bool {
	if !hostGrammar.MatchString(h) {
		return false
	}
	if m := portSuffix.FindStringSubmatch(h); m != nil && !strings.HasSuffix(h, "]") {
		n, err := strconv.Atoi(m[1])
		return err == nil && n >= 1 && n <= 65535
	}
	return true
}

// ParseReference parses an image reference by the rules above: Docker Hub is index.docker.io
// (a one-part repository gets library/), the tag defaults to latest, a digest wins over a tag.
func ParseReference(image string) (name.Reference, bool) {
	if image == "" || len(image) > MaxReferenceChars || strings.TrimSpace(image) != image ||
		!referenceGrammar.MatchString(image) {
		return nil, false
	}
	ref, err := name.ParseReference(image)
	if err != nil || !ValidHost(ref.Context().RegistryStr()) {
		return nil, false
	}
	return ref, true
}

// parseMirrorTarget splits a mirror ([http://|https://]host[:port][/path]) into its host, its
// repository path prefix and whether plain HTTP was asked for.
func parseMirrorTarget(m string) (host, prefix string, insecure, ok bool) {
	insecure = strings.HasPrefix(m, "http://")
	m = strings.TrimPrefix(strings.TrimPrefix(m, "http://"), "https://")
	host, prefix, _ = strings.Cut(strings.TrimRight(m, "/"), "/")
	if !ValidHost(host) || (prefix != "" && !pathGrammar.MatchString(prefix)) {
		return "", "", false, false
	}
	return host, prefix, insecure, true
}
