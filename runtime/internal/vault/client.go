// Package vault is the wrapper's small OpenBao/Vault client: Kubernetes-auth login, KV v2
// reads, KV v2 metadata, token renew and revoke.
//
// Hostile-server hardening (issue 18, finding 4):
//   - every response body is capped at MaxBody (32 MiB); a larger one is an error, never
//     buffered past the cap;
//   - every request has its own timeout (Client.RequestTimeout) inside the caller's context,
//     whose deadline bounds the whole start-up;
//   - redirects are followed only to the same origin (scheme, host and port), at most 3, so
//     the token or the JWT never leaves for another host;
//   - no proxy, ever: the transport's Proxy is nil, so HTTPS_PROXY/HTTP_PROXY/ALL_PROXY in the
//     environment (the app's, which the wrapper inherits) never see the login (issue 28,
//     finding 7); trust comes only from Options (CACert, SkipVerify), which the wrapper takes
//     from the injector's CLOUDTASER_* variables, and the system roots.
//
// Retry policy (Do): connection failures, 429 and 500/502/503/504 (a sealed or starting vault,
// a mesh proxy that is not ready yet) are retried with exponential back-off (250 ms doubling
// to 5 s, ±20 % jitter, Retry-After honoured as a floor) until the context's deadline. Login
// is retried too: a login that reached the server twice only creates a second short-lived
// token, which expires with its TTL. TLS verification failures and every other 4xx are final.
//
// No secret value or token appears in an error message: messages carry the method, the API
// path, the HTTP status and the server's "errors" strings (which vaults never fill with
// values), cut to a bounded length.
package vault

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// MaxBody is the largest response body the client reads.
const MaxBody = 32 << 20

// Client talks to one vault. The token is never printed.
type Client struct {
	base           *url.URL
	http           *http.Client
	token          string
	namespace      string
	RequestTimeout time.Duration
	// OnRequest, when set, is told the duration of every round trip (for timing output).
	OnRequest func(method, path string, status int, d time.Duration)
}

// Options configure New.
type Options struct {
	Address        string
	Namespace      string
	CACert         string
	SkipVerify     bool
	RequestTimeout time.Duration
}

// New builds a client. The address must already be validated (contract.ValidateAddress).
func New(o Options) (*Client, error) {
	base, err := url.Parse(o.Address)
	if err != nil {
		return nil, fmt.Errorf("vault address: %w", err)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.SkipVerify} //nolint:gosec // opt-in
	if o.CACert != "" {
		pem, err := os.ReadFile(o.CACert)
		if err != nil {
			return nil, fmt.Errorf("cannot read the vault CA bundle %s: %w", o.CACert, errors.Unwrap(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the vault CA bundle %s holds no PEM certificate", o.CACert)
		}
		tlsConf.RootCAs = pool
	}
	transport := &http.Transport{
		Proxy:                 nil, // never a proxy from the app's environment (see the package doc)
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: o.RequestTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	c := &Client{base: base, namespace: o.Namespace, RequestTimeout: o.RequestTimeout}
	c.http = &http.Client{Transport: transport, CheckRedirect: c.sameOrigin}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	return c, nil
}

func (c *Client) sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	if req.URL.Scheme != c.base.Scheme || req.URL.Host != c.base.Host {
		return fmt.Errorf("refusing a redirect to another origin (%s://%s): the request carries a credential", req.URL.Scheme, req.URL.Hostname())
	}
	return nil
}

// SetToken sets the token sent with later requests.
func (c *Client) SetToken(t string) { c.token = t }

// HasToken tells whether a token is set.
func (c *Client) HasToken() bool { return c.token != "" }

// Error is a vault API error (HTTP status and the server's error strings).
type Error struct {
	Method string
	Path   string
	Status int
	Errors []string
}

func (e *Error) Error() string {
	said := strings.Join(e.Errors, "; ")
	if said == "" {
		said = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s %s: HTTP %d (%s)", e.Method, e.Path, e.Status, said)
}

// UnreachableError: the vault could not be reached (or kept failing) until the deadline.
type UnreachableError struct {
	Method, Path string
	Last         error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s %s: the vault could not be reached before the deadline: %v", e.Method, e.Path, e.Last)
}

func (e *UnreachableError) Unwrap() error { return e.Last }

// Reply is a decoded response.
type Reply struct {
	Status int
	Body   map[string]any
}

func retryable(status int) bool {
	return status == 429 || status == 500 || status == 502 || status == 503 || status == 504
}

// Do sends method path (relative to /v1/) with an optional JSON body; ok lists non-2xx
// statuses returned as a Reply rather than an *Error. See the package doc for retries.
func (c *Client) Do(ctx context.Context, method, path string, body any, ok ...int) (*Reply, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
		defer clear(payload)
	}
	delay := 250 * time.Millisecond
	var last error
	for {
		reply, retryAfter, err := c.once(ctx, method, path, payload)
		if err == nil {
			if reply.Status/100 == 2 {
				return reply, nil
			}
			for _, s := range ok {
				if reply.Status == s {
					return reply, nil
				}
			}
			verr := &Error{Method: method, Path: path, Status: reply.Status, Errors: serverErrors(reply.Body)}
			if !retryable(reply.Status) {
				return nil, verr
			}
			last = verr
		} else {
			if isFinal(err) || ctx.Err() != nil {
				if ctx.Err() != nil && last != nil {
					return nil, &UnreachableError{method, path, last}
				}
				if ctx.Err() != nil {
					return nil, &UnreachableError{method, path, err}
				}
				return nil, err
			}
			last = err
		}
		wait := delay + time.Duration((rand.Float64()*0.4-0.2)*float64(delay))
		if retryAfter > wait {
			wait = retryAfter
		}
		if dl, has := ctx.Deadline(); has {
			left := time.Until(dl)
			if left <= 0 {
				return nil, &UnreachableError{method, path, last}
			}
			wait = min(wait, left) // one last try at the deadline, not a give-up before it
		}
		select {
		case <-ctx.Done():
			return nil, &UnreachableError{method, path, last}
		case <-time.After(wait):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// isFinal: errors that retrying cannot fix (TLS verification, a refused redirect, a body
// over the cap).
func isFinal(err error) bool {
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	var rerr *tls.RecordHeaderError
	var verr *tls.CertificateVerificationError
	return errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr) ||
		errors.As(err, &rerr) || errors.As(err, &verr) || errors.Is(err, errTooLarge) || errors.Is(err, errRedirect) ||
		errors.Is(err, errBadJSON)
}

var (
	errTooLarge = fmt.Errorf("the vault's response is larger than %d MiB", MaxBody>>20)
	errRedirect = errors.New("redirect refused")
	errBadJSON  = errors.New("the vault's response is not JSON")
)

func (c *Client) once(ctx context.Context, method, path string, payload []byte) (*Reply, time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/" + path
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(rctx, method, u.String(), rd)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("X-Vault-Request", "true")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("X-Vault-Token", c.token)
	}
	if c.namespace != "" {
		req.Header.Set("X-Vault-Namespace", c.namespace)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) && strings.Contains(uerr.Err.Error(), "refusing a redirect") {
			return nil, 0, fmt.Errorf("%w: %v", errRedirect, uerr.Err)
		}
		return nil, 0, scrub(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if c.OnRequest != nil {
		c.OnRequest(method, path, resp.StatusCode, time.Since(start))
	}
	if err != nil {
		return nil, 0, scrub(err)
	}
	defer clear(raw)
	if len(raw) > MaxBody {
		return nil, 0, errTooLarge
	}
	reply := &Reply{Status: resp.StatusCode}
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&reply.Body); err != nil {
			if resp.StatusCode/100 == 2 {
				return nil, 0, errBadJSON
			}
			reply.Body = nil // an error page from a proxy: the status says enough
		}
	}
	var retryAfter time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = min(time.Duration(s)*time.Second, 30*time.Second)
	}
	return reply, retryAfter, nil
}

// scrub keeps the cause of a transport error but drops the URL (which has no secret, but
// the query could in other callers) to keep messages short.
func scrub(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

func serverErrors(body map[string]any) []string {
	list, _ := body["errors"].([]any)
	var out []string
	for _, e := range list {
		if s, ok := e.(string); ok && len(out) < 5 {
			out = append(out, clean(s, 200))
		}
	}
	return out
}

// clean bounds a server-provided string and removes control characters.
func clean(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 32 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return s
}
