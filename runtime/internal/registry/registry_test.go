package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The tests run against go-containerregistry's registry (the one `crane registry serve`
// runs), in process on 127.0.0.1, behind a handler that counts and can hold requests.

type testRegistry struct {
	srv       *httptest.Server
	host      string
	manifests atomic.Int64  // GET/HEAD /v2/.../manifests/...
	hold      chan struct{} // when non-nil, manifest requests wait for it to close
	delay     time.Duration
	basicUser string // when set, every request needs Basic user:pass
	basicPass string
	mu        sync.Mutex
	arrived   chan struct{}
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{arrived: make(chan struct{}, 100)}
	inner := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		user, pass := tr.basicUser, tr.basicPass
		tr.mu.Unlock()
		if user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		if strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodGet {
			tr.manifests.Add(1)
			tr.arrived <- struct{}{}
			tr.mu.Lock()
			hold, delay := tr.hold, tr.delay
			tr.mu.Unlock()
			if hold != nil {
				<-hold
			}
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-r.Context().Done():
					return
				}
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	u, _ := url.Parse(tr.srv.URL)
	tr.host = u.Host
	return tr
}

func image(t *testing.T, entrypoint, cmd []string) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Entrypoint: entrypoint, Cmd: cmd})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push writes img to host/repo:tag without credentials (the auth wrapper is off then).
func (tr *testRegistry) push(t *testing.T, repo string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(tr.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

func (tr *testRegistry) pushIndex(t *testing.T, repo string, idx v1.ImageIndex) {
	t.Helper()
	ref, err := name.ParseReference(tr.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
}

func newResolver(t *testing.T, o Options) *Resolver {
	t.Helper()
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func kind(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return fmt.Sprintf("not a registry.Error: %v", err)
}

func TestEntrypointAndCmdOfASingleImage(t *testing.T) {
	tr := newRegistry(t)
	digest := tr.push(t, "app:1", image(t, []string{"/docker-entrypoint.sh"}, []string{"nginx", "-g", "daemon off;"}))
	r := newResolver(t, Options{})
	res, err := r.Resolve(context.Background(), Request{Image: tr.host + "/app:1"})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Entrypoint: []string{"/docker-entrypoint.sh"}, Cmd: []string{"nginx", "-g", "daemon off;"}, Digest: digest}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("got %+v, want %+v", res, want)
	}
	// By digest: same answer.
	res2, err := r.Resolve(context.Background(), Request{Image: tr.host + "/app@" + digest})
	if err != nil || !reflect.DeepEqual(res2, want) {
		t.Fatalf("by digest: %+v %v", res2, err)
	}
}

func TestMultiArchIndexPicksThePlatformAndSkipsAttestations(t *testing.T) {
	tr := newRegistry(t)
	amd := image(t, []string{"/amd64"}, nil)
	arm := image(t, []string{"/arm64"}, []string{"v8"})
	att := image(t, []string{"/attestation"}, nil)
	idx := mutate.AppendManifests(empty.Index,
		// the attestation entry first: a first-entry pick (Bank-Vaults) would take it
		mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	tr.pushIndex(t, "multi:1", idx)
	r := newResolver(t, Options{})
	ref := tr.host + "/multi:1"
	for _, c := range []struct {
		plat Platform
		want string
	}{
		{Platform{}, "/amd64"},
		{Platform{OS: "linux", Architecture: "amd64"}, "/amd64"},
		{Platform{Architecture: "arm64"}, "/arm64"},
		{Platform{Architecture: "arm64", Variant: "v8"}, "/arm64"},
	} {
		res, err := r.Resolve(context.Background(), Request{Image: ref, Platform: c.plat})
		if err != nil {
			t.Fatalf("%v: %v", c.plat, err)
		}
		if len(res.Entrypoint) != 1 || res.Entrypoint[0] != c.want {
			t.Fatalf("%v: got %v, want %s", c.plat, res.Entrypoint, c.want)
		}
		d, _ := map[string]v1.Image{"/amd64": amd, "/arm64": arm}[c.want].Digest()
		if res.Digest != d.String() {
			t.Fatalf("%v: digest %s, want %s", c.plat, res.Digest, d)
		}
	}
	_, err := r.Resolve(context.Background(), Request{Image: ref, Platform: Platform{Architecture: "s390x"}})
	if kind(err) != KindNoPlatform || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("s390x: %v", err)
	}
	// An index holding only an attestation has no platform at all.
	tr.pushIndex(t, "attonly:1", mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: att,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}}))
	if _, err := r.Resolve(context.Background(), Request{Image: tr.host + "/attonly:1"}); kind(err) != KindNoPlatform {
		t.Fatalf("attestation only: %v", err)
	}
}

func TestTagCacheHonoursTheTTLAndDigestsAreCachedForever(t *testing.T) {
	tr := newRegistry(t)
	tr.push(t, "app:1", image(t, []string{"/v1"}, nil))
	now := time.Unix(1_000_000, 0)
	var clock sync.Mutex
	r := newResolver(t, Options{TagTTL: time.Minute, Now: func() time.Time { clock.Lock(); defer clock.Unlock(); return now }})
	advance := func(d time.Duration) { clock.Lock(); now = now.Add(d); clock.Unlock() }
	get := func() string {
		t.Helper()
		res, err := r.Resolve(context.Background(), Request{Image: tr.host + "/app:1"})
		if err != nil {
			t.Fatal(err)
		}
		return res.Entrypoint[0]
	}
	if got := get(); got != "/v1" {
		t.Fatal(got)
	}
	first := tr.manifests.Load()
	if first == 0 {
		t.Fatal("no manifest request counted: the counter proves nothing")
	}
	// Re-pointing the tag is not seen within the TTL, and no request is made.
	tr.push(t, "app:1", image(t, []string{"/v2"}, nil))
	advance(59 * time.Second)
	if got := get(); got != "/v1" {
		t.Fatalf("within the TTL: %s", got)
	}
	if n := tr.manifests.Load(); n != first {
		t.Fatalf("within the TTL the registry was asked again (%d -> %d)", first, n)
	}
	if s := r.Stats(); s.CacheHits != 1 || s.Lookups != 2 {
		t.Fatalf("stats %+v", s)
	}
	advance(2 * time.Second)
	if got := get(); got != "/v2" {
		t.Fatalf("after the TTL: %s", got)
	}
	if tr.manifests.Load() == first {
		t.Fatal("after the TTL no request was made")
	}
	// A digest reference never asks twice.
	d := tr.push(t, "app:pinned", image(t, []string{"/pinned"}, nil))
	for i := 0; i < 3; i++ {
		if _, err := r.Resolve(context.Background(), Request{Image: tr.host + "/app@" + d}); err != nil {
			t.Fatal(err)
		}
		advance(time.Hour)
	}
	s := r.Stats()
	if s.Fetches != 3 || s.CacheHits != 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestConcurrentLookupsOfOneImageShareOneRequest(t *testing.T) {
	tr := newRegistry(t)
	tr.push(t, "app:1", image(t, []string{"/app"}, nil))
	tr.mu.Lock()
	tr.hold = make(chan struct{})
	tr.mu.Unlock()
	r := newResolver(t, Options{})
	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.Resolve(context.Background(), Request{Image: tr.host + "/app:1"})
			if err == nil && res.Entrypoint[0] != "/app" {
				err = fmt.Errorf("got %v", res.Entrypoint)
			}
			errs <- err
		}()
	}
	<-tr.arrived // the leader's manifest request is held at the registry
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Deduplicated < n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("followers never joined the flight: %+v", r.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr.mu.Lock()
	close(tr.hold)
	tr.hold = nil
	tr.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := tr.manifests.Load(); got != 1 {
		t.Fatalf("%d manifest requests for %d concurrent lookups, want 1", got, n)
	}
	if s := r.Stats(); s.Fetches != 1 || s.Deduplicated != n-1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMirrorServesTheRegistrysImages(t *testing.T) {
	mirror := newRegistry(t)
	mirror.push(t, "library/busybox:1.37", image(t, nil, []string{"sh"}))
	mirror.push(t, "hub/library/nginx:1", image(t, []string{"/nginx"}, nil))
	mirror.push(t, "team/app:2", image(t, []string{"/team"}, nil))
	r := newResolver(t, Options{Mirrors: map[string]string{"docker.io": mirror.host, "ghcr.io": mirror.host}})
	for img, want := range map[string][]string{
		"busybox:1.37":                         {"sh"},
		"docker.io/library/busybox:1.37":       {"sh"},
		"index.docker.io/library/busybox:1.37": {"sh"},
		"ghcr.io/team/app:2":                   {"/team"},
	} {
		res, err := r.Resolve(context.Background(), Request{Image: img})
		if err != nil {
			t.Fatalf("%s: %v", img, err)
		}
		got := append(res.Entrypoint, res.Cmd...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: %v", img, got)
		}
	}
	withPrefix := newResolver(t, Options{Mirrors: map[string]string{"docker.io": mirror.host + "/hub"}})
	res, err := withPrefix.Resolve(context.Background(), Request{Image: "nginx:1"})
	if err != nil || res.Entrypoint[0] != "/nginx" {
		t.Fatalf("prefix mirror: %v %v", res, err)
	}
	// A mirror given as http:// is allowed plain HTTP; without it, HTTPS only (the guard
	// upgrades go-containerregistry's plain HTTP for private addresses).
	plain := newResolver(t, Options{Mirrors: map[string]string{"docker.io": "http://" + mirror.host, "quay.io": "http://10.0.0.5:5000/q", "ghcr.io": "10.0.0.5:5000"}})
	if res, err := plain.Resolve(context.Background(), Request{Image: "busybox:1.37"}); err != nil || res.Cmd[0] != "sh" {
		t.Fatalf("http:// mirror: %v %v", res, err)
	}
	ref, allowed, err := plain.reference("quay.io/team/app:1")
	if err != nil || ref.Name() != "10.0.0.5:5000/q/team/app:1" || !allowed["10.0.0.5:5000"] {
		t.Fatalf("http:// mirror: %v %v %v", ref, allowed, err)
	}
	ref, allowed, err = plain.reference("ghcr.io/team/app:1")
	if err != nil || ref.Name() != "10.0.0.5:5000/team/app:1" || allowed != nil {
		t.Fatalf("https mirror: %v %v %v", ref, allowed, err)
	}
	// An image the mirror lacks fails there: the origin is never asked.
	if _, err := r.Resolve(context.Background(), Request{Image: "docker.io/library/absent:1"}); kind(err) != KindNotFound {
		t.Fatalf("absent: %v", err)
	}
}

func TestBadMirrorsAreRefused(t *testing.T) {
	for _, m := range []map[string]string{
		{"docker.io/x": "mirror:5000"},
		{"docker.io": "mir ror"},
		{"": "mirror:5000"},
		{"docker.io": "mirror:5000/Bad Path"},
	} {
		if _, err := New(Options{Mirrors: m}); err == nil {
			t.Errorf("%v accepted", m)
		}
	}
	for _, f := range []string{"docker.io", "=x", "x="} {
		if _, _, err := ParseMirror(f); err == nil {
			t.Errorf("ParseMirror(%q) accepted", f)
		}
	}
	h, m, err := ParseMirror(" docker.io=registry.corp:5000 ")
	if err != nil || h != "docker.io" || m != "registry.corp:5000" {
		t.Fatal(h, m, err)
	}
}

func TestLookupStopsAtTheDeadline(t *testing.T) {
	tr := newRegistry(t)
	tr.push(t, "slow:1", image(t, []string{"/slow"}, nil))
	tr.mu.Lock()
	tr.delay = 5 * time.Second
	tr.mu.Unlock()
	r := newResolver(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := r.Resolve(ctx, Request{Image: tr.host + "/slow:1"})
	if kind(err) != KindTimeout {
		t.Fatalf("got %v", err)
	}
	if el := time.Since(t0); el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
	if r.Stats().Errors != 1 {
		t.Fatalf("stats %+v", r.Stats())
	}
}

func TestErrorsAreClassified(t *testing.T) {
	tr := newRegistry(t)
	r := newResolver(t, Options{})
	ctx := context.Background()
	if _, err := r.Resolve(ctx, Request{Image: tr.host + "/nothing:1"}); kind(err) != KindNotFound {
		t.Fatalf("absent: %v", err)
	}
	if _, err := r.Resolve(ctx, Request{Image: "127.0.0.1:1/app:1"}); kind(err) != KindUnreachable {
		t.Fatalf("closed port: %v", err)
	}
	// A TLS registry (as example.com, the name in httptest's certificate) whose certificate
	// the webhook does not trust; then the same with its CA in the transport.
	tlsSrv := httptest.NewUnstartedServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	tlsAddr := strings.TrimPrefix(tlsSrv.URL, "https://")
	dialer := &net.Dialer{}
	transport := func(roots *x509.CertPool) http.RoundTripper {
		tp := http.DefaultTransport.(*http.Transport).Clone()
		tp.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, tlsAddr)
		}
		tp.TLSClientConfig = &tls.Config{RootCAs: roots}
		return tp
	}
	_, err := newResolver(t, Options{Transport: transport(nil)}).Resolve(ctx, Request{Image: "example.com/app:1"})
	if kind(err) != KindUnreachable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(tlsSrv.Certificate())
	_, err = newResolver(t, Options{Transport: transport(pool)}).Resolve(ctx, Request{Image: "example.com/app:1"})
	if kind(err) != KindNotFound {
		t.Fatalf("trusted private CA: %v", err)
	}
	for _, bad := range []string{"", " app", "UPPER/Case:1", "app:tag with blank", "a@sha256:xyz"} {
		if _, err := r.Resolve(ctx, Request{Image: bad}); kind(err) != KindBadReference {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

// secretGetter reads pull secrets from a map, as the server does from the API.
type secretGetter map[string]*Secret

func (g secretGetter) GetSecret(_ context.Context, ns, n string) (*Secret, error) {
	if s, ok := g[ns+"/"+n]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("secret %s/%s: %w", ns, n, ErrSecretNotFound)
}

func dockerConfigJSON(host, user, pass string) *Secret {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	raw, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	return &Secret{Type: SecretTypeDockerConfigJSON, Data: map[string][]byte{KeyDockerConfigJSON: raw}}
}

func TestPullSecretsOnlyWhenEnabled(t *testing.T) {
	tr := newRegistry(t)
	tr.push(t, "private:1", image(t, []string{"/private"}, nil))
	const canary = "pw-canary-7f3a9"
	tr.mu.Lock()
	tr.basicUser, tr.basicPass = "robot", canary
	tr.mu.Unlock()
	img := tr.host + "/private:1"
	ctx := context.Background()
	secrets := secretGetter{
		"app/regcred": dockerConfigJSON(tr.host, "robot", canary),
		"app/wrong":   dockerConfigJSON(tr.host, "robot", "nope-"+canary),
		"app/other":   dockerConfigJSON("other.example.com", "robot", canary),
		"app/legacy":  {Type: SecretTypeDockercfg, Data: map[string][]byte{KeyDockercfg: []byte(`{"http://` + tr.host + `/v1/":{"username":"robot","password":"` + canary + `"}}`)}},
		"app/garbage": {Type: SecretTypeDockerConfigJSON, Data: map[string][]byte{KeyDockerConfigJSON: []byte(`{"auths":` + canary)}},
		"app/opaque":  {Type: "Opaque", Data: map[string][]byte{"password": []byte(canary)}},
	}
	noCanary := func(err error) {
		t.Helper()
		if err != nil && strings.Contains(err.Error(), canary) {
			t.Fatalf("credential in error: %v", err)
		}
	}
	// Disabled (no SecretGetter): the pod's pull secrets are not used.
	anon := newResolver(t, Options{})
	_, err := anon.Resolve(ctx, Request{Image: img, Namespace: "app", PullSecrets: []string{"regcred"}})
	if kind(err) != KindUnauthorized {
		t.Fatalf("anonymous: %v", err)
	}
	for _, c := range []struct {
		secrets []string
		kind    string
	}{
		{[]string{"regcred"}, ""},
		{[]string{"legacy"}, ""},
		{[]string{"missing", "regcred"}, ""}, // a missing listed secret is skipped
		{[]string{"other", "regcred"}, ""},   // non-matching hosts are skipped
		{[]string{"wrong", "regcred"}, ""},   // several match: the next after a refusal
		{[]string{"wrong"}, KindUnauthorized},
		{nil, KindUnauthorized},
		{[]string{"garbage"}, KindCredentials},
		{[]string{"opaque"}, KindCredentials},
	} {
		// A fresh resolver each time: its caches are shared by all pods (docs/injector.md).
		withSecrets := newResolver(t, Options{Secrets: secrets})
		res, err := withSecrets.Resolve(ctx, Request{Image: img, Namespace: "app", PullSecrets: c.secrets})
		noCanary(err)
		if c.kind == "" {
			if err != nil || res.Entrypoint[0] != "/private" {
				t.Fatalf("%v: %v %v", c.secrets, res, err)
			}
			continue
		}
		if kind(err) != c.kind {
			t.Fatalf("%v: want %s, got %v", c.secrets, c.kind, err)
		}
	}
}

func TestSchemeGuardUpgradesPlainHTTPExceptLoopbackAndMirrors(t *testing.T) {
	var seen []string
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = append(seen, r.URL.Scheme+"://"+r.URL.Host)
		return nil, errors.New("stop")
	})
	g := &schemeGuard{base: base, plainHTTP: map[string]bool{"mirror.corp:5000": true}}
	for _, u := range []string{"http://10.1.2.3:5000/v2/", "http://registry.local/v2/", "http://127.0.0.1:5000/v2/", "http://localhost:5000/v2/", "http://[::1]:5000/v2/", "http://mirror.corp:5000/v2/", "https://10.1.2.3/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		_, _ = g.RoundTrip(req)
	}
	want := []string{"https://10.1.2.3:5000", "https://registry.local", "http://127.0.0.1:5000", "http://localhost:5000", "http://[::1]:5000", "http://mirror.corp:5000", "https://10.1.2.3"}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("got %v\nwant %v", seen, want)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestOversizedConfigIsRefused(t *testing.T) {
	tr := newRegistry(t)
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("x", MaxResponseBytes)
	img, err = mutate.Config(img, v1.Config{Entrypoint: []string{"/app"}, Env: []string{"BIG=" + huge}})
	if err != nil {
		t.Fatal(err)
	}
	tr.push(t, "big:1", img)
	tr.push(t, "small:1", image(t, []string{"/small"}, nil))
	r := newResolver(t, Options{})
	_, err = r.Resolve(context.Background(), Request{Image: tr.host + "/big:1"})
	if kind(err) != KindRegistry || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v", err)
	}
	if _, err := r.Resolve(context.Background(), Request{Image: tr.host + "/small:1"}); err != nil {
		t.Fatalf("a normal image after the big one: %v", err)
	}
}

// A follower whose own deadline is later does not inherit the leader's timeout.
func TestFollowerOutlivesATimedOutLeader(t *testing.T) {
	tr := newRegistry(t)
	tr.push(t, "app:1", image(t, []string{"/app"}, nil))
	tr.mu.Lock()
	tr.delay = 400 * time.Millisecond
	tr.mu.Unlock()
	r := newResolver(t, Options{})
	leaderCtx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	leaderErr := make(chan error, 1)
	go func() {
		_, err := r.Resolve(leaderCtx, Request{Image: tr.host + "/app:1"})
		leaderErr <- err
	}()
	<-tr.arrived
	ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	res, err := r.Resolve(ctx, Request{Image: tr.host + "/app:1"})
	if err != nil || res.Entrypoint[0] != "/app" {
		t.Fatalf("follower: %v %v", res, err)
	}
	if err := <-leaderErr; kind(err) != KindTimeout {
		t.Fatalf("leader: %v", err)
	}
	if r.Stats().Deduplicated != 1 {
		t.Fatalf("the follower did not join the flight: %+v", r.Stats())
	}
}
