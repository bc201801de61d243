package webhook

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

// bundleLog is an in-memory caBundle: what CertManager asked to publish, in order. The real
// Publisher is proven against kube-apiserver (cmd/cloudtaser-runtime/inject_e2e_test.go);
// this isolates the rotation order, with a clock the test moves.
type bundleLog struct {
	fail    bool
	current []*x509.Certificate
	writes  int
}

func (b *bundleLog) Publish(_ context.Context, own []*x509.Certificate) (PublishResult, error) {
	if b.fail {
		return PublishResult{}, errors.New("API server unreachable")
	}
	changed := len(own) != len(b.current)
	for i := range own {
		if !changed && !own[i].Equal(b.current[i]) {
			changed = true
		}
	}
	b.current = append([]*x509.Certificate(nil), own...)
	if changed {
		b.writes++
	}
	return PublishResult{Changed: changed, Bundle: b.current}, nil
}

func TestRotationPublishesTheNewCABeforeServingIt(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	pub := &bundleLog{}
	rotated := 0
	m := &CertManager{Self: Identity{"ns", "p"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Validity: 30 * time.Second,
		Publisher: pub, PropagationDelay: 3 * time.Second, Resync: 2500 * time.Millisecond,
		Now: func() time.Time { return now }, OnRotate: func() { rotated++ }}
	if err := m.Init(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first := m.ServingCA()
	if m.Ready() {
		t.Fatal("ready before any publish")
	}
	due, err := m.Sync(ctx)
	if err != nil || len(pub.current) != 1 || !pub.current[0].Equal(first) {
		t.Fatalf("first sync: %v bundle=%d", err, len(pub.current))
	}
	// Published, but ready only once every API server can have seen it.
	if m.Ready() || due.After(now.Add(3*time.Second)) {
		t.Fatalf("ready %v at once; next sync after %s, want at most the propagation delay", m.Ready(), due.Sub(now))
	}
	now = now.Add(3 * time.Second)
	if due, err = m.Sync(ctx); err != nil || !m.Ready() || due.Sub(now) != 2500*time.Millisecond {
		t.Fatalf("after the delay: %v ready=%v next after %s", err, m.Ready(), due.Sub(now))
	}

	// At 2/3 of the validity (20 s) the new CA joins the bundle; the old leaf is still served.
	now = now.Add(17 * time.Second)
	if _, err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(pub.current) != 2 || !m.ServingCA().Equal(first) {
		t.Fatalf("rotation start: bundle %d, serving the new CA already: %v", len(pub.current), !m.ServingCA().Equal(first))
	}
	next := pub.current[1]

	// The switch waits one propagation delay from the write that published the new CA.
	now = now.Add(time.Second)
	if _, err := m.Sync(ctx); err != nil || !m.ServingCA().Equal(first) {
		t.Fatalf("switched before the propagation delay: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := m.Sync(ctx); err != nil || !m.ServingCA().Equal(next) || rotated != 1 {
		t.Fatalf("after the delay: err %v, serving next %v, rotations %d", err, m.ServingCA().Equal(next), rotated)
	}
	// The old CA stays one more delay, then leaves.
	if _, err := m.Sync(ctx); err != nil || len(pub.current) != 2 {
		t.Fatalf("old CA left at once: %d", len(pub.current))
	}
	now = now.Add(3 * time.Second)
	if _, err := m.Sync(ctx); err != nil || len(pub.current) != 1 || !pub.current[0].Equal(next) || !m.Ready() {
		t.Fatalf("old CA kept: bundle %d", len(pub.current))
	}

	// Next rotation (due 20 s after next was made) while the API server is unreachable: the
	// new leaf is never served, however long that lasts, until its CA is published.
	pub.fail = true
	now = now.Add(14 * time.Second)
	for i := 0; i < 3; i++ {
		if _, err := m.Sync(ctx); err == nil || !m.ServingCA().Equal(next) || !m.Ready() {
			t.Fatalf("publish failing: err %v, switched %v, ready %v", err, !m.ServingCA().Equal(next), m.Ready())
		}
		now = now.Add(10 * time.Second)
	}
	pub.fail = false
	if _, err := m.Sync(ctx); err != nil || !m.ServingCA().Equal(next) || len(pub.current) != 2 {
		t.Fatalf("switched at the publishing write: %v", err)
	}
	now = now.Add(3 * time.Second)
	if _, err := m.Sync(ctx); err != nil || m.ServingCA().Equal(next) || rotated != 2 {
		t.Fatalf("second rotation did not complete: %v", err)
	}
	// Withdraw empties this replica's share.
	if err := m.Withdraw(ctx); err != nil || len(pub.current) != 0 || m.Ready() {
		t.Fatalf("withdraw: %v %d", err, len(pub.current))
	}
}
