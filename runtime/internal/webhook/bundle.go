package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"cloudtaser/runtime/internal/kubeapi"
)

// FieldManager is the field manager of every write of the injector (install never sets
// caBundle, so a re-run of install does not wipe it).
const FieldManager = "cloudtaser-injector"

// maxWriteAttempts bounds the read-modify-write retries on a conflict.
const maxWriteAttempts = 10

// Publisher maintains this replica's share of one webhook entry's caBundle.
type Publisher struct {
	Client        *kubeapi.Client
	Configuration string // MutatingWebhookConfiguration name
	Webhook       string // the webhook entry in it
	Self          Identity
	Logf          func(format string, args ...any)
	Now           func() time.Time
}

type mwc struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Webhooks []struct {
		Name         string `json:"name"`
		ClientConfig struct {
			CABundle []byte `json:"caBundle"`
		} `json:"clientConfig"`
	} `json:"webhooks"`
}

type podList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Status struct {
			Phase string `json:"phase"`
		} `json:"status"`
	} `json:"items"`
}

// PublishResult tells what one Publish did.
type PublishResult struct {
	Changed bool // a write was made
	Bundle  []*x509.Certificate
}

func (p *Publisher) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Publisher) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

func (p *Publisher) path() string {
	return "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + url.PathEscape(p.Configuration)
}

// alivePods lists the pods of this replica's namespace that are not finished. When the
// list fails (RBAC not granted, API error), every pod counts as alive: nothing is pruned.
func (p *Publisher) alivePods(ctx context.Context) func(string) bool {
	var pods podList
	err := p.Client.Get(ctx, "/api/v1/namespaces/"+url.PathEscape(p.Self.Namespace)+"/pods", &pods)
	if err != nil {
		p.logf("cannot list the pods of namespace %s, so no other replica's CA is pruned: %v", p.Self.Namespace, err)
		return func(string) bool { return true }
	}
	live := map[string]bool{}
	for _, it := range pods.Items {
		if it.Status.Phase != "Succeeded" && it.Status.Phase != "Failed" {
			live[it.Metadata.Name] = true
		}
	}
	return func(pod string) bool { return live[pod] }
}

// Publish makes the webhook entry's caBundle hold exactly own plus the other live
// replicas' CAs (mergeBundle). Read-modify-write: a JSON patch carrying the resourceVersion
// that was read (the API server answers 409 when the object changed meanwhile) and a test of
// the entry's name at its index; on a conflict it reads again, up to maxWriteAttempts.
// own empty removes this replica's CAs (shutdown).
func (p *Publisher) Publish(ctx context.Context, own []*x509.Certificate) (PublishResult, error) {
	var last error
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		if attempt > 0 {
			d := time.Duration(50+rand.IntN(150)) * time.Millisecond * time.Duration(min(attempt, 4))
			select {
			case <-ctx.Done():
				return PublishResult{}, ctx.Err()
			case <-time.After(d):
			}
		}
		res, err := p.publishOnce(ctx, own)
		if err == nil {
			return res, nil
		}
		last = err
		if !kubeapi.IsStatus(err, http.StatusConflict) && !kubeapi.IsStatus(err, http.StatusUnprocessableEntity) {
			return PublishResult{}, err
		}
	}
	return PublishResult{}, fmt.Errorf("caBundle of %s/%s: still conflicting after %d attempts: %w", p.Configuration, p.Webhook, maxWriteAttempts, last)
}

// ErrNoWebhookEntry: the configuration exists but has no entry of that name.
var ErrNoWebhookEntry = errors.New("no such webhook entry")

func (p *Publisher) publishOnce(ctx context.Context, own []*x509.Certificate) (PublishResult, error) {
	var cfg mwc
	if err := p.Client.Get(ctx, p.path(), &cfg); err != nil {
		return PublishResult{}, err
	}
	idx := -1
	for i, w := range cfg.Webhooks {
		if w.Name == p.Webhook {
			idx = i
			break
		}
	}
	if idx < 0 {
		return PublishResult{}, fmt.Errorf("MutatingWebhookConfiguration %s has no webhook %s: %w", p.Configuration, p.Webhook, ErrNoWebhookEntry)
	}
	current := cfg.Webhooks[idx].ClientConfig.CABundle
	existing := parseBundle(current)
	alive := func(string) bool { return true }
	if hasOthers(existing, p.Self) {
		alive = p.alivePods(ctx)
	}
	merged := mergeBundle(existing, own, p.Self, alive, p.now())
	want := encodeBundle(merged)
	if bytes.Equal(want, current) {
		return PublishResult{Bundle: merged}, nil
	}
	ops := []map[string]any{
		{"op": "test", "path": fmt.Sprintf("/webhooks/%d/name", idx), "value": p.Webhook},
		{"op": "replace", "path": "/metadata/resourceVersion", "value": cfg.Metadata.ResourceVersion},
	}
	if len(want) == 0 {
		if len(current) > 0 {
			ops = append(ops, map[string]any{"op": "remove", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", idx)})
		}
	} else {
		ops = append(ops, map[string]any{"op": "add", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", idx), "value": want})
	}
	body, err := json.Marshal(ops) // []byte values become base64, as the API wants
	if err != nil {
		return PublishResult{}, err
	}
	if err := p.Client.Patch(ctx, p.path(), kubeapi.JSONPatch, FieldManager, body, nil); err != nil {
		return PublishResult{}, err
	}
	return PublishResult{Changed: true, Bundle: merged}, nil
}

func hasOthers(certs []*x509.Certificate, self Identity) bool {
	for _, c := range certs {
		if id, ok := identityOf(c); ok && id != self && id.Namespace == self.Namespace {
			return true
		}
	}
	return false
}

// contains tells whether bundle holds cert.
func contains(bundle []*x509.Certificate, cert *x509.Certificate) bool {
	for _, c := range bundle {
		if bytes.Equal(c.Raw, cert.Raw) {
			return true
		}
	}
	return false
}
