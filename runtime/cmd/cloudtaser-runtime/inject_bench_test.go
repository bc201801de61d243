package main

// The injector's benchmark (issue 14): pod creations through a real kube-apiserver without
// and with the webhook, and the webhook's admission latency for a pod whose containers set
// command, for one whose image ENTRYPOINT comes from the warm cache, and for cold lookups in
// a real registry (go-containerregistry's, the one `crane registry serve` runs). For
// reference, the same pods through a webhook that does nothing (HTTP/2 and HTTP/1.1): the
// floor of any webhook on this machine. Each case logs the CPU time per pod of etcd, the API
// server and our webhook; CLOUDTASER_BENCH_PROFILE=FILE adds a CPU profile of the API server.
//
//	go test -v -run '^$' -bench InjectorPodCreation -benchtime 1x ./cmd/cloudtaser-runtime/
//
// Figures are reported with b.ReportMetric and logged (-v shows every line; without it the
// testing package cuts a benchmark's log after ten lines); docs/injector.md keeps them.

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const benchPods = 200

type phase struct {
	name      string
	latencies []time.Duration // client-observed pod creation
	wall      time.Duration   // concurrent run
	failed    int
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// runPhase creates n pods one at a time (latency), then n more with 8 workers (throughput).
func runPhase(b *testing.B, k *kubeEnv, nm string, mk func(i int) map[string]any) phase {
	p := phase{name: nm}
	for i := 0; i < benchPods; i++ {
		t0 := time.Now()
		code, _ := createPod(b, k, mk(i))
		p.latencies = append(p.latencies, time.Since(t0))
		if code != 201 {
			p.failed++
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	t0 := time.Now()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= benchPods {
					return
				}
				if code, _ := createPod(b, k, mk(benchPods+i)); code != 201 {
					mu.Lock()
					p.failed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	p.wall = time.Since(t0)
	b.Logf("%-28s p50 %6.2f ms  p99 %6.2f ms  throughput %6.1f pods/s  failed %d", nm,
		ms(pct(p.latencies, 0.5)), ms(pct(p.latencies, 0.99)), float64(benchPods)/p.wall.Seconds(), p.failed)
	return p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// histogram reads the admission histogram (cumulative counts per upper bound) from /metrics.
func histogram(b *testing.B, port int) (les []float64, counts []float64) {
	text := scrape(b, port, "inj-bench")["inj-bench"]
	for _, line := range strings.Split(text, "\n") {
		const p = `cloudtaser_injector_admission_duration_seconds_bucket{le="`
		if !strings.HasPrefix(line, p) {
			continue
		}
		rest := strings.TrimPrefix(line, p)
		q := strings.Index(rest, `"`)
		le, err := strconv.ParseFloat(rest[:q], 64)
		if rest[:q] == "+Inf" {
			le, err = 1e9, nil
		}
		if err != nil {
			b.Fatal(err)
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(rest[q+2:]), 64)
		les, counts = append(les, le), append(counts, v)
	}
	return les, counts
}

// serverQuantile: the upper bound of the bucket holding quantile q of the requests counted
// between two scrapes.
func serverQuantile(les, before, after []float64, q float64) float64 {
	total := after[len(after)-1] - before[len(before)-1]
	for i := range les {
		if after[i]-before[i] >= q*total {
			return les[i] * 1000
		}
	}
	return -1
}

func pushImage(b testing.TB, host, repo string, entrypoint []string) {
	img, err := random.Image(256, 1)
	if err != nil {
		b.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Entrypoint: entrypoint, Cmd: []string{"--serve"}})
	if err != nil {
		b.Fatal(err)
	}
	ref, err := name.ParseReference(host + "/" + repo)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		b.Fatal(err)
	}
}

func vmKiB(pid int, field string) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field+":") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	return -1
}

func BenchmarkInjectorPodCreation(b *testing.B) {
	k := startKube(b)
	port := freePorts(b, 1)[0]
	tokenFile := setupInjectorCluster(b, k, port)
	reg := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	regHost := strings.TrimPrefix(reg.URL, "http://")
	pushImage(b, regHost, "warm/app:1", []string{"/app"})
	for i := 0; i < 2*benchPods; i++ {
		pushImage(b, regHost, fmt.Sprintf("cold/app%d:1", i), []string{"/app"})
	}
	withCommand := func(int) map[string]any { return appPod(true, allowed) }
	fromImage := func(image string) map[string]any {
		p := appPod(true, allowed)
		c := p["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		delete(c, "command")
		delete(c, "args")
		c["image"] = image
		return p
	}

	// Without the webhook: the configuration is there but matches nothing (an objectSelector
	// no pod has), so the API server does not call it.
	k.must(b, "DELETE", mwcPath, nil)
	cpu := newCPUMeter(k)
	without := runPhase(b, k, "without the webhook", withCommand)
	cpu.log(b, "without the webhook", 2*benchPods)
	// The floor any mutating webhook has here: one that allows every pod and patches
	// nothing, answered in microseconds (HTTP/2, as the API server negotiates by default,
	// and HTTP/1.1).
	nullH2 := nullWebhookPhase(b, k, true, withCommand)
	nullH1 := nullWebhookPhase(b, k, false, withCommand)
	nullCalls, nullSecs := apiserverWebhookCalls(b, k) // same webhook name: not ours
	createMWC(b, k, map[string]any{"url": fmt.Sprintf("https://127.0.0.1:%d/mutate", port)})

	replicaPod(b, k, "inj-bench")
	r := startReplica(b, k, "inj-bench", port, tokenFile, "24h")
	k.waitFor(b, "the webhook serving", 30*time.Second, func() bool { return strings.Contains(r.stderr.String(), "serving on") })
	if code, pod := createPod(b, k, appPod(true, allowed)); code != 201 || !injected(pod) {
		b.Fatalf("warm-up pod not injected: %d", code)
	}

	les, h0 := histogram(b, port)
	k.pids["webhook"] = r.cmd.Process.Pid
	stopProfile := apiserverProfile(b, k)
	cpu = newCPUMeter(k)
	with := runPhase(b, k, "with the webhook (command)", withCommand)
	cpu.log(b, "with the webhook (command)", 2*benchPods)
	stopProfile()
	_, h1 := histogram(b, port)
	if code, pod := createPod(b, k, fromImage(regHost+"/warm/app:1")); code != 201 || !injected(pod) {
		b.Fatalf("warm-cache pod not injected: %d %v", code, pod["message"])
	}
	_, h2 := histogram(b, port)
	warm := runPhase(b, k, "with the webhook (cache)", func(int) map[string]any { return fromImage(regHost + "/warm/app:1") })
	_, h3 := histogram(b, port)
	cold := runPhase(b, k, "with the webhook (cold)", func(i int) map[string]any { return fromImage(fmt.Sprintf("%s/cold/app%d:1", regHost, i)) })
	_, h4 := histogram(b, port)

	for _, p := range []phase{without, nullH2, nullH1, with, warm, cold} {
		if p.failed > 0 {
			b.Errorf("%s: %d pod creations failed", p.name, p.failed)
		}
	}
	ratio := without.wall.Seconds() / with.wall.Seconds()
	b.Logf("throughput of a webhook that does nothing, against none: %.2f (HTTP/2), %.2f (HTTP/1.1)",
		without.wall.Seconds()/nullH2.wall.Seconds(), without.wall.Seconds()/nullH1.wall.Seconds())
	hwm, rss := vmKiB(r.cmd.Process.Pid, "VmHWM"), vmKiB(r.cmd.Process.Pid, "VmRSS")
	b.Logf("webhook-side p50/p99 (histogram bucket bounds): command %.1f/%.1f ms, cache %.1f/%.1f ms, cold %.1f/%.1f ms",
		serverQuantile(les, h0, h1, 0.5), serverQuantile(les, h0, h1, 0.99),
		serverQuantile(les, h2, h3, 0.5), serverQuantile(les, h2, h3, 0.99),
		serverQuantile(les, h3, h4, 0.5), serverQuantile(les, h3, h4, 0.99))
	calls, secs := apiserverWebhookCalls(b, k)
	calls, secs = calls-nullCalls, secs-nullSecs
	b.Logf("API server's view: %.0f webhook calls for %d admissions, mean %.2f ms per call (apiserver_admission_webhook_admission_duration_seconds)",
		calls, 6*benchPods+2, 1000*secs/calls)
	conns := metricValue(scrape(b, port, "inj-bench")["inj-bench"], "cloudtaser_injector_connections_total")
	b.Logf("connections accepted by the webhook over %d admissions: %.0f", 6*benchPods+2, conns)
	b.Logf("throughput with/without the webhook: %.2f; webhook RSS %d KiB (peak %d KiB)", ratio, rss, hwm)
	b.ReportMetric(ms(pct(with.latencies, 0.99)-pct(without.latencies, 0.99)), "p99-overhead-ms")
	b.ReportMetric(ratio, "throughput-ratio")
	b.ReportMetric(float64(hwm)/1024, "webhook-peak-MiB")
}

// createMWC creates the benchmark's MutatingWebhookConfiguration calling clientConfig (ours
// after the phase without it, or the do-nothing webhook).
func createMWC(b *testing.B, k *kubeEnv, clientConfig map[string]any) {
	k.must(b, "POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", map[string]any{
		"metadata": map[string]any{"name": mwcName},
		"webhooks": []any{map[string]any{
			"name":                    hookNm,
			"clientConfig":            clientConfig,
			"rules":                   []any{map[string]any{"apiGroups": []string{""}, "apiVersions": []string{"v1"}, "operations": []string{"CREATE"}, "resources": []string{"pods"}}},
			"objectSelector":          map[string]any{"matchLabels": map[string]string{"cloudtaser.io/inject": "true"}},
			"failurePolicy":           "Fail",
			"sideEffects":             "None",
			"reinvocationPolicy":      "IfNeeded",
			"timeoutSeconds":          10,
			"admissionReviewVersions": []string{"v1"},
		}},
	})
}

// apiserverWebhookCalls sums the API server's own histogram of calls to our webhook.
func apiserverWebhookCalls(b *testing.B, k *kubeEnv) (count, sum float64) {
	resp, err := k.admin.Get(k.server + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `name="`+hookNm+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		switch {
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_count"):
			count += v
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_sum"):
			sum += v
		}
	}
	return count, sum
}

// cpuSeconds: user+system CPU time of a process (/proc/PID/stat, 100 ticks per second).
func cpuSeconds(pid int) float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// cpuMeter: CPU time each test-bed process spent during one phase, per pod created.
type cpuMeter struct {
	k      *kubeEnv
	before map[string]float64
}

func newCPUMeter(k *kubeEnv) cpuMeter {
	m := cpuMeter{k: k, before: map[string]float64{}}
	for name, pid := range k.pids {
		m.before[name] = cpuSeconds(pid)
	}
	return m
}

func (m cpuMeter) log(b *testing.B, phase string, pods int) {
	names := make([]string, 0, len(m.before))
	for name := range m.before {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		used := cpuSeconds(m.k.pids[name]) - m.before[name]
		parts = append(parts, fmt.Sprintf("%s %.2f", name, 1000*used/float64(pods)))
	}
	b.Logf("CPU ms per pod, %s: %s", phase, strings.Join(parts, ", "))
}

// apiserverProfile: with CLOUDTASER_BENCH_PROFILE=FILE, a CPU profile of the API server
// (its /debug/pprof, enabled only then) while pods are created through the webhook; the
// returned func waits for it and writes FILE (inspect with `go tool pprof -top FILE`).
func apiserverProfile(b *testing.B, k *kubeEnv) func() {
	out := os.Getenv("CLOUDTASER_BENCH_PROFILE")
	if out == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := k.admin.Get(k.server + "/debug/pprof/profile?seconds=2")
		if err != nil {
			b.Logf("API server profile: %v", err)
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if err := os.WriteFile(out, data, 0o600); err != nil {
			b.Logf("API server profile: %v", err)
		}
	}()
	return func() { <-done }
}

// nullWebhookPhase runs a phase through a webhook (in this process) that allows every pod
// without a patch: what the API server's side of any webhook call costs on this machine.
func nullWebhookPhase(b *testing.B, k *kubeEnv, http2 bool, mk func(i int) map[string]any) phase {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review struct {
			Request struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
			"response": map[string]any{"uid": review.Request.UID, "allowed": true},
		})
	}))
	srv.EnableHTTP2 = http2
	srv.StartTLS()
	defer srv.Close()
	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	createMWC(b, k, map[string]any{"url": srv.URL + "/mutate", "caBundle": caBundle})
	defer k.must(b, "DELETE", mwcPath, nil)
	proto := "HTTP/1.1"
	if http2 {
		proto = "HTTP/2"
	}
	// the API server picks up a new configuration within a second or so: wait for a call
	calls0, _ := apiserverWebhookCalls(b, k)
	k.waitFor(b, "the null webhook called", 30*time.Second, func() bool {
		createPod(b, k, mk(0))
		calls, _ := apiserverWebhookCalls(b, k)
		return calls > calls0
	})
	cpu := newCPUMeter(k)
	p := runPhase(b, k, "null webhook ("+proto+")", mk)
	cpu.log(b, "null webhook ("+proto+")", 2*benchPods)
	return p
}
