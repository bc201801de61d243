package main

// The injector's benchmark (issues 14 and 31): pod creations through a real kube-apiserver
// without and with the webhook, and the webhook's admission latency for a pod whose containers
// set command, for one whose image ENTRYPOINT comes from the warm cache, and for cold lookups
// in a real registry (go-containerregistry's, the one `crane registry serve` runs); for a
// minimal pod and for a typical one. For reference, what any implementation or any webhook
// costs on this machine: the pods as our webhook leaves them created with no webhook at all,
// a webhook that does nothing, one that adds one annotation, and one that replays our exact
// patch (the floor of any implementation that produces the same pod).
//
// Trustworthy on a noisy machine (issue 31): the cases are interleaved. Every round runs
// every case once, in an order rotated by one each round, and between two cases the bed is
// returned to the same state: the case's pods are deleted (and awaited gone), etcd is
// compacted and defragmented, so each case starts with an empty namespace and the same etcd
// (its size in use is logged after every clean-up, to show it). Each ratio is computed against
// the baseline of its own round (the no-webhook case of the same pod shape), then the median
// over the rounds is reported with its range; the baseline's own spread over the rounds is
// reported too, and so is an A/A pair (the baseline twice per round, half a round apart):
// the noise floor. Every ratio is also computed from CPU per pod of every process of the bed
// (etcd, the API server, our webhook, this process), which other tenants of the machine move
// much less than wall time. CLOUDTASER_BENCH_PROFILE=FILE adds a CPU profile of the API server,
// CLOUDTASER_BENCH_PERF=FILE a `perf record` of the API server and our webhook.
//
//	go test -v -run '^$' -bench InjectorPodCreation -benchtime 1x -timeout 60m ./cmd/cloudtaser-runtime/
//
// (`nox -s benchmarks -- injector` runs exactly that.) CLOUDTASER_BENCH_ROUNDS overrides the
// number of rounds. Figures are reported with b.ReportMetric and logged (-v shows every line);
// docs/injector.md keeps them.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloudtaser/runtime/internal/inject"
	"cloudtaser/runtime/internal/jsonpatch"
	"cloudtaser/runtime/internal/webhook"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	benchPods   = 400 // pods per case and round created by 8 workers: throughput
	latencyPods = 50  // pods per case and round created one at a time: client latency
	workers     = 8
	// default number of measured rounds (a warm-up round, not counted, comes first)
	defaultRounds = 7
	// the configuration and webhook names of the in-process webhooks
	benchMWC  = "bench-hooks"
	benchHook = "bench.cloudtaser.io"
)

func pct(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread: "median (min–max)" of xs.
func spread(xs []float64) string {
	return fmt.Sprintf("%.2f (%.2f–%.2f)", median(xs), slices.Min(xs), slices.Max(xs))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// hook is a webhook a case runs through: where the API server calls it, and how many
// admissions it has answered so far (to see that a new configuration is in effect).
type hook struct {
	config, webhook string // the MutatingWebhookConfiguration and its one webhook's name
	clientConfig    map[string]any
	calls           func() float64
	probe           func(i int) map[string]any // a pod the webhook is called for
}

// benchCase is one case: its pods, the webhook configuration it needs (none: nil), the
// baseline it is compared with, and what its runs measured, summed over the rounds.
type benchCase struct {
	name     string
	baseline string // the no-webhook case of the same pod shape (itself for a baseline)
	hook     *hook
	mk       func(i int) map[string]any
	ours     bool // runs through our webhook: its histogram and the API server's calls count
	seq      atomic.Int64

	walls     []time.Duration // per measured round
	cpuPerPod []float64       // per measured round: CPU seconds per pod, every process of the bed
	latencies []time.Duration
	cpu       map[string]float64 // CPU seconds per process
	pods      int                // pods the CPU figures cover
	failed    atomic.Int64
	hist      []float64 // our webhook's admission histogram over this case's runs
	calls     float64   // the API server's calls to the webhook during this case's runs
}

func (c *benchCase) next() map[string]any { return c.mk(int(c.seq.Add(1) - 1)) }

func (c *benchCase) create(b *testing.B, k *kubeEnv) {
	if code, out := createPod(b, k, c.next()); code != 201 {
		if c.failed.Add(1) == 1 {
			b.Logf("%s: pod creation answered %d: %v", c.name, code, out["message"])
		}
	}
}

// run creates latencyPods pods one at a time, then benchPods with 8 workers; measured (not
// the warm-up round) it keeps the latencies, the wall time of the concurrent part and the CPU
// time of every process, and for our webhook its histogram and the API server's calls.
func (c *benchCase) run(b *testing.B, k *kubeEnv, port int, measured bool) {
	var les, h0 []float64
	calls0, _ := apiserverWebhookCalls(b, k, hookNm)
	if c.ours {
		les, h0 = histogram(b, port)
	}
	cpu := newCPUMeter(k)
	lat := make([]time.Duration, 0, latencyPods)
	for i := 0; i < latencyPods; i++ {
		t0 := time.Now()
		c.create(b, k)
		lat = append(lat, time.Since(t0))
	}
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(benchPods)
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				c.create(b, k)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	if !measured {
		return
	}
	c.walls = append(c.walls, wall)
	c.latencies = append(c.latencies, lat...)
	total := 0.0
	for name, used := range cpu.used() {
		c.cpu[name] += used
		total += used
	}
	c.cpuPerPod = append(c.cpuPerPod, total/float64(latencyPods+benchPods))
	c.pods += latencyPods + benchPods
	calls1, _ := apiserverWebhookCalls(b, k, hookNm)
	c.calls += calls1 - calls0
	if c.ours {
		_, h1 := histogram(b, port)
		if c.hist == nil {
			c.hist = make([]float64, len(les))
		}
		for i := range h1 {
			c.hist[i] += h1[i] - h0[i]
		}
	}
}

// switchTo installs the case's webhook configuration (or none) and waits until the API server
// uses it: a probe pod reaches the case's webhook, or (none) two probe pods reach no webhook.
// Ours and the in-process webhooks have configurations of their own names: our replica keeps
// its CA in the caBundle of its configuration and would drop a foreign one from it.
func switchTo(b *testing.B, k *kubeEnv, h *hook) {
	for _, name := range []string{mwcName, benchMWC} {
		path := "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + name
		if code, out := k.do(b, "DELETE", path, nil); code != 200 && code != 404 {
			b.Fatalf("deleting the webhook configuration %s: %d %v", name, code, out["message"])
		}
	}
	if h != nil {
		createMWC(b, k, h.config, h.webhook, h.clientConfig)
	}
	probe := func() map[string]any { return appPod(true, allowed) }
	if h != nil {
		probe = func() map[string]any { return h.probe(0) }
	}
	called := func() float64 {
		ours, _ := apiserverWebhookCalls(b, k, hookNm)
		bench, _ := apiserverWebhookCalls(b, k, benchHook)
		return ours + bench
	}
	quiet := 0
	k.waitFor(b, "the webhook configuration in effect", 60*time.Second, func() bool {
		apiBefore := called()
		var before float64
		if h != nil {
			before = h.calls()
		}
		createPod(b, k, probe())
		if h != nil {
			return h.calls() > before
		}
		if called() == apiBefore {
			quiet++
		} else {
			quiet = 0
		}
		return quiet >= 2
	})
}

// etcdEnv is the test bed's etcd, reached over its JSON gateway (/v3/...).
type etcdEnv struct{ url string }

// etcdOf finds etcd's client URL on its command line (startKube picks a free port).
func etcdOf(b *testing.B, k *kubeEnv) etcdEnv {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k.pids["etcd"]))
	if err != nil {
		b.Fatal(err)
	}
	for _, arg := range strings.Split(string(data), "\x00") {
		if v, ok := strings.CutPrefix(arg, "--listen-client-urls="); ok {
			return etcdEnv{url: v}
		}
	}
	b.Fatal("etcd's --listen-client-urls not found")
	return etcdEnv{}
}

func (e etcdEnv) call(b *testing.B, path string, body any) map[string]any {
	data, _ := json.Marshal(body)
	resp, err := http.Post(e.url+path, "application/json", bytes.NewReader(data))
	if err != nil {
		b.Fatalf("etcd %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode != 200 {
		b.Fatalf("etcd %s: %d %s", path, resp.StatusCode, raw)
	}
	return out
}

// number reads an int64 field of etcd's JSON (strings there), trying each spelling.
func number(m map[string]any, keys ...string) float64 {
	for _, key := range keys {
		switch v := m[key].(type) {
		case string:
			f, _ := strconv.ParseFloat(v, 64)
			return f
		case float64:
			return v
		}
	}
	return -1
}

// compact compacts etcd to its current revision and defragments it; returns its database
// size in use afterwards (bytes).
func (e etcdEnv) compact(b *testing.B) float64 {
	header, _ := e.call(b, "/v3/kv/range", map[string]any{"key": base64.StdEncoding.EncodeToString([]byte{0})})["header"].(map[string]any)
	rev := number(header, "revision")
	if rev <= 0 {
		b.Fatalf("etcd revision not read: %v", header)
	}
	e.call(b, "/v3/kv/compaction", map[string]any{"revision": strconv.FormatFloat(rev, 'f', 0, 64), "physical": true})
	e.call(b, "/v3/maintenance/defragment", map[string]any{})
	return number(e.call(b, "/v3/maintenance/status", map[string]any{}), "dbSizeInUse", "db_size_in_use")
}

// cleanUp returns the bed to the state every case starts from: no pod in the namespace
// (deleted, and awaited gone), etcd compacted and defragmented. Returns etcd's size in use.
func cleanUp(b *testing.B, k *kubeEnv, e etcdEnv) float64 {
	k.must(b, "DELETE", "/api/v1/namespaces/"+appNS+"/pods", map[string]any{"gracePeriodSeconds": 0})
	k.waitFor(b, "the case's pods gone", 120*time.Second, func() bool {
		_, out := k.do(b, "GET", "/api/v1/namespaces/"+appNS+"/pods?limit=1", nil)
		items, _ := out["items"].([]any)
		return out != nil && len(items) == 0
	})
	return e.compact(b)
}

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
	rounds := defaultRounds
	if v, err := strconv.Atoi(os.Getenv("CLOUDTASER_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	k := startKube(b)
	port := freePorts(b, 1)[0]
	tokenFile := setupInjectorCluster(b, k, port)
	etcd := etcdOf(b, k)
	reg := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	regHost := strings.TrimPrefix(reg.URL, "http://")
	pushImage(b, regHost, "warm/app:1", []string{"/app"})
	coldImages := (rounds + 1) * (latencyPods + benchPods)
	for i := 0; i < coldImages; i++ {
		pushImage(b, regHost, fmt.Sprintf("cold/app%d:1", i), []string{"/app"})
	}
	withCommand := func(int) map[string]any { return appPod(true, allowed) }
	notOptedIn := func(int) map[string]any { return appPod(false, allowed) }
	typical := func(int) map[string]any { return typicalPod() }
	fromImage := func(image string) map[string]any {
		p := appPod(true, allowed)
		c := p["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		delete(c, "command")
		delete(c, "args")
		c["image"] = image
		return p
	}

	// The webhooks in this process (started once): one that allows every pod and patches
	// nothing (HTTP/2, as the API server negotiates); one that adds a single annotation (the API
	// server then applies a patch and re-runs its own admission plugins: the floor of any
	// mutating webhook); one per pod shape that replays our exact patch, computed once by our
	// mutation (the floor of any implementation that produces the same pod). Their own work
	// runs here, beside the client.
	oneAnnotation := func(json.RawMessage) []byte {
		return []byte(`[{"op":"add","path":"/metadata/annotations/bench","value":"x"}]`)
	}
	nullHook := startHook(b, nil, withCommand)
	oneAnnHook := startHook(b, oneAnnotation, withCommand)
	replayHook := startHook(b, replayOurPatch(b), withCommand)
	replayTypicalHook := startHook(b, replayOurPatch(b), typical)

	// Our webhook: one replica; the CA it publishes into the configuration is kept and given
	// again every time the configuration is re-created for one of our cases.
	k.must(b, "DELETE", mwcPath, nil)
	createMWC(b, k, mwcName, hookNm, map[string]any{"url": fmt.Sprintf("https://127.0.0.1:%d/mutate", port)})
	replicaPod(b, k, "inj-bench")
	r := startReplica(b, k, "inj-bench", port, tokenFile, "24h")
	k.waitFor(b, "the webhook serving", 30*time.Second, func() bool { return strings.Contains(r.stderr.String(), "serving on") })
	k.waitFor(b, "our webhook injecting", 30*time.Second, func() bool {
		code, pod := createPod(b, k, appPod(true, allowed))
		return code == 201 && injected(pod)
	})
	cfg := k.must(b, "GET", mwcPath, nil)
	caBundle := cfg["webhooks"].([]any)[0].(map[string]any)["clientConfig"].(map[string]any)["caBundle"]
	k.pids["webhook"] = r.cmd.Process.Pid
	// this process: the client, and the in-process webhooks' own work
	k.pids["client"] = os.Getpid()
	ours := &hook{
		config: mwcName, webhook: hookNm,
		clientConfig: map[string]any{"url": fmt.Sprintf("https://127.0.0.1:%d/mutate", port), "caBundle": caBundle},
		calls: func() float64 {
			return metricValue(scrape(b, port, "inj-bench")["inj-bench"], "cloudtaser_injector_admission_duration_seconds_count")
		},
		probe: withCommand,
	}

	const none, noneTypical, noneNotOptedIn = "minimal pod, no webhook", "typical pod, no webhook", "not opted in, no webhook"
	cases := []*benchCase{
		{name: none, mk: withCommand},
		// The floor of the injection itself: the pods exactly as our webhook leaves them
		// (inject.Mutate run here, its patch applied here), created with no webhook at all.
		{name: "already injected, no webhook", baseline: none, mk: injectedForm(b, withCommand)},
		{name: "null webhook", baseline: none, hook: nullHook, mk: withCommand},
		{name: "webhook adding 1 annotation", baseline: none, hook: oneAnnHook, mk: withCommand},
		{name: "webhook replaying our patch", baseline: none, hook: replayHook, mk: withCommand},
		{name: "our webhook (command)", baseline: none, hook: ours, mk: withCommand, ours: true},
		{name: "our webhook (warm cache)", baseline: none, hook: ours, ours: true,
			mk: func(int) map[string]any { return fromImage(regHost + "/warm/app:1") }},
		{name: "our webhook (cold lookup)", baseline: none, hook: ours, ours: true,
			mk: func(i int) map[string]any { return fromImage(fmt.Sprintf("%s/cold/app%d:1", regHost, i)) }},
		// The baseline again, half a round away from itself: an A/A pair, so the spread of
		// its ratio is the noise floor of every other ratio (the drift was 0.31×).
		{name: "minimal pod, no webhook (A/A)", baseline: none, mk: withCommand},
		{name: noneTypical, mk: typical},
		{name: "typical, already injected", baseline: noneTypical, mk: injectedForm(b, typical)},
		{name: "typical, replaying our patch", baseline: noneTypical, hook: replayTypicalHook, mk: typical},
		{name: "typical, our webhook", baseline: noneTypical, hook: ours, mk: typical, ours: true},
		// Pods without the label while our webhook is installed: its objectSelector keeps the
		// API server from calling it at all, so the cluster's other pods cost what they did.
		{name: noneNotOptedIn, mk: notOptedIn},
		{name: "not opted in, ours installed", baseline: noneNotOptedIn, hook: ours, mk: notOptedIn},
	}
	byName := map[string]*benchCase{}
	for _, c := range cases {
		if c.baseline == "" {
			c.baseline = c.name
		}
		c.cpu = map[string]float64{}
		byName[c.name] = c
	}

	sizes := []float64{cleanUp(b, k, etcd)}
	for round := 0; round <= rounds; round++ { // round 0 warms up the API server, etcd and the caches
		t0 := time.Now()
		for i := range cases {
			c := cases[(i+round)%len(cases)]
			switchTo(b, k, c.hook)
			stop := func() {}
			if round == 1 && c.name == "our webhook (command)" {
				stopProfile, stopPerf := apiserverProfile(b, k), perfRecord(b, k.pids["kube-apiserver"], k.pids["webhook"])
				stop = func() { stopPerf(); stopProfile() }
			}
			c.run(b, k, port, round > 0)
			stop()
			size := cleanUp(b, k, etcd)
			if round > 0 {
				sizes = append(sizes, size)
			}
		}
		if round == 0 {
			b.Logf("warm-up round (not counted): %.0f s", time.Since(t0).Seconds())
			continue
		}
		base := byName[none]
		b.Logf("round %d (%.0f s): baseline %.0f pods/s; ours %.2f, replay %.2f of it", round, time.Since(t0).Seconds(),
			benchPods/base.walls[round-1].Seconds(), ratios(byName["our webhook (command)"], base)[round-1],
			ratios(byName["webhook replaying our patch"], base)[round-1])
	}

	for _, c := range cases {
		if n := c.failed.Load(); n > 0 {
			b.Errorf("%s: %d pod creations failed", c.name, n)
		}
	}
	if c := byName["not opted in, ours installed"]; c.calls != 0 {
		b.Errorf("the API server called the webhook %.0f times for pods without the label", c.calls)
	}

	b.Logf("%d measured rounds; per case: client p50/p99 over every round's %d sequential pods; throughput of %d pods with %d workers, median (min–max) over the rounds; ratio against the baseline of the same round, median (min–max), by wall time and by CPU per pod (every process of the bed); CPU ms per pod",
		rounds, latencyPods, benchPods, workers)
	for _, c := range cases {
		rates := make([]float64, len(c.walls))
		for i, w := range c.walls {
			rates[i] = benchPods / w.Seconds()
		}
		names := slices.Sorted(maps.Keys(c.cpu))
		cpu := make([]string, len(names))
		for i, n := range names {
			cpu[i] = fmt.Sprintf("%s %.2f", n, 1000*c.cpu[n]/float64(c.pods))
		}
		b.Logf("%-34s p50 %5.2f ms  p99 %6.2f ms  %s pods/s  ratio %s  by CPU %s  CPU %s", c.name,
			ms(pct(c.latencies, 0.5)), ms(pct(c.latencies, 0.99)), spreadRates(rates), spread(ratios(c, byName[c.baseline])),
			spread(cpuRatios(c, byName[c.baseline])), strings.Join(cpu, ", "))
	}

	// The bed's own stability: the baseline's throughput over the rounds, and etcd's size in
	// use after every clean-up (the same state between cases).
	base := byName[none]
	baseRates := make([]float64, len(base.walls))
	for i, w := range base.walls {
		baseRates[i] = benchPods / w.Seconds()
	}
	b.Logf("baseline over the rounds: %s pods/s (last round %.2f of the first; max/min %.2f)",
		joinRates(baseRates), baseRates[len(baseRates)-1]/baseRates[0], slices.Max(baseRates)/slices.Min(baseRates))
	b.Logf("baseline CPU per pod over the rounds: %s ms (max/min %.2f)", joinMs(base.cpuPerPod), slices.Max(base.cpuPerPod)/slices.Min(base.cpuPerPod))
	b.Logf("etcd size in use after each clean-up: %.0f–%.0f KiB (before the first case %.0f KiB)",
		slices.Min(sizes[1:])/1024, slices.Max(sizes[1:])/1024, sizes[0]/1024)

	vsReplay := ratios(byName["our webhook (command)"], byName["webhook replaying our patch"])
	vsReplayTypical := ratios(byName["typical, our webhook"], byName["typical, replaying our patch"])
	verdict := func(xs []float64) string {
		if median(xs) >= 0.85 {
			return "goal ≥ 0.85 met"
		}
		return "goal ≥ 0.85 NOT met"
	}
	cpuVsReplay := cpuRatios(byName["our webhook (command)"], byName["webhook replaying our patch"])
	cpuVsReplayTypical := cpuRatios(byName["typical, our webhook"], byName["typical, replaying our patch"])
	b.Logf("ours against the webhook replaying our exact patch, same round, by wall time: minimal pod %s (%s); typical pod %s (%s)",
		spread(vsReplay), verdict(vsReplay), spread(vsReplayTypical), verdict(vsReplayTypical))
	b.Logf("the same by CPU per pod (every process of the bed): minimal pod %s (%s); typical pod %s (%s)",
		spread(cpuVsReplay), verdict(cpuVsReplay), spread(cpuVsReplayTypical), verdict(cpuVsReplayTypical))

	les, _ := histogram(b, port)
	zero := make([]float64, len(les))
	quantiles := func(c *benchCase) string {
		return fmt.Sprintf("%.1f/%.1f ms", serverQuantile(les, zero, c.hist, 0.5), serverQuantile(les, zero, c.hist, 0.99))
	}
	b.Logf("webhook-side p50/p99 (histogram bucket bounds): command %s, cache %s, cold %s",
		quantiles(byName["our webhook (command)"]), quantiles(byName["our webhook (warm cache)"]), quantiles(byName["our webhook (cold lookup)"]))
	calls, admissions := 0.0, 0
	for _, c := range cases {
		if c.ours {
			calls += c.calls
			admissions += c.pods
		}
	}
	b.Logf("API server's view: %.0f webhook calls for %d admissions through our webhook (measured rounds)", calls, admissions)
	conns := metricValue(scrape(b, port, "inj-bench")["inj-bench"], "cloudtaser_injector_connections_total")
	b.Logf("connections accepted by the webhook over the run: %.0f", conns)
	hwm, rss := vmKiB(r.cmd.Process.Pid, "VmHWM"), vmKiB(r.cmd.Process.Pid, "VmRSS")
	b.Logf("webhook RSS %d KiB (peak %d KiB)", rss, hwm)

	withOurs := byName["our webhook (command)"]
	b.ReportMetric(ms(pct(withOurs.latencies, 0.99)-pct(base.latencies, 0.99)), "p99-overhead-ms")
	b.ReportMetric(median(ratios(withOurs, base)), "throughput-ratio")
	b.ReportMetric(median(ratios(byName["typical, our webhook"], byName[noneTypical])), "typical-throughput-ratio")
	b.ReportMetric(median(ratios(byName["not opted in, ours installed"], byName[noneNotOptedIn])), "not-opted-in-throughput-ratio")
	b.ReportMetric(median(vsReplay), "vs-replay-ratio")
	b.ReportMetric(median(vsReplayTypical), "typical-vs-replay-ratio")
	b.ReportMetric(median(cpuVsReplay), "cpu-vs-replay-ratio")
	b.ReportMetric(median(cpuVsReplayTypical), "typical-cpu-vs-replay-ratio")
	b.ReportMetric(slices.Max(baseRates)/slices.Min(baseRates), "baseline-max/min")
	b.ReportMetric(float64(hwm)/1024, "webhook-peak-MiB")
}

// cpuRatios: per round, base's CPU per pod (every process of the bed: etcd, the API server,
// our webhook, this process) over c's: the throughput ratio of a bed that is CPU-bound,
// which other tenants of the machine barely move (they take wall time, not CPU per pod).
func cpuRatios(c, base *benchCase) []float64 {
	out := make([]float64, len(c.cpuPerPod))
	for i := range c.cpuPerPod {
		out[i] = base.cpuPerPod[i] / c.cpuPerPod[i]
	}
	return out
}

// ratios: per round, the throughput of c against that of base in the same round.
func ratios(c, base *benchCase) []float64 {
	out := make([]float64, len(c.walls))
	for i := range c.walls {
		out[i] = base.walls[i].Seconds() / c.walls[i].Seconds()
	}
	return out
}

func spreadRates(rates []float64) string {
	return fmt.Sprintf("%4.0f (%4.0f–%4.0f)", median(rates), slices.Min(rates), slices.Max(rates))
}

func joinMs(secs []float64) string {
	parts := make([]string, len(secs))
	for i, s := range secs {
		parts[i] = fmt.Sprintf("%.2f", 1000*s)
	}
	return strings.Join(parts, "/")
}

func joinRates(rates []float64) string {
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = fmt.Sprintf("%.0f", r)
	}
	return strings.Join(parts, "/")
}

// startHook starts a webhook in this process that allows every pod, with the patch patch
// returns for it (none when patch is nil), over HTTP/2; probe makes the pods that show the
// configuration calling it is in effect.
func startHook(b *testing.B, patch func(object json.RawMessage) []byte, probe func(int) map[string]any) *hook {
	var calls atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review struct {
			Request struct {
				UID    string          `json:"uid"`
				Object json.RawMessage `json:"object"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		resp := map[string]any{"uid": review.Request.UID, "allowed": true}
		if patch != nil {
			resp["patch"], resp["patchType"] = patch(review.Request.Object), "JSONPatch"
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
		calls.Add(1)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	b.Cleanup(srv.Close)
	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return &hook{
		config: benchMWC, webhook: benchHook,
		clientConfig: map[string]any{"url": srv.URL + "/mutate", "caBundle": caBundle},
		calls:        func() float64 { return float64(calls.Load()) },
		probe:        probe,
	}
}

// typicalPod is a pod as a Deployment from a typical Helm chart creates it (a web service
// with probes, resources, a hardened security context, a ConfigMap, an emptyDir for /tmp,
// the downward API and anti-affinity), opted in, its containers setting command.
func typicalPod() map[string]any {
	p := appPod(true, allowed)
	md := p["metadata"].(map[string]any)
	md["labels"] = map[string]string{
		"app.kubernetes.io/name": "shop-api", "app.kubernetes.io/instance": "shop", "app.kubernetes.io/version": "2.14.1",
		"app.kubernetes.io/component": "api", "pod-template-hash": "7d9f8b6c5d", "cloudtaser.io/inject": "true",
	}
	ann := md["annotations"].(map[string]string)
	ann["checksum/config"] = "4f1c9f2e0b6d8a7c5e3b1a9f7d5c3e1b0a8f6d4c2e0b9a7f5d3c1e0b8a6f4d2c"
	ann["prometheus.io/scrape"], ann["prometheus.io/port"] = "true", "9090"
	md["ownerReferences"] = []any{map[string]any{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-api-7d9f8b6c5d",
		"uid": "0e8f4c1a-6b2d-4d7e-9a3f-5c1b8e2d7f40", "controller": true, "blockOwnerDeletion": true}}
	probe := func(path string, delay int) map[string]any {
		return map[string]any{"httpGet": map[string]any{"path": path, "port": "http"}, "initialDelaySeconds": delay, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3}
	}
	env := []any{map[string]any{"name": "PLAIN", "value": canary}}
	for _, kv := range [][2]string{{"LOG_LEVEL", "info"}, {"HTTP_PORT", "8080"}, {"METRICS_PORT", "9090"}, {"DB_HOST", "postgres.shop.svc"}, {"DB_NAME", "shop"}, {"DB_USER", "shop"}} {
		env = append(env, map[string]any{"name": kv[0], "value": kv[1]})
	}
	env = append(env, map[string]any{"name": "POD_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.name"}}})
	p["spec"] = map[string]any{
		"serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
		"securityContext": map[string]any{"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": map[string]any{"type": "RuntimeDefault"}},
		"affinity": map[string]any{"podAntiAffinity": map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": []any{map[string]any{
			"weight": 100, "podAffinityTerm": map[string]any{"topologyKey": "kubernetes.io/hostname",
				"labelSelector": map[string]any{"matchLabels": map[string]string{"app.kubernetes.io/name": "shop-api", "app.kubernetes.io/instance": "shop"}}}}}}},
		"containers": []any{map[string]any{
			"name": "api", "image": "registry.local/shop-api:2.14.1", "imagePullPolicy": "IfNotPresent",
			"command": []string{"/app"}, "args": []string{"--serve", "--config=/etc/shop/config.yaml"},
			"ports":         []any{map[string]any{"name": "http", "containerPort": 8080, "protocol": "TCP"}, map[string]any{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}},
			"env":           env,
			"resources":     map[string]any{"requests": map[string]any{"cpu": "250m", "memory": "256Mi"}, "limits": map[string]any{"cpu": "1", "memory": "512Mi"}},
			"livenessProbe": probe("/healthz", 10), "readinessProbe": probe("/readyz", 5),
			"securityContext": map[string]any{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": map[string]any{"drop": []string{"ALL"}}},
			"volumeMounts":    []any{map[string]any{"name": "config", "mountPath": "/etc/shop", "readOnly": true}, map[string]any{"name": "tmp", "mountPath": "/tmp"}},
		}},
		"volumes": []any{
			map[string]any{"name": "config", "configMap": map[string]any{"name": "shop-api"}},
			map[string]any{"name": "tmp", "emptyDir": map[string]any{}},
		},
	}
	return p
}

// benchConfig is the configuration the benchmark's replica runs with (startReplica's flags).
func benchConfig() *inject.Config {
	return &inject.Config{RuntimeImage: "registry.local/cloudtaser-runtime:test", AllowedAddresses: []string{allowed}, Audience: "vault"}
}

// ourPatch runs our mutation in this process on a pod's JSON as the API server would send it.
func ourPatch(b *testing.B, cfg *inject.Config, obj json.RawMessage) []byte {
	r := inject.Mutate(context.Background(), cfg, &webhook.Request{UID: "bench", Kind: webhook.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Namespace: appNS, Operation: webhook.OperationCreate, Object: obj})
	if !r.Allowed || len(r.Patch) == 0 {
		b.Fatalf("our mutation refused the benchmark pod: %+v", r)
	}
	return r.Patch
}

// injectedForm makes the pods of mk as our webhook would leave them: our patch applied here
// (internal/jsonpatch, as strict as the API server's applier), once, to the first pod; the
// others are copies under their own names, so the client's share of the phase stays what it
// is in the others.
func injectedForm(b *testing.B, mk func(i int) map[string]any) func(i int) map[string]any {
	raw, err := json.Marshal(mk(0))
	if err != nil {
		b.Fatal(err)
	}
	out, err := jsonpatch.Apply(raw, ourPatch(b, benchConfig(), raw))
	if err != nil {
		b.Fatalf("our patch does not apply to the benchmark pod: %v", err)
	}
	var tmpl map[string]any
	if err := json.Unmarshal(out, &tmpl); err != nil {
		b.Fatal(err)
	}
	return func(i int) map[string]any {
		name := mk(i)["metadata"].(map[string]any)["name"]
		md := maps.Clone(tmpl["metadata"].(map[string]any))
		md["name"] = name
		p := maps.Clone(tmpl)
		p["metadata"] = md
		return p
	}
}

// replayOurPatch answers every review with the patch our mutation made for the first one
// (the benchmark's pods differ only in their names, which the patch does not contain).
func replayOurPatch(b *testing.B) func(json.RawMessage) []byte {
	var once sync.Once
	var patch []byte
	return func(object json.RawMessage) []byte {
		once.Do(func() { patch = ourPatch(b, benchConfig(), object) })
		return patch
	}
}

// createMWC creates the MutatingWebhookConfiguration name with one webhook (webhookName)
// calling clientConfig (ours, or one of the in-process webhooks).
func createMWC(b *testing.B, k *kubeEnv, name, webhookName string, clientConfig map[string]any) {
	k.must(b, "POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", map[string]any{
		"metadata": map[string]any{"name": name},
		"webhooks": []any{map[string]any{
			"name":                    webhookName,
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

// apiserverWebhookCalls sums the API server's own histogram of calls to the webhook named name.
func apiserverWebhookCalls(b *testing.B, k *kubeEnv, name string) (count, sum float64) {
	resp, err := k.admin.Get(k.server + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `name="`+name+`"`) {
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

// used: CPU seconds each process spent since the meter was made.
func (m cpuMeter) used() map[string]float64 {
	out := make(map[string]float64, len(m.before))
	for name, before := range m.before {
		out[name] = cpuSeconds(m.k.pids[name]) - before
	}
	return out
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

// perfRecord: with CLOUDTASER_BENCH_PERF=FILE, `perf record -g` of the given processes (the
// API server and our webhook, kernel time included) while pods are created through the
// webhook; the returned func stops it (inspect with `perf report -i FILE --sort comm,dso`).
func perfRecord(b *testing.B, pids ...int) func() {
	out := os.Getenv("CLOUDTASER_BENCH_PERF")
	if out == "" {
		return func() {}
	}
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	cmd := exec.Command("perf", "record", "-q", "-g", "-F", "997", "-o", out, "-p", strings.Join(list, ","))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Logf("perf record: %v", err)
		return func() {}
	}
	time.Sleep(500 * time.Millisecond) // attached before the phase starts
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}
