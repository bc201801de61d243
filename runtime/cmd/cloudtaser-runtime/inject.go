package main

// The `inject` subcommand: the admission webhook (runtime/internal/webhook) serving the pod
// mutation of runtime/internal/inject. Flags: docs/injector.md.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/inject"
	"cloudtaser/runtime/internal/kubeapi"
	"cloudtaser/runtime/internal/registry"
	"cloudtaser/runtime/internal/webhook"
	"cloudtaser/runtime/internal/wrap"
)

// Exit codes of `inject` (the CLI's table, docs/cli.md): 2 bad flags or environment,
// 4 the server could not be started (listen failed), 70 a bug.
const exitFailed = 4

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type injectFlags struct {
	listen, runtimeImage, audience, emptyDir  string
	configuration, webhookName                string
	kubeTokenFile, kubeCAFile                 string
	allowed, mirrors, sans                    listFlag
	readPullSecrets, reusePort                bool
	tagTTL, certValidity, shutdownDelay       string
	tagTTLd, certValidityd, shutdownDelayd    time.Duration
	mirrorMap                                 map[string]string
	podName, podNamespace, kubeHost, kubePort string
	dnsSANs                                   []string
	ipSANs                                    []net.IP
	defaults                                  contract.Defaults
	jwtTokenExpiration                        int64
}

const injectUsage = `usage: cloudtaser-runtime inject --runtime-image REF --allowed-vault-address URL --audience AUD --san NAME [flags]

The admission webhook: injects the wrapper into pods labelled cloudtaser.io/inject=true and
keeps its in-memory CA in the MutatingWebhookConfiguration's caBundle. See docs/injector.md.
Environment: POD_NAME, POD_NAMESPACE (downward API), KUBERNETES_SERVICE_HOST/PORT.

flags:
`

// parseInjectFlags parses and validates every flag; the error is one line for the user.
func parseInjectFlags(args []string, getenv func(string) string, stderr io.Writer) (*injectFlags, error) {
	f := &injectFlags{}
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // -h prints the full text below; a bad flag only its own line and a hint
	fs.StringVar(&f.listen, "listen", ":8443", "`ADDR` (host:port) to serve HTTPS on")
	fs.StringVar(&f.runtimeImage, "runtime-image", "", "image `REF` of the init container (normally the webhook's own image); required")
	fs.Var(&f.allowed, "allowed-vault-address", "vault `URL` pods may use (repeatable, at least one); pods pointing elsewhere are denied")
	fs.StringVar(&f.audience, "audience", "", "`AUD`ience of the projected ServiceAccount token; required")
	fs.Var(&f.mirrors, "mirror", "registry mirror `HOST=MIRRORHOST` (repeatable), e.g. docker.io=registry.corp:5000")
	fs.BoolVar(&f.readPullSecrets, "read-pull-secrets", false, "use the pod's imagePullSecrets for image lookups (needs get secrets)")
	fs.StringVar(&f.tagTTL, "tag-ttl", "5m", "tag -> digest cache `DURATION`")
	fs.StringVar(&f.emptyDir, "emptydir-size", "32Mi", "sizeLimit `QUANTITY` of the memory emptyDir holding the runtime")
	fs.StringVar(&f.configuration, "webhook-configuration", "cloudtaser-injector", "`NAME` of the MutatingWebhookConfiguration whose caBundle it maintains")
	fs.StringVar(&f.webhookName, "webhook-name", "inject.cloudtaser.io", "`NAME` of the webhook entry in it")
	fs.Var(&f.sans, "san", "DNS `NAME` or IP of the serving certificate (repeatable, at least one)")
	fs.BoolVar(&f.reusePort, "reuse-port", false, "set SO_REUSEPORT (hostNetwork replicas sharing one port on one node)")
	fs.StringVar(&f.certValidity, "cert-validity", "24h", "serving certificate `DURATION` (rotated at 2/3 of it; 30s to 8760h)")
	fs.StringVar(&f.shutdownDelay, "shutdown-delay", "5s", "on SIGTERM, `DURATION` between /readyz turning false and closing the listener")
	fs.StringVar(&f.kubeTokenFile, "kube-token-file", kubeapi.DefaultTokenFile, "ServiceAccount token `FILE` for the API server (re-read per request)")
	fs.StringVar(&f.kubeCAFile, "kube-ca-file", kubeapi.DefaultCAFile, "cluster CA `FILE` for the API server")
	fs.StringVar(&f.defaults.Address, "default-vault-address", "", "vault `URL` of pods without cloudtaser.io/vault-address (must be allowed)")
	fs.StringVar(&f.defaults.AuthMount, "default-auth-path", "", "auth mount `PATH` (auth/<mount>) of pods without cloudtaser.io/vault-auth-path (else auth/kubernetes)")
	fs.StringVar(&f.defaults.AuthMethod, "default-auth-method", "", "`METHOD` (kubernetes or jwt) of pods without cloudtaser.io/vault-auth-method (else kubernetes)")
	fs.StringVar(&f.defaults.Namespace, "default-vault-namespace", "", "vault `NAMESPACE` of pods without cloudtaser.io/vault-namespace (else none)")
	fs.Int64Var(&f.jwtTokenExpiration, "jwt-token-expiration", 600, "`SECONDS` a projected token lives in jwt mode (600 to 4294967296)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, injectUsage)
			fs.PrintDefaults()
			return nil, err
		}
		// the flag package printed the problem
		return nil, errors.New("see cloudtaser-runtime inject -h for the flags")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (inject takes flags only)", fs.Arg(0))
	}
	host, port, err := net.SplitHostPort(f.listen)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("--listen %q is not HOST:PORT or :PORT with a port 1-65535", f.listen)
	}
	if host != "" && net.ParseIP(host) == nil && !contract.HostName(host) {
		return nil, fmt.Errorf("--listen %q: the host is neither an IP address nor a host name", f.listen)
	}
	for _, d := range []struct {
		flag string
		v    string
		to   *time.Duration
		lo   time.Duration
		hi   time.Duration
	}{
		{"--tag-ttl", f.tagTTL, &f.tagTTLd, 0, 24 * time.Hour},
		{"--cert-validity", f.certValidity, &f.certValidityd, 30 * time.Second, 8760 * time.Hour},
		{"--shutdown-delay", f.shutdownDelay, &f.shutdownDelayd, 0, 5 * time.Minute},
	} {
		v, err := time.ParseDuration(strings.TrimSpace(d.v))
		if err != nil || v < d.lo || v > d.hi {
			return nil, fmt.Errorf("%s %q must be a duration such as 90s or 24h, from %s to %s", d.flag, d.v, d.lo, d.hi)
		}
		*d.to = v
	}
	f.mirrorMap = map[string]string{}
	for _, m := range f.mirrors {
		h, mh, err := registry.ParseMirror(m)
		if err != nil {
			return nil, fmt.Errorf("--mirror: %v", err)
		}
		if _, dup := f.mirrorMap[h]; dup {
			return nil, fmt.Errorf("--mirror: %s is given twice", h)
		}
		f.mirrorMap[h] = mh
	}
	if !contract.HostName(f.configuration) {
		return nil, fmt.Errorf("--webhook-configuration %q is not a Kubernetes object name", f.configuration)
	}
	if !contract.HostName(f.webhookName) || strings.Count(f.webhookName, ".") < 2 {
		return nil, fmt.Errorf("--webhook-name %q is not a webhook name (a DNS name with at least three parts, e.g. inject.cloudtaser.io)", f.webhookName)
	}
	if f.dnsSANs, f.ipSANs, err = webhook.ParseSANs(f.sans); err != nil {
		return nil, err
	}
	f.podName, f.podNamespace = getenv("POD_NAME"), getenv("POD_NAMESPACE")
	if !contract.HostName(f.podName) || !contract.DNSLabel(f.podNamespace) {
		return nil, errors.New("POD_NAME and POD_NAMESPACE must name this pod (set them from the downward API: fieldRef metadata.name and metadata.namespace)")
	}
	f.kubeHost, f.kubePort = getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if f.kubeHost == "" || f.kubePort == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (in a pod they are; with no kube-proxy, install's --kube-api sets them)")
	}
	return f, nil
}

// logger writes one timestamped line per event to stderr.
type logger struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *logger) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s cloudtaser-runtime inject: %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), fmt.Sprintf(format, args...))
}

// failf writes the one-line error a failed start ends with. Once the caBundle upkeep runs
// it logs from its own goroutine, so every write to the shared stream goes through mu.
func (l *logger) failf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "cloudtaser-runtime inject: %s\n", fmt.Sprintf(format, args...))
}

// secretGetter reads pull secrets through the API (only with --read-pull-secrets).
type secretGetter struct{ c *kubeapi.Client }

func (g secretGetter) GetSecret(ctx context.Context, namespace, name string) (*registry.Secret, error) {
	var s struct {
		Type string            `json:"type"`
		Data map[string][]byte `json:"data"`
	}
	err := g.c.Get(ctx, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/secrets/"+url.PathEscape(name), &s)
	if kubeapi.IsStatus(err, http.StatusNotFound) {
		return nil, fmt.Errorf("secret %s/%s: %w", namespace, name, registry.ErrSecretNotFound)
	}
	if err != nil {
		return nil, err
	}
	return &registry.Secret{Type: s.Type, Data: s.Data}, nil
}

func registrySamples(cfg *inject.Config) func() []webhook.Sample {
	return func() []webhook.Sample {
		s := cfg.Stats()
		return []webhook.Sample{
			{Name: "registry_lookups_total", Help: "Image ENTRYPOINT/CMD lookups.", Type: "counter", Value: float64(s.Lookups)},
			{Name: "registry_cache_hits_total", Help: "Lookups answered from the cache.", Type: "counter", Value: float64(s.CacheHits)},
			{Name: "registry_deduplicated_total", Help: "Lookups answered by a lookup of the same image in flight.", Type: "counter", Value: float64(s.Deduplicated)},
			{Name: "registry_fetches_total", Help: "Lookups that went to a registry.", Type: "counter", Value: float64(s.Fetches)},
			{Name: "registry_errors_total", Help: "Lookups that failed.", Type: "counter", Value: float64(s.Errors)},
		}
	}
}

func runInject(args []string) int {
	return injectMain(args, os.Getenv, os.Stderr)
}

func injectMain(args []string, getenv func(string) string, stderr io.Writer) int {
	f, err := parseInjectFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "cloudtaser-runtime inject: %v\n", err)
		return wrap.ExitConfig
	}
	cfg := &inject.Config{RuntimeImage: f.runtimeImage, AllowedAddresses: f.allowed, Audience: f.audience,
		EmptyDirSize: f.emptyDir, Version: version, Defaults: f.defaults, JWTTokenExpiration: f.jwtTokenExpiration}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "cloudtaser-runtime inject: %v\n", err)
		return wrap.ExitConfig
	}
	log := &logger{w: stderr}
	kc, err := kubeapi.New(kubeapi.Config{Host: f.kubeHost, Port: f.kubePort, TokenFile: f.kubeTokenFile, CAFile: f.kubeCAFile,
		UserAgent: "cloudtaser-injector/" + version})
	if err != nil {
		fmt.Fprintf(stderr, "cloudtaser-runtime inject: %v\n", err)
		return wrap.ExitConfig
	}
	ropts := registry.Options{Mirrors: f.mirrorMap, TagTTL: f.tagTTLd}
	if f.tagTTLd == 0 {
		ropts.TagTTL = -1 // --tag-ttl 0: no tag cache
	}
	if f.readPullSecrets {
		ropts.Secrets = secretGetter{kc}
	}
	resolver, err := registry.New(ropts)
	if err != nil {
		fmt.Fprintf(stderr, "cloudtaser-runtime inject: --mirror: %v\n", err)
		return wrap.ExitConfig
	}
	cfg.Resolver = resolver

	self := webhook.Identity{Namespace: f.podNamespace, Pod: f.podName}
	metrics := webhook.NewMetrics()
	propagation, resync := webhook.DefaultIntervals(f.certValidityd)
	certs := &webhook.CertManager{
		Self: self, DNS: f.dnsSANs, IPs: f.ipSANs, Validity: f.certValidityd,
		Publisher:        &webhook.Publisher{Client: kc, Configuration: f.configuration, Webhook: f.webhookName, Self: self, Logf: log.logf},
		PropagationDelay: propagation, Resync: resync, Logf: log.logf,
		OnPublish: metrics.Published,
		OnRotate:  metrics.Rotated,
	}
	if err := certs.Init(); err != nil {
		fmt.Fprintf(stderr, "cloudtaser-runtime inject: cannot make the serving certificate: %v\n", err)
		return wrap.ExitInternal
	}
	metrics.Extra = registrySamples(cfg)
	srv := webhook.New(webhook.Options{Mutate: func(ctx context.Context, req *webhook.Request) webhook.Decision { return inject.Mutate(ctx, cfg, req) }, Certs: certs, Metrics: metrics, Logf: log.logf})
	metrics.Gauges = func() []webhook.Sample {
		ready := 0.0
		if certs.Ready() {
			ready = 1
		}
		return []webhook.Sample{
			{Name: "ready", Help: "1 when this replica's CA is in the caBundle.", Type: "gauge", Value: ready},
			{Name: "serving_cert_expiry_timestamp_seconds", Help: "Expiry of the certificate being served (Unix time).", Type: "gauge", Value: float64(certs.ServingLeaf().NotAfter.Unix())},
		}
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	mgrCtx, stopMgr := context.WithCancel(context.Background())
	defer stopMgr()
	mgrDone := make(chan struct{})
	go func() { defer close(mgrDone); certs.Run(mgrCtx) }()
	// stop ends the caBundle upkeep and takes this replica's CA out of the bundle (best
	// effort: if it fails, the other replicas prune it once this pod is gone).
	stop := func(code int) int {
		r := metrics.Requests()
		log.logf("answered %d mutated, %d unchanged, %d denied, %d invalid admission requests",
			r[webhook.ResultMutated], r[webhook.ResultUnchanged], r[webhook.ResultDenied], r[webhook.ResultInvalid])
		stopMgr()
		<-mgrDone
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := certs.Withdraw(ctx); err != nil {
			log.logf("could not remove this replica's CA from the caBundle (the other replicas prune it): %v", err)
		} else {
			log.logf("this replica's CA is out of the caBundle; stopped")
		}
		return code
	}
	log.logf("starting %s as %s; caBundle of %s/%s; serving certificate valid %s", version, self, f.configuration, f.webhookName, f.certValidityd)

	if f.reusePort {
		// Replicas sharing one port: the kernel hands connections to any of them, so this one
		// listens only once the API server trusts its certificate.
		for !certs.Ready() {
			select {
			case s := <-sigs:
				log.logf("%s before the CA was published: stopping", s)
				return stop(0)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	ln, err := webhook.Listen(context.Background(), f.listen, f.reusePort)
	if err != nil {
		log.failf("cannot listen on %s: %v", f.listen, err)
		return stop(exitFailed)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.logf("serving on %s (reuse-port %v)", ln.Addr(), f.reusePort)

	select {
	case err := <-served:
		log.logf("the server stopped: %v", err)
		return stop(exitFailed)
	case s := <-sigs:
		log.logf("%s: /readyz is false; closing the listener in %s", s, f.shutdownDelayd)
	}
	srv.Drain()
	select {
	case <-time.After(f.shutdownDelayd):
	case <-sigs:
		log.logf("second signal: closing now")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	if err := srv.Shutdown(ctx); err != nil {
		log.logf("in-flight requests did not finish in time: %v", err)
	}
	cancel()
	<-served
	return stop(0)
}
