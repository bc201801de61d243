package inject

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/webhook"
)

// kubelet builds a container's environment and argv as the kubelet does (pkg/kubelet
// makeEnvironmentVariables and ExpandContainerCommandAndArgs, with contract.Expand, whose
// rules the shared vectors pin): env entries in order, a literal value expanded with the
// entries before it; a secretKeyRef entry gets secrets[name]; then command and args expanded
// with the final environment.
func kubelet(t *testing.T, c any, secrets map[string]string) ([]string, []string) {
	t.Helper()
	defined := map[string]string{}
	var order []string
	envList, _ := get(c, "env").([]any)
	for _, e := range envList {
		name := get(e, "name").(string)
		var v string
		if get(e, "valueFrom") != nil {
			v = secrets[name]
		} else {
			raw, _ := get(e, "value").(string)
			v = contract.Expand(raw, func(n string) (string, bool) { s, ok := defined[n]; return s, ok })
		}
		if _, seen := defined[name]; !seen {
			order = append(order, name)
		}
		defined[name] = v
	}
	lookup := func(n string) (string, bool) { s, ok := defined[n]; return s, ok }
	var argv []string
	for _, s := range append(strs(get(c, "command")), strs(get(c, "args"))...) {
		argv = append(argv, contract.Expand(s, lookup))
	}
	env := make([]string, 0, len(order))
	for _, n := range order {
		env = append(env, n+"="+defined[n])
	}
	return argv, env
}

// wrapper is what `wrap --expand=PLAN -- ...` makes of the kubelet's argv and env with the
// vault's values: the app's argv and environment (without CLOUDTASER_*).
func wrapper(t *testing.T, argv, env []string, vault []contract.EnvVar) ([]string, []string) {
	t.Helper()
	if len(argv) < 3 || argv[0] != WrapperPath || argv[1] != "wrap" {
		t.Fatalf("not the wrapper: %q", argv)
	}
	rest := argv[2:]
	plan := contract.ExpandPlan{}
	if v, ok := strings.CutPrefix(rest[0], "--expand="); ok {
		var err error
		if plan, err = contract.ParseExpandPlan(v); err != nil {
			t.Fatal(err)
		}
		rest = rest[1:]
	}
	if rest[0] != "--" {
		t.Fatalf("no --: %q", argv)
	}
	app, expanded, err := plan.Apply(rest[1:], env, vault)
	if err != nil {
		t.Fatal(err)
	}
	return app, contract.ChildEnv(env, append(append([]contract.EnvVar{}, vault...), expanded...))
}

func secretRef(name string) map[string]any {
	return map[string]any{"name": name, "valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "db", "key": strings.ToLower(name)}}}
}

func value(name, v string) map[string]any { return map[string]any{"name": name, "value": v} }

// withoutSecretRefs is the container as finalize leaves it: the migrated variables' entries gone.
func withoutSecretRefs(c map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		out[k] = v
	}
	var env []any
	for _, e := range c["env"].([]any) {
		if _, ref := e.(map[string]any)["valueFrom"]; !ref {
			env = append(env, e)
		}
	}
	out["env"] = env
	return out
}

func TestVarReferencesReachTheAppAsTheKubeletWouldExpandThem(t *testing.T) {
	vault := []contract.EnvVar{{Name: "DB_USER", Value: "app$(x)"}, {Name: "DB_PASSWORD", Value: "pw $$ )("}}
	secrets := map[string]string{"DB_USER": "app$(x)", "DB_PASSWORD": "pw $$ )("}
	original := map[string]any{
		"name": "app", "image": "redis:7",
		"command": []any{"sh", "-c", "exec redis-server --requirepass $(DB_PASSWORD) --user $$(DB_USER)"},
		"args":    []any{"--url", "$(DATABASE_URL)", "$(PLAIN)", "$$(DB_PASSWORD)", "$(EARLY)", "x$(DB_USER"},
		"env": []any{
			secretRef("DB_USER"),
			value("EARLY", "[$(LATE)|$(DB_USER)]"),
			secretRef("DB_PASSWORD"),
			value("DATABASE_URL", "postgres://$(DB_USER):$(DB_PASSWORD)@db/app"),
			value("PLAIN", "plain-$(LATE)"),
			value("LATE", "late"),
			value("DSN", "$(DATABASE_URL)?sslmode=require"),
			value("SELF", "$$(DB_PASSWORD)"),
		},
	}
	wantArgv, wantEnv := kubelet(t, original, secrets)
	for _, tc := range []struct {
		name string
		c    map[string]any
	}{{"before finalize (secretKeyRef entries still there)", original}, {"after finalize (no secretKeyRef left)", withoutSecretRefs(original)}} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod(annotations())
			p["spec"].(map[string]any)["containers"] = []any{tc.c}
			out := mutated(t, testConfig(), p)
			c := get(out, "spec", "containers", 0)
			if s := asJSON(c); strings.Contains(s, "pw $$") || strings.Contains(s, "app$(x)") {
				t.Fatal("a value in the pod")
			}
			argv, env := kubelet(t, c, secrets) // the Secret is never read after finalize: no entry left
			app, appEnv := wrapper(t, argv, env, vault)
			if !reflect.DeepEqual(app, wantArgv) {
				t.Errorf("argv\n got %q\nwant %q", app, wantArgv)
			}
			got := contract.EnvMap(appEnv)
			for _, kv := range wantEnv {
				k, v, _ := strings.Cut(kv, "=")
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	// the pieces, for the record
	p := testPod(annotations())
	p["spec"].(map[string]any)["containers"] = []any{original}
	c := get(mutated(t, testConfig(), p), "spec", "containers", 0)
	cmd := strs(get(c, "command"))
	if cmd[2] != `--expand={"args":[2,4,7],"env":[{"name":"EARLY","later":["LATE"]},{"name":"DATABASE_URL"},{"name":"DSN"}]}` {
		t.Errorf("plan %q", cmd[2])
	}
	if cmd[6] != "exec redis-server --requirepass $$(DB_PASSWORD) --user $$$$(DB_USER)" {
		t.Errorf("command %q", cmd[6])
	}
	if args := strs(get(c, "args")); !reflect.DeepEqual(args, []string{"--url", "$$(DATABASE_URL)", "$(PLAIN)", "$$(DB_PASSWORD)", "$$(EARLY)", "x$(DB_USER"}) {
		t.Errorf("args %q", args)
	}
	e := map[string]any{}
	for _, x := range get(c, "env").([]any) {
		e[get(x, "name").(string)] = get(x, "value")
	}
	if e["PLAIN"] != "plain-$(LATE)" || e["SELF"] != "$$(DB_PASSWORD)" || e["DSN"] != "$$(DATABASE_URL)?sslmode=require" || e["EARLY"] != "[$$(LATE)|$$(DB_USER)]" {
		t.Errorf("env %v", e)
	}
}

// The one documented difference: the vault's values count as defined before the pod's env
// list (like envFrom), so an entry that refers to a migrated variable whose own entry came
// after it gets the value where the kubelet kept the reference literally.
func TestVaultValuesAreDefinedBeforeTheEnvList(t *testing.T) {
	p := testPod(annotations())
	p["spec"].(map[string]any)["containers"] = []any{map[string]any{"name": "app", "image": "a:1", "command": []any{"/a"},
		"env": []any{value("EARLY", "<$(DB_USER)>"), secretRef("DB_USER")}}}
	c := get(mutated(t, testConfig(), p), "spec", "containers", 0)
	argv, env := kubelet(t, c, map[string]string{"DB_USER": "u"})
	_, appEnv := wrapper(t, argv, env, []contract.EnvVar{{Name: "DB_USER", Value: "u"}})
	if got := contract.EnvMap(appEnv)["EARLY"]; got != "<u>" {
		t.Fatalf("EARLY = %q", got)
	}
}

func TestNothingToExpandKeepsThePlainWrapperCommand(t *testing.T) {
	p := testPod(annotations())
	c := p["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	c["args"] = []any{"$(HOME)", "$$(DB_PASSWORD)"}
	c["env"] = []any{value("X", "$(Y)")}
	out := get(mutated(t, testConfig(), p), "spec", "containers", 0)
	if cmd := strs(get(out, "command")); cmd[2] != "--" {
		t.Fatalf("command %q", cmd)
	}
	if args := strs(get(out, "args")); !reflect.DeepEqual(args, []string{"$(HOME)", "$$(DB_PASSWORD)"}) {
		t.Fatalf("args %q", args)
	}
}

func execProbe(cmd ...string) map[string]any {
	l := make([]any, len(cmd))
	for i, s := range cmd {
		l[i] = s
	}
	return map[string]any{"exec": map[string]any{"command": l}, "periodSeconds": 2}
}

func TestExecProbesAndHooksThatUseAMigratedVariableRunThroughTheRunner(t *testing.T) {
	p := testPod(annotations())
	c := p["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	c["env"] = []any{value("DATABASE_URL", "postgres://$(DB_USER)@db")}
	c["livenessProbe"] = execProbe("sh", "-c", `redis-cli -a "$DB_PASSWORD" ping`)
	c["readinessProbe"] = execProbe("cat", "/tmp/ready")
	c["startupProbe"] = map[string]any{"httpGet": map[string]any{"path": "/", "port": 80}}
	c["lifecycle"] = map[string]any{
		"postStart": execProbe("sh", "-c", "psql ${DATABASE_URL} -c 'select 1'"),
		"preStop":   execProbe("sh", "-c", "echo $DB_PASSWORDX $(date)"),
	}
	out := get(mutated(t, testConfig(), p), "spec", "containers", 0)
	runner := append(ExecRunnerPrefix(), "sh", "-c")
	if got := strs(get(out, "livenessProbe", "exec", "command")); !reflect.DeepEqual(got, append(runner, `redis-cli -a "$DB_PASSWORD" ping`)) {
		t.Errorf("liveness %q", got)
	}
	if got := strs(get(out, "lifecycle", "postStart", "exec", "command")); !reflect.DeepEqual(got, append(runner, "psql ${DATABASE_URL} -c 'select 1'")) {
		t.Errorf("postStart (a deferred variable) %q", got)
	}
	if got := strs(get(out, "readinessProbe", "exec", "command")); !reflect.DeepEqual(got, []string{"cat", "/tmp/ready"}) {
		t.Errorf("readiness untouched %q", got)
	}
	if got := strs(get(out, "lifecycle", "preStop", "exec", "command")); got[0] != "sh" {
		t.Errorf("preStop untouched (no migrated variable) %q", got)
	}
	if get(out, "livenessProbe", "periodSeconds") != float64(2) || get(out, "startupProbe", "httpGet") == nil {
		t.Errorf("probe settings changed: %s", asJSON(out))
	}
	// a native sidecar's probe too
	p = testPod(annotations())
	p["spec"].(map[string]any)["initContainers"] = []any{map[string]any{"name": "proxy", "image": "p:1", "command": []any{"/p"}, "restartPolicy": "Always",
		"readinessProbe": execProbe("sh", "-c", "check --password=$(DB_PASSWORD)")}}
	side := get(mutated(t, testConfig(), p), "spec", "initContainers", 1)
	if got := strs(get(side, "readinessProbe", "exec", "command")); got[0] != WrapperPath || got[1] != "exec" {
		t.Errorf("sidecar probe %q", got)
	}
}

func TestUsesVariable(t *testing.T) {
	names := map[string]bool{"PW": true, "tls.crt": true}
	for cmd, want := range map[string]bool{
		"echo $PW": true, "echo ${PW}": true, "echo ${PW:-x}": true, "echo $(PW)": true, "a$PW-b": true,
		"echo $PWX": false, "echo PW": false, "echo $$PW_2": false, "echo $(tls.crt)": true, "echo $tls.crt": false,
		`test "$(printf %s "$PW" | sha256sum)" = x`: true, `echo "$(date) ${PW}"`: true,
	} {
		if got := UsesVariable([]string{"sh", "-c", cmd}, names); got != want {
			t.Errorf("%q: %v, want %v", cmd, got, want)
		}
	}
	if UsesVariable([]string{WrapperPath, "exec", "--", "echo $PW"}, names) {
		t.Error("an already routed command matched again")
	}
}

func TestPodsPinnedToWindowsAreRefused(t *testing.T) {
	for _, spec := range []map[string]any{
		{"nodeSelector": map[string]any{"kubernetes.io/os": "windows"}},
		{"os": map[string]any{"name": "windows"}},
	} {
		p := testPod(annotations())
		for k, v := range spec {
			p["spec"].(map[string]any)[k] = v
		}
		msg := denied(t, testConfig(), p, webhook.ReasonUnsupportedOS)
		if !strings.Contains(msg, "Windows") || !strings.Contains(msg, "Linux") {
			t.Errorf("message %q", msg)
		}
	}
	p := testPod(annotations())
	p["spec"].(map[string]any)["nodeSelector"] = map[string]any{"kubernetes.io/os": "linux"}
	p["spec"].(map[string]any)["os"] = map[string]any{"name": "linux"}
	mutated(t, testConfig(), p)
}

func TestInitContainersFollowTheEntrypointRules(t *testing.T) {
	p := testPod(annotations())
	p["spec"].(map[string]any)["initContainers"] = []any{map[string]any{"name": "migrate", "image": "migrate:1"}}
	msg := denied(t, testConfig(), p, webhook.ReasonImageUnresolvable)
	if !strings.Contains(msg, "container migrate has no command") {
		t.Errorf("message %q", msg)
	}
	// an init container setting an owned variable is refused like a container
	p = testPod(annotations())
	p["spec"].(map[string]any)["initContainers"] = []any{map[string]any{"name": "migrate", "image": "m:1", "command": []any{"/m"},
		"env": []any{value("CLOUDTASER_VAULT_ADDR", "https://evil")}}}
	denied(t, testConfig(), p, webhook.ReasonEnvConflict)
}

func TestInitContainersAfterCloudtaserFiles(t *testing.T) {
	ann := annotations("cloudtaser.io/secret-files", `[{"defaultMode":420,"files":[{"file":"a","key":"a","path":"secret/data/payments/db"}],"volume":"certs"}]`)
	p := testPod(ann)
	spec := p["spec"].(map[string]any)
	spec["volumes"] = []any{map[string]any{"name": "certs", "secret": map[string]any{"secretName": "s"}}}
	spec["initContainers"] = []any{map[string]any{"name": "migrate", "image": "m:1", "command": []any{"/m", "$(DB_PASSWORD)"},
		"volumeMounts": []any{map[string]any{"name": "certs", "mountPath": "/c"}}}}
	out := mutated(t, testConfig(), p)
	inits := get(out, "spec", "initContainers").([]any)
	var names []string
	for _, c := range inits {
		names = append(names, get(c, "name").(string))
	}
	if !reflect.DeepEqual(names, []string{InitContainerName, FilesContainerName, "migrate"}) {
		t.Fatalf("order %v", names)
	}
	m := inits[2]
	if got := strs(get(m, "command")); got[0] != WrapperPath || got[len(got)-1] != "$$(DB_PASSWORD)" || !strings.HasPrefix(got[2], "--expand=") {
		t.Errorf("command %q", got)
	}
	if get(m, "volumeMounts", 0, "readOnly") != true {
		t.Errorf("served volume not read-only: %s", asJSON(m))
	}
	if _, ok := envOf(m)[contract.EnvSecretFiles]; !ok {
		t.Errorf("no %s: %s", contract.EnvSecretFiles, asJSON(m))
	}
	var plan contract.ExpandPlan
	_ = json.Unmarshal([]byte(strings.TrimPrefix(strs(get(m, "command"))[2], "--expand=")), &plan)
	if !reflect.DeepEqual(plan.Args, []int{1}) {
		t.Errorf("plan %+v", plan)
	}
}
