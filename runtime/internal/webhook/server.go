// Package webhook is the injector's HTTPS server: /mutate (AdmissionReview v1), /healthz,
// /readyz, /metrics; its serving certificate held only in memory and its CA published into
// the MutatingWebhookConfiguration's caBundle (CertManager, Publisher).
//
// The pod mutation itself is not here: the server decodes the AdmissionReview envelope
// (review.go, its only declaration), calls a Mutator (runtime/internal/inject's Mutate) with
// the typed request and turns the Decision it returns into the answer, so this package knows
// the envelope and the denial reasons, and nothing about pods.
//
// Logging: one line per event (start, caBundle writes, rotation, shutdown, a failed
// request's status); never a request body, a pod spec, an environment value or a token.
package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxBody caps an AdmissionReview request body (the API server's own request limit is 3 MiB;
// the review wraps the object once on CREATE).
const MaxBody = 4 << 20

// Server timeouts. IdleTimeout is above the API server's 90 s idle keep-alive so that the
// server never closes a connection the API server is about to reuse.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 40 * time.Second // above the API server's largest timeoutSeconds (30)
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 64 << 10
)

// Mutator decides one admission request (its uid already checked). ctx carries the deadline
// derived from the API server's ?timeout=.
type Mutator func(ctx context.Context, request *Request) Decision

// Options configure a Server.
type Options struct {
	Mutate  Mutator
	Certs   *CertManager // GetCertificate and readiness
	Metrics *Metrics
	Logf    func(format string, args ...any)
	// DefaultTimeout is the request budget when the API server sends no ?timeout= (10 s).
	DefaultTimeout time.Duration
}

// Server answers admission requests.
type Server struct {
	opt      Options
	draining atomic.Bool
	http     *http.Server
}

// New builds a server (not yet listening).
func New(opt Options) *Server {
	if opt.Metrics == nil {
		opt.Metrics = NewMetrics()
	}
	if opt.DefaultTimeout <= 0 {
		opt.DefaultTimeout = 10 * time.Second
	}
	s := &Server{opt: opt}
	mux := http.NewServeMux()
	mux.HandleFunc("/mutate", s.mutate)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { plain(w, http.StatusOK, "ok\n") })
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc("/metrics", s.metrics)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: opt.Certs.GetCertificate},
		ErrorLog:          log.New(logWriter{opt.Logf}, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				opt.Metrics.Connected()
			}
		},
	}
	return s
}

type logWriter struct{ logf func(string, ...any) }

func (l logWriter) Write(p []byte) (int, error) {
	if l.logf != nil {
		l.logf("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (s *Server) logf(format string, args ...any) {
	if s.opt.Logf != nil {
		s.opt.Logf(format, args...)
	}
}

// Listen opens the TCP listener; with reusePort it sets SO_REUSEPORT first, so several
// processes (hostNetwork replicas on one node) can bind the same address and the kernel
// spreads new connections between them.
func Listen(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("setting SO_REUSEPORT: %w", serr)
			}
			return nil
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}

// Serve serves TLS on ln until Shutdown; it returns nil after a graceful shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Drain makes /readyz answer 503 (the first step of a shutdown) while requests are still
// served.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting, lets in-flight requests finish (until ctx ends) and closes idle
// connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	return s.http.Shutdown(ctx)
}

func (s *Server) ready() (bool, string) {
	switch {
	case s.draining.Load():
		return false, "shutting down"
	case s.opt.Certs != nil && !s.opt.Certs.Ready():
		return false, "this replica's CA is not in the caBundle yet"
	}
	return true, ""
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if ok, why := s.ready(); !ok {
		plain(w, http.StatusServiceUnavailable, why+"\n")
		return
	}
	plain(w, http.StatusOK, "ok\n")
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		plain(w, http.StatusMethodNotAllowed, "GET only\n")
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_ = s.opt.Metrics.Write(w)
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// Budget turns the API server's ?timeout= value ("10s"; Go duration syntax, or a bare number
// of seconds) into the time the mutation may take: the timeout less a margin for the answer
// to travel back (a fifth of it, at most 1 s), capped at 30 s. A missing, unparsable or
// non-positive value gives def less the margin.
func Budget(query string, def time.Duration) time.Duration {
	t := def
	if query != "" {
		if d, err := time.ParseDuration(query); err == nil && d > 0 {
			t = d
		} else if n, err := parseSeconds(query); err == nil && n > 0 {
			t = n
		}
	}
	t = min(t, 30*time.Second)
	return t - min(t/5, time.Second)
}

func parseSeconds(s string) (time.Duration, error) {
	var n int64
	if s == "" || len(s) > 4 {
		return 0, errors.New("not a number of seconds")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a number of seconds")
		}
		n = n*10 + int64(s[i]-'0')
	}
	return time.Duration(n) * time.Second, nil
}

func (s *Server) fail(w http.ResponseWriter, start time.Time, code int, msg string) {
	s.opt.Metrics.Observe(ResultInvalid, "", time.Since(start))
	s.logf("/mutate: HTTP %d: %s", code, msg)
	plain(w, code, msg+"\n")
}

func (s *Server) mutate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		s.fail(w, start, http.StatusMethodNotAllowed, "POST an AdmissionReview")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.fail(w, start, http.StatusUnsupportedMediaType, "the body must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.fail(w, start, http.StatusRequestEntityTooLarge, fmt.Sprintf("the AdmissionReview is over %d bytes", MaxBody))
			return
		}
		s.fail(w, start, http.StatusBadRequest, "cannot read the body")
		return
	}
	var in Review
	var uid struct {
		UID string `json:"uid"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		s.fail(w, start, http.StatusBadRequest, "the body is not an AdmissionReview (not JSON)")
		return
	}
	if in.APIVersion != ReviewAPIVersion || in.Kind != ReviewKind {
		s.fail(w, start, http.StatusBadRequest, "only AdmissionReview admission.k8s.io/v1 is served (admissionReviewVersions: [v1])")
		return
	}
	if len(in.Request) == 0 || json.Unmarshal(in.Request, &uid) != nil || uid.UID == "" {
		s.fail(w, start, http.StatusBadRequest, "the AdmissionReview has no request with a uid")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), Budget(r.URL.Query().Get("timeout"), s.opt.DefaultTimeout))
	defer cancel()
	d := s.decide(ctx, in.Request)
	out := Review{APIVersion: ReviewAPIVersion, Kind: ReviewKind, Response: d.Response(uid.UID)}
	data, err := json.Marshal(out)
	if err != nil {
		s.fail(w, start, http.StatusInternalServerError, "cannot encode the answer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
	s.opt.Metrics.Observe(d.Result(), d.Reason, time.Since(start))
	if !d.Allowed {
		s.logf("denied (%s) request %s", d.Reason, uid.UID)
	}
}

// decide reads the request and calls the mutator; a request it cannot read is denied with
// reason bad-request (HTTP status 400), a panic with reason internal (fail closed).
func (s *Server) decide(ctx context.Context, raw json.RawMessage) (d Decision) {
	defer func() {
		if p := recover(); p != nil {
			s.logf("the mutator panicked (a bug; %T)", p) // the value itself could quote the pod
			d = Decision{Allowed: false, Code: http.StatusInternalServerError, Reason: ReasonInternal,
				Message: "cloudtaser: the injector failed on this pod (a bug). Look at the injector's log and report it; the pod was not created unprotected."}
		}
	}()
	var req Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return Decision{Code: http.StatusBadRequest, Reason: ReasonBadRequest,
			Message: "cloudtaser: the admission request is not readable. Check the API server's admissionReviewVersions (v1)."}
	}
	if s.opt.Mutate == nil {
		panic("no mutator")
	}
	return s.opt.Mutate(ctx, &req)
}
