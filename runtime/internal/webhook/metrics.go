package webhook

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Results of an admission request (label "result" of requests_total).
const (
	ResultMutated   = "mutated"   // allowed with a patch
	ResultUnchanged = "unchanged" // allowed, nothing to change (already injected)
	ResultDenied    = "denied"    // allowed: false (reason in denials_total)
	ResultInvalid   = "invalid"   // not an AdmissionReview the server could answer (HTTP 4xx)
)

// DurationBuckets are the upper bounds (seconds) of the admission latency histogram.
var DurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Sample is one extra counter or gauge written with the server's own metrics (registry
// lookups and cache hits come from the injector's Stats).
type Sample struct {
	Name, Help, Type string // Type "counter" or "gauge"
	Value            float64
}

// Metrics are the injector's counters, written in the Prometheus text format (0.0.4) by
// hand. Safe for concurrent use.
type Metrics struct {
	mu        sync.Mutex
	requests  map[string]uint64
	denials   map[string]uint64
	buckets   []uint64 // per bucket, not cumulative
	count     uint64
	sum       float64
	publishes map[string]uint64
	rotations uint64
	conns     uint64
	// Extra, when set, adds samples at every scrape.
	Extra func() []Sample
	// Gauges, when set, adds gauges at every scrape (readiness, certificate expiry).
	Gauges func() []Sample
}

// NewMetrics returns zeroed metrics (every known label value present from the start).
func NewMetrics() *Metrics {
	m := &Metrics{requests: map[string]uint64{}, denials: map[string]uint64{}, publishes: map[string]uint64{}}
	for _, r := range []string{ResultMutated, ResultUnchanged, ResultDenied, ResultInvalid} {
		m.requests[r] = 0
	}
	for _, r := range DenialReasons {
		m.denials[r] = 0
	}
	for _, r := range []string{"written", "unchanged", "error"} {
		m.publishes[r] = 0
	}
	m.buckets = make([]uint64, len(DurationBuckets))
	return m
}

func knownReason(r string) string {
	for _, k := range DenialReasons {
		if r == k {
			return r
		}
	}
	return ReasonInternal
}

// Observe records one answered admission request.
func (m *Metrics) Observe(result, reason string, d time.Duration) {
	s := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[result]++
	if result == ResultDenied {
		m.denials[knownReason(reason)]++
	}
	m.count++
	m.sum += s
	for i, le := range DurationBuckets {
		if s <= le {
			m.buckets[i]++
			break
		}
	}
}

// Requests returns the answered requests by result (for the shutdown summary).
func (m *Metrics) Requests() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]uint64, len(m.requests))
	for k, v := range m.requests {
		out[k] = v
	}
	return out
}

// Published records one caBundle update: written, unchanged (already right) or error.
func (m *Metrics) Published(err error, changed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err != nil:
		m.publishes["error"]++
	case changed:
		m.publishes["written"]++
	default:
		m.publishes["unchanged"]++
	}
}

// Connected records a new client connection.
func (m *Metrics) Connected() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns++
}

// Rotated records a certificate rotation.
func (m *Metrics) Rotated() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rotations++
}

const prefix = "cloudtaser_injector_"

// Write writes every metric in the Prometheus text exposition format.
func (m *Metrics) Write(w io.Writer) error {
	var b strings.Builder
	m.mu.Lock()
	family(&b, "admission_requests_total", "Admission requests answered, by result.", "counter")
	labelled(&b, "admission_requests_total", "result", m.requests)
	family(&b, "admission_denials_total", "Admission requests denied, by reason.", "counter")
	labelled(&b, "admission_denials_total", "reason", m.denials)
	family(&b, "admission_duration_seconds", "Time to answer an admission request.", "histogram")
	var cum uint64
	for i, le := range DurationBuckets {
		cum += m.buckets[i]
		fmt.Fprintf(&b, "%sadmission_duration_seconds_bucket{le=%q} %d\n", prefix, num(le), cum)
	}
	fmt.Fprintf(&b, "%sadmission_duration_seconds_bucket{le=\"+Inf\"} %d\n", prefix, m.count)
	fmt.Fprintf(&b, "%sadmission_duration_seconds_sum %s\n", prefix, num(m.sum))
	fmt.Fprintf(&b, "%sadmission_duration_seconds_count %d\n", prefix, m.count)
	family(&b, "cabundle_writes_total", "caBundle checks of this replica, by outcome (written, unchanged, error).", "counter")
	labelled(&b, "cabundle_writes_total", "outcome", m.publishes)
	family(&b, "cert_rotations_total", "Serving certificate rotations.", "counter")
	fmt.Fprintf(&b, "%scert_rotations_total %d\n", prefix, m.rotations)
	family(&b, "connections_total", "Client connections accepted (few with working keep-alive).", "counter")
	fmt.Fprintf(&b, "%sconnections_total %d\n", prefix, m.conns)
	m.mu.Unlock()
	var extra []Sample
	if m.Extra != nil {
		extra = append(extra, m.Extra()...)
	}
	if m.Gauges != nil {
		extra = append(extra, m.Gauges()...)
	}
	for _, s := range extra {
		family(&b, s.Name, s.Help, s.Type)
		fmt.Fprintf(&b, "%s%s %s\n", prefix, s.Name, num(s.Value))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func family(b *strings.Builder, name, help, typ string) {
	fmt.Fprintf(b, "# HELP %s%s %s\n# TYPE %s%s %s\n", prefix, name, help, prefix, name, typ)
}

func labelled(b *strings.Builder, name, label string, values map[string]uint64) {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "%s%s{%s=%q} %d\n", prefix, name, label, k, values[k])
	}
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
