package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// CertManager holds this replica's serving certificate in memory and keeps its CA in the
// caBundle. Rotation, at 2/3 of the validity:
//
//  1. a new CA and leaf are made; the bundle is written with the current AND the new CA;
//  2. once that write succeeded, after PropagationDelay (API servers watch the configuration
//     and rebuild their webhook clients), the server presents the new leaf;
//  3. the old CA stays in the bundle for another PropagationDelay, then it is removed.
//
// So at every moment every API server trusts the leaf being served, and no admission fails.
// Every Resync the bundle is rewritten if needed: the CAs of replicas that are gone are
// pruned, and this replica's CA is put back if someone removed it.
type CertManager struct {
	Self             Identity
	DNS              []string
	IPs              []net.IP
	Validity         time.Duration
	Publisher        BundlePublisher
	PropagationDelay time.Duration
	Resync           time.Duration
	Logf             func(format string, args ...any)
	Now              func() time.Time
	// OnPublish is told the outcome of every bundle write attempt (for metrics).
	OnPublish func(err error, changed bool)
	// OnRotate is told when the served certificate changes to a new generation.
	OnRotate func()

	serving atomic.Pointer[servingCert]
	ready   atomic.Bool

	mu          sync.Mutex
	next        *servingCert
	nextSince   time.Time // when the bundle holding next was first confirmed
	retired     *servingCert
	retireUntil time.Time
	published   bool
	curSince    time.Time // when a bundle holding the served CA was first confirmed
}

// BundlePublisher makes the caBundle hold this replica's CAs (own) and the live others;
// Publisher is the real one.
type BundlePublisher interface {
	Publish(ctx context.Context, own []*x509.Certificate) (PublishResult, error)
}

// Intervals derived from the validity: the propagation delay is validity/10 between 1 s and
// 10 s, the resync interval validity/12 between 1 s and 60 s.
func DefaultIntervals(validity time.Duration) (propagation, resync time.Duration) {
	return clamp(validity/10, time.Second, 10*time.Second), clamp(validity/12, time.Second, time.Minute)
}

func clamp(d, lo, hi time.Duration) time.Duration { return max(lo, min(hi, d)) }

func (m *CertManager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *CertManager) logf(format string, args ...any) {
	if m.Logf != nil {
		m.Logf(format, args...)
	}
}

// Init makes the first certificate. Call before serving.
func (m *CertManager) Init() error {
	if m.Validity <= 0 {
		return errors.New("certificate validity must be positive")
	}
	c, err := newServingCert(m.Self, m.DNS, m.IPs, m.Validity, m.now())
	if err != nil {
		return err
	}
	m.serving.Store(c)
	return nil
}

// GetCertificate is the tls.Config hook.
func (m *CertManager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.serving.Load()
	if c == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return c.tls, nil
}

// ServingCA is the CA of the certificate being served.
func (m *CertManager) ServingCA() *x509.Certificate { return m.serving.Load().ca }

// ServingLeaf is the certificate being served.
func (m *CertManager) ServingLeaf() *x509.Certificate { return m.serving.Load().tls.Leaf }

// Ready: the bundles this replica read or wrote have held the CA of the certificate it serves
// for at least PropagationDelay (so every API server trusts it).
func (m *CertManager) Ready() bool { return m.ready.Load() }

func (m *CertManager) own() []*x509.Certificate {
	own := []*x509.Certificate{m.serving.Load().ca}
	if m.next != nil {
		own = append(own, m.next.ca)
	}
	if m.retired != nil {
		own = append(own, m.retired.ca)
	}
	return own
}

// Sync runs one step: start a rotation when due, write the bundle, promote or retire a
// generation when its time has come. It returns when the next step is due.
func (m *CertManager) Sync(ctx context.Context) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	cur := m.serving.Load()
	if m.retired != nil && !now.Before(m.retireUntil) {
		m.retired = nil
	}
	if m.next == nil && !now.Before(cur.rotateAt) {
		c, err := newServingCert(m.Self, m.DNS, m.IPs, m.Validity, now)
		if err != nil {
			return now.Add(time.Second), err
		}
		m.next, m.nextSince = c, time.Time{}
		m.logf("certificate rotation: new CA (valid until %s) added to the caBundle first", c.ca.NotAfter.UTC().Format(time.RFC3339))
	}
	res, err := m.Publisher.Publish(ctx, m.own())
	if m.OnPublish != nil {
		m.OnPublish(err, res.Changed)
	}
	if err != nil {
		return now.Add(min(m.Resync, 5*time.Second)), err
	}
	if res.Changed || !m.published {
		m.logf("the caBundle holds %d CA(s), this replica's included", len(res.Bundle))
	}
	m.published = true
	// Ready (and, with --reuse-port, listening) one propagation delay after the bundle
	// holding the served CA was confirmed: every API server has seen it by then.
	if !contains(res.Bundle, cur.ca) {
		m.curSince = time.Time{}
	} else if m.curSince.IsZero() {
		m.curSince = now
	}
	m.ready.Store(!m.curSince.IsZero() && now.Sub(m.curSince) >= m.PropagationDelay)
	if m.next != nil {
		if m.nextSince.IsZero() {
			m.nextSince = now
		}
		if now.Sub(m.nextSince) >= m.PropagationDelay {
			m.retired, m.retireUntil = cur, now.Add(m.PropagationDelay)
			m.serving.Store(m.next)
			m.curSince = m.nextSince
			m.next = nil
			m.logf("certificate rotation: now serving the new certificate; the old CA leaves the caBundle in %s", m.PropagationDelay)
			if m.OnRotate != nil {
				m.OnRotate()
			}
			return now, nil
		}
	}
	due := now.Add(m.Resync)
	cur = m.serving.Load()
	if m.next == nil && cur.rotateAt.Before(due) {
		due = cur.rotateAt
	}
	if m.next != nil {
		due = minTime(due, m.nextSince.Add(m.PropagationDelay))
	}
	if m.retired != nil {
		due = minTime(due, m.retireUntil)
	}
	if !m.ready.Load() && !m.curSince.IsZero() {
		due = minTime(due, m.curSince.Add(m.PropagationDelay))
	}
	return due, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Run calls Sync until ctx ends. Errors are logged; the next attempt follows soon.
func (m *CertManager) Run(ctx context.Context) {
	for {
		due, err := m.Sync(ctx)
		if err != nil && ctx.Err() == nil {
			m.logf("caBundle update failed (retrying): %v", err)
		}
		wait := time.Until(due)
		if wait < 0 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Withdraw removes this replica's CAs from the bundle (shutdown; best effort).
func (m *CertManager) Withdraw(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ready.Store(false)
	m.curSince = time.Time{}
	_, err := m.Publisher.Publish(ctx, nil)
	return err
}
