// Package registry reads an image's ENTRYPOINT and CMD from its registry, for the injector:
// a container without `command` runs the image's entrypoint, and the webhook must put the
// wrapper in front of it.
//
// Lookups use go-containerregistry. A multi-arch index resolves to the node's platform (the
// pod's `kubernetes.io/arch` node selector when it has one, else linux/amd64); attestation
// entries (`unknown/unknown`) are never chosen. Lookups are anonymous unless the resolver is
// given a SecretGetter, in which case the pod's imagePullSecrets are used (dockerconfigjson and
// legacy dockercfg). A mirror map sends a registry's lookups to another host (air-gapped
// clusters). Configs are cached by digest (immutable), tags by digest with a TTL; concurrent
// lookups of one image share one request; every lookup stops at the context's deadline.
//
// Plain HTTP is used only for loopback registries (localhost, 127.0.0.0/8, ::1) and for
// mirrors given explicitly as http://HOST; every other request is sent over HTTPS, whatever
// go-containerregistry's own private-address heuristics would do.
//
// Errors never carry a credential: the messages of Error name the image and a class of failure.
//
// The reference rules (reference.go), the choice of an index entry (choose) and which mirror
// settings are valid are one rule set with the Python client of `target protect
// --pin-entrypoints`: both run the vectors in spec/contract/registry-*.json (vectors_test.go).
package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// DefaultTagTTL is how long a tag -> digest answer is reused.
const DefaultTagTTL = 5 * time.Minute

// MaxCacheEntries bounds each cache (tags, configs); when full, an arbitrary entry goes.
const MaxCacheEntries = 8192

// Platform selects an entry of a multi-arch index.
type Platform struct {
	OS           string // default "linux"
	Architecture string // default "amd64"
	Variant      string // optional, e.g. "v8"
}

func (p Platform) withDefaults() Platform {
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "" {
		p.Architecture = "amd64"
	}
	return p
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Request is one lookup: the container's image, the pod's namespace and imagePullSecrets
// (used only when the resolver has a SecretGetter) and the platform wanted.
type Request struct {
	Image       string
	Namespace   string
	PullSecrets []string
	Platform    Platform
}

// Result is what the image runs when the pod gives no command: its config's Entrypoint and
// Cmd, and the digest of the platform manifest they were read from.
type Result struct {
	Entrypoint []string
	Cmd        []string
	Digest     string
}

// Secret is a Kubernetes Secret as the server reads it: its type and data (decoded bytes).
type Secret struct {
	Type string
	Data map[string][]byte
}

// SecretGetter reads a pull secret from the API (the webhook server implements it with
// `get secrets`). A nil SecretGetter means anonymous lookups only.
type SecretGetter interface {
	GetSecret(ctx context.Context, namespace, name string) (*Secret, error)
}

// Options configures a Resolver.
type Options struct {
	// Mirrors maps a registry host (docker.io, ghcr.io, registry.corp:5000) to a mirror
	// host, optionally with a path prefix (registry.corp:5000/dockerhub) and "http://" in
	// front for a plain-HTTP mirror. Lookups of that registry go to the mirror only; the
	// repository path and tag are kept.
	Mirrors map[string]string
	// TagTTL: how long tag -> digest answers are reused; 0 means DefaultTagTTL, negative
	// disables the tag cache.
	TagTTL time.Duration
	// Secrets, when set, enables the pod's imagePullSecrets.
	Secrets SecretGetter
	// Transport is the base HTTP transport (nil: a clone of http.DefaultTransport).
	Transport http.RoundTripper
	// Now is the clock of the tag cache (nil: time.Now).
	Now func() time.Time
}

// Stats are the resolver's counters, for /metrics.
type Stats struct {
	Lookups      uint64 // Resolve calls
	CacheHits    uint64 // answered without any registry request
	Deduplicated uint64 // answered by a lookup of the same image already in flight
	Errors       uint64 // lookups that failed
	Fetches      uint64 // lookups that went to a registry
}

// Error kinds.
const (
	KindBadReference = "bad-reference"
	KindNotFound     = "not-found"
	KindUnauthorized = "unauthorized"
	KindTimeout      = "timeout"
	KindUnreachable  = "unreachable"
	KindNoPlatform   = "no-platform"
	KindCredentials  = "credentials"
	KindRegistry     = "registry"
)

// Error is a failed lookup. Its message names the image and what went wrong, never a
// credential or a registry's response body.
type Error struct {
	Kind  string
	Image string
	Msg   string
}

func (e *Error) Error() string { return e.Msg }

// Resolver looks up images. Safe for concurrent use.
type Resolver struct {
	mirrors map[string]mirror
	tagTTL  time.Duration
	secrets SecretGetter
	base    http.RoundTripper
	now     func() time.Time

	mu      sync.Mutex
	tags    map[string]tagEntry // "<repo>:<tag>" (after mirroring) -> digest
	configs map[string]Result   // "<digest>|<platform>" -> result
	flights map[string]*flight  // in-flight lookups

	lookups, cacheHits, dedup, errs, fetches atomic.Uint64
}

type mirror struct {
	host     string
	prefix   string
	insecure bool // given as http://: plain HTTP allowed
}

type tagEntry struct {
	digest  string
	expires time.Time
}

type flight struct {
	done chan struct{}
	res  Result
	err  error
}

// New builds a resolver; bad mirror entries are an error.
func New(o Options) (*Resolver, error) {
	r := &Resolver{
		mirrors: map[string]mirror{},
		tagTTL:  o.TagTTL,
		secrets: o.Secrets,
		base:    o.Transport,
		now:     o.Now,
		tags:    map[string]tagEntry{},
		configs: map[string]Result{},
		flights: map[string]*flight{},
	}
	if r.tagTTL == 0 {
		r.tagTTL = DefaultTagTTL
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.base == nil {
		r.base = http.DefaultTransport.(*http.Transport).Clone()
	}
	for host, m := range o.Mirrors {
		if err := r.addMirror(host, m); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// ParseMirror parses a --mirror flag value HOST=[http://]MIRROR[/PREFIX].
func ParseMirror(v string) (host, mirror string, err error) {
	host, mirror, ok := strings.Cut(strings.TrimSpace(v), "=")
	if !ok || host == "" || mirror == "" {
		return "", "", fmt.Errorf("mirror %q is not HOST=MIRROR (e.g. docker.io=registry.corp:5000)", clip(v))
	}
	return strings.TrimSpace(host), strings.TrimSpace(mirror), nil
}

func (r *Resolver) addMirror(host, m string) error {
	bad := fmt.Errorf("mirror %q=%q: both sides must be registry hosts (host[:port]; the mirror optionally http:// and /path)", clip(host), clip(m))
	h := canonicalHost(host)
	if _, err := name.NewRegistry(h, name.StrictValidation); err != nil || strings.Contains(host, "/") || !ValidHost(h) {
		return bad
	}
	mh, prefix, insecure, ok := parseMirrorTarget(m)
	if !ok {
		return bad
	}
	if _, err := name.NewRegistry(mh, name.StrictValidation); err != nil {
		return bad
	}
	if _, dup := r.mirrors[h]; dup {
		// docker.io and index.docker.io are one registry: two mirrors for it would leave the
		// choice to map order
		return fmt.Errorf("mirror %q: a mirror for %s is given twice", clip(host), h)
	}
	r.mirrors[h] = mirror{host: mh, prefix: prefix, insecure: insecure}
	return nil
}

// canonicalHost folds the Docker Hub spellings into go-containerregistry's index.docker.io.
func canonicalHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return name.DefaultRegistry
	}
	return h
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Lookups:      r.lookups.Load(),
		CacheHits:    r.cacheHits.Load(),
		Deduplicated: r.dedup.Load(),
		Errors:       r.errs.Load(),
		Fetches:      r.fetches.Load(),
	}
}

// Resolve returns the image's entrypoint and cmd for the platform. It stops at ctx's deadline.
func (r *Resolver) Resolve(ctx context.Context, req Request) (Result, error) {
	r.lookups.Add(1)
	res, err := r.resolve(ctx, req)
	if err != nil {
		r.errs.Add(1)
	}
	return res, err
}

func (r *Resolver) resolve(ctx context.Context, req Request) (Result, error) {
	plat := req.Platform.withDefaults()
	ref, plainHTTP, err := r.reference(req.Image)
	if err != nil {
		return Result{}, err
	}
	if res, ok := r.cached(ref, plat); ok {
		r.cacheHits.Add(1)
		return res, nil
	}
	// One flight per image, platform and credential set (a lookup with credentials must not
	// receive the anonymous lookup's refusal).
	key := ref.Name() + "|" + plat.String() + "|"
	if r.secrets != nil && len(req.PullSecrets) > 0 {
		key += req.Namespace + "/" + strings.Join(req.PullSecrets, ",")
	}
	r.mu.Lock()
	if f, ok := r.flights[key]; ok {
		r.mu.Unlock()
		r.dedup.Add(1)
		select {
		case <-f.done:
			var e *Error
			if !(errors.As(f.err, &e) && e.Kind == KindTimeout && ctx.Err() == nil) {
				return f.res, f.err
			}
			// The leader ran out of its own time; this request still has some.
			return r.fetch(ctx, req, ref, plainHTTP, plat)
		case <-ctx.Done():
			return Result{}, r.classify(req.Image, ctx.Err())
		}
	}
	f := &flight{done: make(chan struct{})}
	r.flights[key] = f
	r.mu.Unlock()
	f.res, f.err = r.fetch(ctx, req, ref, plainHTTP, plat)
	r.mu.Lock()
	delete(r.flights, key)
	r.mu.Unlock()
	close(f.done)
	return f.res, f.err
}

// reference parses the image and applies the mirror map. plainHTTP lists the hosts allowed
// without TLS for this lookup.
func (r *Resolver) reference(image string) (name.Reference, map[string]bool, error) {
	bad := &Error{Kind: KindBadReference, Image: image, Msg: fmt.Sprintf("image %q is not a valid image reference", clip(image))}
	ref, ok := ParseReference(image)
	if !ok {
		return nil, nil, bad
	}
	// host names are case-insensitive: Reg.Corp/app goes to the mirror of reg.corp
	m, ok := r.mirrors[canonicalHost(ref.Context().RegistryStr())]
	if !ok {
		return ref, nil, nil
	}
	repo := ref.Context().RepositoryStr()
	if m.prefix != "" {
		repo = m.prefix + "/" + repo
	}
	mref := m.host + "/" + repo
	if d, ok := ref.(name.Digest); ok {
		mref += "@" + d.DigestStr()
	} else {
		mref += ":" + ref.Identifier()
	}
	if !m.insecure {
		nref, err := name.ParseReference(mref)
		if err != nil {
			return nil, nil, bad
		}
		return nref, nil, nil
	}
	// A mirror given as http://: plain HTTP to it is allowed.
	nref, err := name.ParseReference(mref, name.Insecure)
	if err != nil {
		return nil, nil, bad
	}
	return nref, map[string]bool{strings.ToLower(m.host): true}, nil
}

// evictOne makes room for one entry in a full cache.
func evictOne[V any](m map[string]V) {
	if len(m) < MaxCacheEntries {
		return
	}
	for k := range m {
		delete(m, k)
		return
	}
}

func cfgKey(digest string, p Platform) string { return digest + "|" + p.String() }

// cached answers from the caches: a digest reference from the config cache, a tag through a
// fresh tag entry.
func (r *Resolver) cached(ref name.Reference, p Platform) (Result, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	digest := ""
	if d, ok := ref.(name.Digest); ok {
		digest = d.DigestStr()
	} else if e, ok := r.tags[ref.Name()]; ok && r.tagTTL > 0 && r.now().Before(e.expires) {
		digest = e.digest
	}
	if digest == "" {
		return Result{}, false
	}
	res, ok := r.configs[cfgKey(digest, p)]
	return res, ok
}

// fetch reads the image from its registry, trying the matching pull-secret credentials in
// the pod's order (the next one after a refusal, as the kubelet does), anonymously when none
// matches.
func (r *Resolver) fetch(ctx context.Context, req Request, ref name.Reference, plainHTTP map[string]bool, plat Platform) (Result, error) {
	auths, err := r.credentials(ctx, req, ref)
	if err != nil {
		return Result{}, err
	}
	r.fetches.Add(1)
	for i, a := range auths {
		res, err := r.fetchWith(ctx, req, ref, plainHTTP, plat, a)
		var e *Error
		if err == nil || i == len(auths)-1 || !errors.As(err, &e) || e.Kind != KindUnauthorized {
			return res, err
		}
	}
	return Result{}, errors.New("unreachable")
}

func (r *Resolver) fetchWith(ctx context.Context, req Request, ref name.Reference, plainHTTP map[string]bool, plat Platform, auth authn.Authenticator) (Result, error) {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(&schemeGuard{base: r.base, plainHTTP: plainHTTP}),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return Result{}, r.classify(req.Image, err)
	}
	top := desc.Digest.String()
	if _, isTag := ref.(name.Tag); isTag && r.tagTTL > 0 {
		r.mu.Lock()
		evictOne(r.tags)
		r.tags[ref.Name()] = tagEntry{digest: top, expires: r.now().Add(r.tagTTL)}
		r.mu.Unlock()
	}
	r.mu.Lock()
	res, ok := r.configs[cfgKey(top, plat)]
	r.mu.Unlock()
	if ok {
		return res, nil
	}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Result{}, r.classify(req.Image, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return Result{}, r.classify(req.Image, err)
		}
		child, ok := choose(im.Manifests, plat)
		if !ok {
			return Result{}, &Error{Kind: KindNoPlatform, Image: req.Image,
				Msg: fmt.Sprintf("image %q has no %s entry in its multi-arch index", clip(req.Image), plat)}
		}
		if img, err = idx.Image(child.Digest); err != nil {
			return Result{}, r.classify(req.Image, err)
		}
	} else if desc.MediaType.IsImage() {
		if img, err = desc.Image(); err != nil {
			return Result{}, r.classify(req.Image, err)
		}
	} else {
		return Result{}, &Error{Kind: KindRegistry, Image: req.Image,
			Msg: fmt.Sprintf("image %q: the registry answered with a %s, not an image manifest or index", clip(req.Image), clip(string(desc.MediaType)))}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Result{}, r.classify(req.Image, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Result{}, r.classify(req.Image, err)
	}
	res = Result{Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Digest: digest.String()}
	r.mu.Lock()
	evictOne(r.configs)
	r.configs[cfgKey(top, plat)] = res
	r.mu.Unlock()
	return res, nil
}

// choose picks the index entry of the platform: exact variant when asked, else the first
// entry of that os/architecture; attestation entries (unknown/unknown, or marked as
// attestation manifests) are skipped.
func choose(ms []v1.Descriptor, p Platform) (v1.Descriptor, bool) {
	var first *v1.Descriptor
	for i := range ms {
		m := &ms[i]
		if m.Platform == nil || m.Platform.OS == "unknown" || m.Platform.Architecture == "unknown" {
			continue
		}
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			continue
		}
		if m.Platform.OS != p.OS || m.Platform.Architecture != p.Architecture {
			continue
		}
		if p.Variant == "" || m.Platform.Variant == p.Variant {
			return *m, true
		}
		if first == nil {
			first = m
		}
	}
	if first != nil {
		return *first, true
	}
	return v1.Descriptor{}, false
}

// classify turns a go-containerregistry or network error into an Error without any of the
// registry's response text.
func (r *Resolver) classify(image string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	img := clip(image)
	var te *transport.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || isTimeout(err):
		return &Error{Kind: KindTimeout, Image: image, Msg: fmt.Sprintf("the lookup of image %q did not finish within the admission timeout", img)}
	case errors.As(err, &te):
		switch te.StatusCode {
		case http.StatusNotFound:
			return &Error{Kind: KindNotFound, Image: image, Msg: fmt.Sprintf("image %q was not found in its registry (HTTP 404)", img)}
		case http.StatusUnauthorized, http.StatusForbidden:
			return &Error{Kind: KindUnauthorized, Image: image, Msg: fmt.Sprintf("the registry of image %q refused the lookup (HTTP %d)", img, te.StatusCode)}
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return &Error{Kind: KindNotFound, Image: image, Msg: fmt.Sprintf("image %q was not found in its registry (%s)", img, d.Code)}
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return &Error{Kind: KindUnauthorized, Image: image, Msg: fmt.Sprintf("the registry of image %q refused the lookup (%s)", img, d.Code)}
			}
		}
		return &Error{Kind: KindRegistry, Image: image, Msg: fmt.Sprintf("the registry of image %q answered HTTP %d", img, te.StatusCode)}
	}
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	var rh tls.RecordHeaderError
	if errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &he) {
		return &Error{Kind: KindUnreachable, Image: image, Msg: fmt.Sprintf("the TLS certificate of the registry of image %q could not be verified", img)}
	}
	if errors.As(err, &rh) {
		return &Error{Kind: KindUnreachable, Image: image, Msg: fmt.Sprintf("the registry of image %q does not speak HTTPS (a plain-HTTP mirror is given as --mirror HOST=http://MIRROR)", img)}
	}
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &de) || errors.As(err, &oe) || errors.As(err, &ne) {
		return &Error{Kind: KindUnreachable, Image: image, Msg: fmt.Sprintf("the registry of image %q is unreachable from the webhook", img)}
	}
	if errors.Is(err, errTooLarge) {
		return &Error{Kind: KindRegistry, Image: image, Msg: fmt.Sprintf("the registry of image %q sent a manifest or config larger than %d MiB", img, MaxResponseBytes>>20)}
	}
	return &Error{Kind: KindRegistry, Image: image, Msg: fmt.Sprintf("the registry of image %q gave an answer that is not a readable image", img)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// schemeGuard sends every request over HTTPS except to loopback hosts and explicit mirrors:
// go-containerregistry would use plain HTTP for private (RFC 1918) and .local registries.
type schemeGuard struct {
	base      http.RoundTripper
	plainHTTP map[string]bool
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.plainHTTP[strings.ToLower(req.URL.Host)] && !isLoopback(req.URL.Hostname()) {
		req = req.Clone(req.Context())
		req.URL.Scheme = "https"
	}
	resp, err := g.base.RoundTrip(req)
	if err == nil && resp.Body != nil {
		resp.Body = &capped{rc: resp.Body, left: MaxResponseBytes}
	}
	return resp, err
}

// MaxResponseBytes bounds every registry response the resolver reads (manifests, indexes,
// configs are kilobytes; go-containerregistry alone would accept a 100 MiB manifest).
const MaxResponseBytes = 4 << 20

var errTooLarge = errors.New("registry response larger than the injector reads")

type capped struct {
	rc   io.ReadCloser
	left int64
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *capped) Close() error { return c.rc.Close() }

func isLoopback(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// credentials returns the authenticators to try for ref's registry: the entries of the pod's
// pull secrets (when enabled) for that host, in the pod's order; anonymous when none matches.
func (r *Resolver) credentials(ctx context.Context, req Request, ref name.Reference) ([]authn.Authenticator, error) {
	anonymous := []authn.Authenticator{authn.Anonymous}
	if r.secrets == nil || len(req.PullSecrets) == 0 {
		return anonymous, nil
	}
	host := canonicalHost(ref.Context().RegistryStr())
	var out []authn.Authenticator
	for _, s := range req.PullSecrets {
		sec, err := r.secrets.GetSecret(ctx, req.Namespace, s)
		if err != nil {
			// A listed secret that does not exist is skipped, as the kubelet does.
			if errors.Is(err, ErrSecretNotFound) {
				continue
			}
			return nil, &Error{Kind: KindCredentials, Image: req.Image,
				Msg: fmt.Sprintf("pull secret %s/%s could not be read for image %q", clip(req.Namespace), clip(s), clip(req.Image))}
		}
		auths, err := parseSecret(sec)
		if err != nil {
			return nil, &Error{Kind: KindCredentials, Image: req.Image,
				Msg: fmt.Sprintf("pull secret %s/%s: %v", clip(req.Namespace), clip(s), err)}
		}
		for _, a := range auths {
			if a.host == host {
				out = append(out, authn.FromConfig(a.cfg))
			}
		}
	}
	if len(out) == 0 {
		return anonymous, nil
	}
	return out, nil
}

// ErrSecretNotFound is what a SecretGetter returns (wrapped or not) for a missing secret.
var ErrSecretNotFound = errors.New("secret not found")

func clip(s string) string {
	r := []rune(s)
	if len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return '?'
		}
		return c
	}, s)
}
