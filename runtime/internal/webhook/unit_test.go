package webhook

import (
	"bufio"
	"crypto/x509"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestBudgetFollowsTheAPIServersTimeoutLessAMargin(t *testing.T) {
	def := 10 * time.Second
	cases := map[string]time.Duration{
		"":      9 * time.Second, // default 10 s less 1 s
		"10s":   9 * time.Second,
		"30s":   29 * time.Second,
		"1s":    800 * time.Millisecond, // a fifth of it
		"2":     1600 * time.Millisecond,
		"5s":    4 * time.Second,
		"60s":   29 * time.Second, // capped at 30 s
		"-3s":   9 * time.Second,  // nonsense: the default
		"0s":    9 * time.Second,
		"bogus": 9 * time.Second,
		"99999": 9 * time.Second,
	}
	for q, want := range cases {
		if got := Budget(q, def); got != want {
			t.Errorf("Budget(%q) = %s, want %s", q, got, want)
		}
	}
}

var sampleLine = regexp.MustCompile(`^cloudtaser_injector_[a-z_]+(\{[a-z]+="[^"]*"\})? [0-9.e+-]+$`)

func TestMetricsAreValidPrometheusTextAndMove(t *testing.T) {
	m := NewMetrics()
	m.Observe(ResultMutated, "", 3*time.Millisecond)
	m.Observe(ResultDenied, "env-conflict", 20*time.Millisecond)
	m.Observe(ResultDenied, "made-up", 2*time.Second)
	m.Published(nil, true)
	m.Rotated()
	m.Extra = func() []Sample {
		return []Sample{{Name: "registry_lookups_total", Help: "Registry lookups.", Type: "counter", Value: 7}}
	}
	var b strings.Builder
	if err := m.Write(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	typed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 || typed[f[2]] {
				t.Errorf("bad or repeated TYPE line %q", line)
			}
			typed[f[2]] = true
		default:
			if !sampleLine.MatchString(line) && !strings.Contains(line, `le="`) {
				t.Errorf("not a sample line: %q", line)
			}
		}
	}
	for _, want := range []string{
		`cloudtaser_injector_admission_requests_total{result="mutated"} 1`,
		`cloudtaser_injector_admission_requests_total{result="denied"} 2`,
		`cloudtaser_injector_admission_requests_total{result="invalid"} 0`,
		`cloudtaser_injector_admission_denials_total{reason="env-conflict"} 1`,
		`cloudtaser_injector_admission_denials_total{reason="internal"} 1`, // unknown reason folded
		`cloudtaser_injector_admission_denials_total{reason="address-not-allowed"} 0`,
		`cloudtaser_injector_admission_duration_seconds_bucket{le="0.001"} 0`,
		`cloudtaser_injector_admission_duration_seconds_bucket{le="0.005"} 1`,
		`cloudtaser_injector_admission_duration_seconds_bucket{le="0.025"} 2`,
		`cloudtaser_injector_admission_duration_seconds_bucket{le="2.5"} 3`,
		`cloudtaser_injector_admission_duration_seconds_bucket{le="+Inf"} 3`,
		`cloudtaser_injector_admission_duration_seconds_count 3`,
		`cloudtaser_injector_cabundle_writes_total{outcome="written"} 1`,
		`cloudtaser_injector_cert_rotations_total 1`,
		`# TYPE cloudtaser_injector_registry_lookups_total counter`,
		`cloudtaser_injector_registry_lookups_total 7`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	if strings.Contains(text, "made-up") {
		t.Error("an unknown reason became a label value")
	}
}

func mustCert(t *testing.T, id Identity, validity time.Duration, now time.Time) *servingCert {
	t.Helper()
	c, err := newServingCert(id, []string{"cloudtaser-injector.ns.svc"}, []net.IP{net.ParseIP("127.0.0.1")}, validity, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServingLeafVerifiesAgainstItsCAForEverySAN(t *testing.T) {
	now := time.Now()
	c := mustCert(t, Identity{"ns", "pod-a"}, time.Hour, now)
	pool := x509.NewCertPool()
	pool.AddCert(c.ca)
	for _, name := range []string{"cloudtaser-injector.ns.svc", "127.0.0.1"} {
		if _, err := c.tls.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("leaf does not verify for %s: %v", name, err)
		}
	}
	if _, err := c.tls.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.svc"}); err == nil {
		t.Error("leaf verified for a name it does not carry")
	}
	other := mustCert(t, Identity{"ns", "pod-b"}, time.Hour, now)
	pool2 := x509.NewCertPool()
	pool2.AddCert(other.ca)
	if _, err := c.tls.Leaf.Verify(x509.VerifyOptions{Roots: pool2, DNSName: "127.0.0.1"}); err == nil {
		t.Error("leaf verified against another replica's CA")
	}
	if id, ok := identityOf(c.ca); !ok || id != (Identity{"ns", "pod-a"}) {
		t.Errorf("identityOf = %v %v", id, ok)
	}
	if _, ok := identityOf(c.tls.Leaf); ok {
		t.Error("the leaf passed for a CA")
	}
	if got := c.rotateAt.Sub(now); got != 40*time.Minute {
		t.Errorf("rotation due after %s, want 2/3 of 1h", got)
	}
}

func TestMergeBundleKeepsLiveReplicasAndPrunesTheRest(t *testing.T) {
	now := time.Now()
	self := Identity{"sys", "inj-a"}
	mine := mustCert(t, self, time.Hour, now).ca
	myOld := mustCert(t, self, time.Hour, now.Add(-time.Minute)).ca // a previous process of this pod
	liveB := mustCert(t, Identity{"sys", "inj-b"}, time.Hour, now).ca
	goneC := mustCert(t, Identity{"sys", "inj-c"}, time.Hour, now).ca
	expiredB := mustCert(t, Identity{"sys", "inj-b"}, time.Minute, now.Add(-2*time.Minute)).ca
	otherNS := mustCert(t, Identity{"elsewhere", "inj-x"}, time.Hour, now).ca
	foreign := mustCert(t, Identity{"sys", "inj-d"}, time.Hour, now).tls.Leaf // not an injector CA
	alive := func(pod string) bool { return pod == "inj-a" || pod == "inj-b" }

	existing := []*x509.Certificate{myOld, liveB, goneC, expiredB, otherNS, foreign, liveB}
	got := mergeBundle(existing, []*x509.Certificate{mine}, self, alive, now)
	want := []*x509.Certificate{mine, liveB, otherNS}
	if len(got) != len(want) {
		t.Fatalf("merged %d certs, want %d", len(got), len(want))
	}
	for _, c := range want {
		if !contains(got, c) {
			t.Errorf("%s missing from the merged bundle", c.Subject)
		}
	}
	// Replica B computing the same bundle writes the same bytes (no ping-pong of writes).
	fromB := mergeBundle(got, []*x509.Certificate{liveB}, Identity{"sys", "inj-b"}, alive, now)
	if string(encodeBundle(fromB)) != string(encodeBundle(got)) {
		t.Error("the two replicas order the same bundle differently")
	}
	// Shutdown: own empty removes every CA of this replica and keeps the others.
	got = mergeBundle(parseBundle(encodeBundle(got)), nil, self, alive, now)
	if len(got) != 2 || contains(got, mine) {
		t.Errorf("withdraw left %d certs (own included: %v)", len(got), contains(got, mine))
	}
	// Rotation: current and next both present, no duplicate.
	next := mustCert(t, self, time.Hour, now).ca
	got = mergeBundle([]*x509.Certificate{mine, liveB}, []*x509.Certificate{mine, next}, self, alive, now)
	if len(got) != 3 || !contains(got, mine) || !contains(got, next) || !contains(got, liveB) {
		t.Errorf("rotation bundle wrong: %d certs", len(got))
	}
}

func TestParseBundleSkipsGarbage(t *testing.T) {
	c := mustCert(t, Identity{"ns", "p"}, time.Hour, time.Now()).ca
	data := append([]byte("junk\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), encodeBundle([]*x509.Certificate{c})...)
	data = append(data, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")...)
	got := parseBundle(data)
	if len(got) != 1 || !got[0].Equal(c) {
		t.Fatalf("parsed %d certs", len(got))
	}
}

func TestParseSANs(t *testing.T) {
	dns, ips, err := ParseSANs([]string{"cloudtaser-injector.cloudtaser-system.svc", "127.0.0.1", "::1"})
	if err != nil || len(dns) != 1 || len(ips) != 2 {
		t.Fatalf("got %v %v %v", dns, ips, err)
	}
	for _, bad := range []string{"", "has space", "a..b", "-x.svc", "x_y.svc", strings.Repeat("a", 64) + ".svc", "https://x"} {
		if _, _, err := ParseSANs([]string{bad}); err == nil {
			t.Errorf("ParseSANs(%q) accepted", bad)
		}
	}
	if _, _, err := ParseSANs(nil); err == nil {
		t.Error("no SAN accepted")
	}
}

func TestDefaultIntervals(t *testing.T) {
	p, r := DefaultIntervals(24 * time.Hour)
	if p != 10*time.Second || r != time.Minute {
		t.Errorf("24h: %s %s", p, r)
	}
	p, r = DefaultIntervals(30 * time.Second)
	if p != 3*time.Second || r != 2500*time.Millisecond {
		t.Errorf("30s: %s %s", p, r)
	}
}
