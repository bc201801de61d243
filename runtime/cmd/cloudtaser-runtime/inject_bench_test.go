package main

// The injector's benchmark (issue 14): pod creations through a real kube-apiserver without
// and with the webhook, and the webhook's admission latency for a pod whose containers set
// command, for one whose image ENTRYPOINT comes from the warm cache, and for cold lookups in
// a real registry (go-containerregistry's, the one `crane registry serve` runs); for a minimal
// pod and for a typical one. For reference, what any implementation or any webhook costs on
// this machine: the pods as our webhook leaves them created with no webhook at all, a webhook
// that does nothing (HTTP/2 and HTTP/1.1), one that adds one annotation, one that replays our
// patch. Each case logs the CPU time per pod of etcd, the API server and our webhook;
// CLOUDTASER_BENCH_PROFILE=FILE adds a CPU profile of the API server,
// CLOUDTASER_BENCH_PERF=FILE a `perf record` of the API server and our webhook.
//
//	go test -v -run '^$' -bench InjectorPodCreation -benchtime 1x ./cmd/cloudtaser-runtime/
//
// Figures are reported with b.ReportMetric and logged (-v shows every line; without it the
// testing package cuts a benchmark's log after ten lines); docs/injector.md keeps them.

import (
	"context"
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
	benchPods = 200
	rounds    = 3                        // concurrent runs per case; throughput is their median
	phasePods = benchPods * (1 + rounds) // pods one case creates
)

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

// runPhase creates benchPods pods one at a time (latency), then benchPods more with 8 workers,
// rounds times (throughput: the median of the rounds, which damps this machine's noise).
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
	walls := make([]time.Duration, rounds)
	for r := range walls {
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
					if code, _ := createPod(b, k, mk((1+r)*benchPods+i)); code != 201 {
						mu.Lock()
						p.failed++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		walls[r] = time.Since(t0)
	}
	slices.Sort(walls)
	p.wall = walls[rounds/2]
	b.Logf("%-30s p50 %6.2f ms  p99 %6.2f ms  throughput %6.1f pods/s (rounds %s)  failed %d", nm,
		ms(pct(p.latencies, 0.5)), ms(pct(p.latencies, 0.99)), float64(benchPods)/p.wall.Seconds(), roundRates(walls), p.failed)
	return p
}

func roundRates(walls []time.Duration) string {
	rates := make([]string, len(walls))
	for i, w := range walls {
		rates[i] = fmt.Sprintf("%.0f", float64(benchPods)/w.Seconds())
	}
	return strings.Join(rates, "/")
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
	for i := 0; i < phasePods; i++ {
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

	// Without the webhook: its configuration is deleted (install's is created again before
	// our webhook's cases).
	k.must(b, "DELETE", mwcPath, nil)
	// Warm-up, not reported: the API server's and etcd's first few hundred pods are slower.
	runPhase(b, k, "warm-up (not counted)", withCommand)
	cpu := newCPUMeter(k)
	without := runPhase(b, k, "without the webhook", withCommand)
	cpu.log(b, "without the webhook", phasePods)
	cpu = newCPUMeter(k)
	withoutPlain := runPhase(b, k, "without, not opted in", notOptedIn)
	cpu.log(b, "without, not opted in", phasePods)
	cpu = newCPUMeter(k)
	withoutTypical := runPhase(b, k, "without (typical pod)", typical)
	cpu.log(b, "without (typical pod)", phasePods)
	// The floor of the injection itself: the pods exactly as our webhook leaves them
	// (inject.Mutate run here, its patch applied here), created with no webhook at all.
	cpu = newCPUMeter(k)
	preInjected := runPhase(b, k, "without, already injected", injectedForm(b, withCommand))
	cpu.log(b, "without, already injected", phasePods)
	cpu = newCPUMeter(k)
	preInjectedTypical := runPhase(b, k, "without, typical injected", injectedForm(b, typical))
	cpu.log(b, "without, typical injected", phasePods)
	// The floor any mutating webhook has here: one that allows every pod and patches
	// nothing, answered in microseconds (HTTP/2, as the API server negotiates by default,
	// and HTTP/1.1); one that adds a single annotation (the API server then applies a patch
	// and re-runs its own admission plugins); and one that replays our patch, computed once
	// (the API server's share of our mutation; these webhooks' own work runs in this process,
	// beside the client, so it is not a strict lower bound for ours).
	nullH2 := nullWebhookPhase(b, k, "null webhook (HTTP/2)", true, nil, withCommand)
	nullH1 := nullWebhookPhase(b, k, "null webhook (HTTP/1.1)", false, nil, withCommand)
	oneAnnotation := func(json.RawMessage) []byte {
		return []byte(`[{"op":"add","path":"/metadata/annotations/bench","value":"x"}]`)
	}
	oneAnn := nullWebhookPhase(b, k, "webhook adding 1 annotation", true, oneAnnotation, withCommand)
	oneAnnTypical := nullWebhookPhase(b, k, "1 annotation (typical)", true, oneAnnotation, typical)
	replay := nullWebhookPhase(b, k, "webhook replaying our patch", true, replayOurPatch(b), withCommand)
	replayTypical := nullWebhookPhase(b, k, "replaying our patch (typical)", true, replayOurPatch(b), typical)
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
	stopPerf := perfRecord(b, k.pids["kube-apiserver"], k.pids["webhook"])
	cpu = newCPUMeter(k)
	with := runPhase(b, k, "with the webhook (command)", withCommand)
	cpu.log(b, "with the webhook (command)", phasePods)
	stopPerf()
	stopProfile()
	_, h1 := histogram(b, port)
	cpu = newCPUMeter(k)
	withTypical := runPhase(b, k, "with the webhook (typical)", typical)
	cpu.log(b, "with the webhook (typical)", phasePods)
	if code, pod := createPod(b, k, fromImage(regHost+"/warm/app:1")); code != 201 || !injected(pod) {
		b.Fatalf("warm-cache pod not injected: %d %v", code, pod["message"])
	}
	_, h2 := histogram(b, port)
	warm := runPhase(b, k, "with the webhook (cache)", func(int) map[string]any { return fromImage(regHost + "/warm/app:1") })
	_, h3 := histogram(b, port)
	cold := runPhase(b, k, "with the webhook (cold)", func(i int) map[string]any { return fromImage(fmt.Sprintf("%s/cold/app%d:1", regHost, i)) })
	_, h4 := histogram(b, port)
	// Pods without the label while our webhook is installed: its objectSelector keeps the API
	// server from calling it at all, so the cluster's other pods cost what they did.
	callsBefore, _ := apiserverWebhookCalls(b, k)
	cpu = newCPUMeter(k)
	plain := runPhase(b, k, "installed, pod not opted in", notOptedIn)
	cpu.log(b, "installed, pod not opted in", phasePods)
	if callsAfter, _ := apiserverWebhookCalls(b, k); callsAfter != callsBefore {
		b.Errorf("the API server called the webhook %.0f times for pods without the label", callsAfter-callsBefore)
	}
	// The same pods without the webhook once more: how much the figures drift over the run
	// (the namespace holds some 12,000 pods by now).
	k.must(b, "DELETE", mwcPath, nil)
	again := runPhase(b, k, "without the webhook (again)", withCommand)

	for _, p := range []phase{without, withoutPlain, withoutTypical, preInjected, preInjectedTypical, nullH2, nullH1, oneAnn, oneAnnTypical, replay, replayTypical, with, withTypical, warm, cold, plain, again} {
		if p.failed > 0 {
			b.Errorf("%s: %d pod creations failed", p.name, p.failed)
		}
	}
	vs := func(p phase) float64 { return without.wall.Seconds() / p.wall.Seconds() }
	b.Logf("throughput against none: null webhook %.2f (HTTP/2), %.2f (HTTP/1.1); one annotation %.2f; our patch replayed %.2f; pods already injected, no webhook %.2f; none again %.2f",
		vs(nullH2), vs(nullH1), vs(oneAnn), vs(replay), vs(preInjected), vs(again))
	hwm, rss := vmKiB(r.cmd.Process.Pid, "VmHWM"), vmKiB(r.cmd.Process.Pid, "VmRSS")
	b.Logf("webhook-side p50/p99 (histogram bucket bounds): command %.1f/%.1f ms, cache %.1f/%.1f ms, cold %.1f/%.1f ms",
		serverQuantile(les, h0, h1, 0.5), serverQuantile(les, h0, h1, 0.99),
		serverQuantile(les, h2, h3, 0.5), serverQuantile(les, h2, h3, 0.99),
		serverQuantile(les, h3, h4, 0.5), serverQuantile(les, h3, h4, 0.99))
	admissions := 4*phasePods + 2 // four cases through our webhook, and the two warm-up pods
	calls, secs := apiserverWebhookCalls(b, k)
	calls, secs = calls-nullCalls, secs-nullSecs
	b.Logf("API server's view: %.0f webhook calls for %d admissions, mean %.2f ms per call (apiserver_admission_webhook_admission_duration_seconds)",
		calls, admissions, 1000*secs/calls)
	conns := metricValue(scrape(b, port, "inj-bench")["inj-bench"], "cloudtaser_injector_connections_total")
	b.Logf("connections accepted by the webhook over %d admissions: %.0f", admissions, conns)
	ratio := vs(with)
	vsTypical := func(p phase) float64 { return withoutTypical.wall.Seconds() / p.wall.Seconds() }
	typicalRatio := vsTypical(withTypical)
	b.Logf("typical pod, throughput against none: null webhook adding 1 annotation %.2f; our patch replayed %.2f; already injected, no webhook %.2f",
		vsTypical(oneAnnTypical), vsTypical(replayTypical), vsTypical(preInjectedTypical))
	plainRatio := withoutPlain.wall.Seconds() / plain.wall.Seconds()
	b.Logf("throughput with/without the webhook: %.2f (typical pod %.2f; pods not opted in %.2f); webhook RSS %d KiB (peak %d KiB)", ratio, typicalRatio, plainRatio, rss, hwm)
	b.ReportMetric(ms(pct(with.latencies, 0.99)-pct(without.latencies, 0.99)), "p99-overhead-ms")
	b.ReportMetric(ratio, "throughput-ratio")
	b.ReportMetric(typicalRatio, "typical-throughput-ratio")
	b.ReportMetric(plainRatio, "not-opted-in-throughput-ratio")
	b.ReportMetric(float64(hwm)/1024, "webhook-peak-MiB")
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

// nullWebhookPhase runs a phase through a webhook in this process that allows every pod, with
// the patch patch returns for the pod (none when patch is nil): what the API server's side of
// a webhook call costs on this machine, without our webhook's own work.
func nullWebhookPhase(b *testing.B, k *kubeEnv, nm string, http2 bool, patch func(object json.RawMessage) []byte, mk func(i int) map[string]any) phase {
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
	}))
	srv.EnableHTTP2 = http2
	srv.StartTLS()
	defer srv.Close()
	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	createMWC(b, k, map[string]any{"url": srv.URL + "/mutate", "caBundle": caBundle})
	defer k.must(b, "DELETE", mwcPath, nil)
	// the API server picks up a new configuration within a second or so: wait for a call
	calls0, _ := apiserverWebhookCalls(b, k)
	k.waitFor(b, "the null webhook called", 30*time.Second, func() bool {
		createPod(b, k, mk(0))
		calls, _ := apiserverWebhookCalls(b, k)
		return calls > calls0
	})
	cpu := newCPUMeter(k)
	p := runPhase(b, k, nm, mk)
	cpu.log(b, nm, phasePods)
	return p
}
