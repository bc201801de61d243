// Package kubeapi is the injector's small in-cluster Kubernetes API client (standard library
// only): JSON GET, LIST and PATCH against the API server named by KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT, authenticated with the pod's ServiceAccount token and verified
// with the cluster CA.
//
//   - The token file is read again before every request (the kubelet rotates projected tokens;
//     a cached token would expire): a few hundred bytes from tmpfs, cheaper than a stat race.
//   - The CA bundle is read once, when the client is built.
//   - Every response body is capped at MaxBody; every request has its own timeout inside the
//     caller's context.
//   - No token appears in an error message; messages carry the method, the API path, the HTTP
//     status and the server's Status message.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// In-cluster defaults (the ServiceAccount admission plugin mounts these in every pod).
const (
	DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// MaxBody is the largest response body read (a MutatingWebhookConfiguration or a pod list of
// one namespace is far below it).
const MaxBody = 16 << 20

// Patch content types.
const (
	JSONPatch  = "application/json-patch+json"
	MergePatch = "application/merge-patch+json"
)

// Config locates the API server and the credentials.
type Config struct {
	Host, Port string // KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT
	TokenFile  string
	CAFile     string
	// RequestTimeout bounds one request (default 10 s).
	RequestTimeout time.Duration
	// UserAgent is sent with every request.
	UserAgent string
}

// Client is a minimal API client. Safe for concurrent use.
type Client struct {
	base    string
	cfg     Config
	http    *http.Client
	timeout time.Duration
}

// New validates the configuration, reads the CA bundle and checks that the token file is
// readable (its content is read again per request).
func New(cfg Config) (*Client, error) {
	if cfg.Host == "" || cfg.Port == "" {
		return nil, errors.New("the API server host and port are required")
	}
	if strings.ContainsAny(cfg.Host, "/?#@ ") || strings.ContainsAny(cfg.Port, "/?#@ :") {
		return nil, fmt.Errorf("the API server address %q is not a host and a port", net.JoinHostPort(cfg.Host, cfg.Port))
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read the cluster CA %s: %w", cfg.CAFile, errors.Unwrap(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the cluster CA %s holds no PEM certificate", cfg.CAFile)
	}
	if _, err := readToken(cfg.TokenFile); err != nil {
		return nil, err
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "cloudtaser-injector"
	}
	transport := &http.Transport{
		Proxy:               nil, // the in-cluster API server is never reached through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &Client{
		base:    "https://" + net.JoinHostPort(cfg.Host, cfg.Port),
		cfg:     cfg,
		http:    &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		timeout: cfg.RequestTimeout,
	}, nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the ServiceAccount token %s: %w", path, errors.Unwrap(err))
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("the ServiceAccount token file %s is empty", path)
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return "", fmt.Errorf("the ServiceAccount token file %s holds a character a token cannot have", path)
		}
	}
	return t, nil
}

// StatusError is a non-2xx answer of the API server.
type StatusError struct {
	Method, Path string
	Code         int
	Reason       string // metav1.Status reason, e.g. Conflict, NotFound
	Message      string // metav1.Status message (cut to a bounded length)
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	return fmt.Sprintf("%s %s: HTTP %d (%s)", e.Method, e.Path, e.Code, msg)
}

// IsStatus tells whether err is a StatusError with that HTTP code.
func IsStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}

// Get decodes the object at path into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, "", nil, out)
}

// Patch sends a patch of contentType (JSONPatch or MergePatch) with the field manager and
// decodes the answer into out (may be nil).
func (c *Client) Patch(ctx context.Context, path, contentType, fieldManager string, body []byte, out any) error {
	if fieldManager != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "fieldManager=" + fieldManager
	}
	return c.Do(ctx, http.MethodPatch, path, contentType, body, out)
}

// Do sends one request. path starts with "/" (e.g. /api/v1/namespaces/x/pods).
func (c *Client) Do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("API path %q does not start with /", path)
	}
	shown := path
	if i := strings.IndexByte(shown, '?'); i >= 0 {
		shown = shown[:i]
	}
	token, err := readToken(c.cfg.TokenFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, shown, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// url.Error carries the full URL (no credential in it) and the cause.
		return fmt.Errorf("%s %s: %w", method, shown, unwrapURL(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, shown, err)
	}
	if len(data) > MaxBody {
		return fmt.Errorf("%s %s: the answer is over %d bytes", method, shown, MaxBody)
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Method: method, Path: shown, Code: resp.StatusCode}
		var st struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &st) == nil {
			se.Reason = st.Reason
			se.Message = cut(st.Message, 300)
		}
		return se
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the expected JSON: %w", method, shown, err)
	}
	return nil
}

func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

func cut(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
