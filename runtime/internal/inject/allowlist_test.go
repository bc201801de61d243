package inject

// The vault-address allow-list holds (issue 28, finding 7) and dangerous targets are a
// reviewer's decision (finding 8): one test per rule of docs/injector.md, "Refusals".

import (
	"context"
	"strings"
	"testing"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/webhook"
)

func setEnv(p map[string]any, kv ...string) {
	var env []any
	for i := 0; i+1 < len(kv); i += 2 {
		env = append(env, map[string]any{"name": kv[i], "value": kv[i+1]})
	}
	get(p, "spec", "containers", 0).(map[string]any)["env"] = env
}

// wrapperConfig is what the wrapper of the patched container resolves from its env.
func wrapperConfig(t *testing.T, c any) contract.Config {
	t.Helper()
	cfg, err := contract.ResolveEnv(envOf(c), func(string) bool { return true })
	if err != nil {
		t.Fatalf("the wrapper refuses the env the webhook wrote: %v", err)
	}
	return cfg
}

// Rule: a container may not set a variable the injector owns (every CLOUDTASER_* name except
// the tuning ones); the message names the variable, never its value.
func TestAContainerSettingAnInjectorOwnedVariableIsDenied(t *testing.T) {
	for _, name := range append(append([]string{}, contract.OwnedEnv...), "CLOUDTASER_VAULT_ADDRESS", "CLOUDTASER_X") {
		p := testPod(annotations())
		setEnv(p, "HTTPS_PROXY", "http://proxy:3128", name, "canary-value-7c1")
		msg := denied(t, testConfig(), p, webhook.ReasonEnvConflict)
		if !strings.Contains(msg, name) || strings.Contains(msg, "canary-value") {
			t.Errorf("%s: %s", name, msg)
		}
	}
}

// Rule: the tuning variables stay the pod's choice (they never steer the connection).
func TestTuningVariablesAreThePodsChoice(t *testing.T) {
	for _, name := range contract.TuningEnv {
		if !contract.PodSettable(name) {
			t.Errorf("%s is not settable", name)
		}
	}
	p := testPod(annotations())
	setEnv(p, contract.EnvMode, "resident", contract.EnvDebug, "on")
	c := get(mutated(t, testConfig(), p), "spec", "containers", 0)
	if cfg := wrapperConfig(t, c); cfg.Mode != contract.ModeResident || !cfg.Debug {
		t.Fatalf("tuning lost: %v", cfg)
	}
}

// Rule: the app's own proxy and VAULT_*/BAO_* variables are admitted and kept for the app
// (enterprise apps use a corporate proxy and their own vault clients), and the wrapper
// configured from the same env ignores every one of them.
func TestTheAppsProxyAndVaultVariablesAreKeptButNeverSteerTheWrapper(t *testing.T) {
	own := []string{
		"HTTPS_PROXY", "http://proxy.corp:3128", "HTTP_PROXY", "http://proxy.corp:3128", "ALL_PROXY", "socks5://proxy.corp:1080",
		"VAULT_ADDR", "https://evil.example:8200", "BAO_ADDR", "https://evil.example:8200",
		"VAULT_SKIP_VERIFY", "true", "BAO_SKIP_VERIFY", "true", "VAULT_CACERT", "/evil/ca.pem", "BAO_CACERT", "/evil/ca.pem",
		"VAULT_NAMESPACE", "evil", "VAULT_TOKEN", "s.evil", "VAULT_AUTH_METHOD", "token",
	}
	p := testPod(annotations())
	setEnv(p, own...)
	c := get(mutated(t, testConfig(), p), "spec", "containers", 0)
	env := envOf(c)
	for i := 0; i+1 < len(own); i += 2 {
		if env[own[i]] != own[i+1] {
			t.Errorf("the app's %s was changed", own[i])
		}
	}
	cfg := wrapperConfig(t, c)
	if cfg.Address != testAddr || cfg.SkipVerify || cfg.CACert != "" || cfg.Namespace != "" || cfg.Token != "" || cfg.AuthMethod != "kubernetes" {
		t.Fatalf("the app's variables steer the wrapper: %v skip=%v ca=%q", cfg, cfg.SkipVerify, cfg.CACert)
	}
}

// Rule: the webhook writes every owned variable, after the container's own entries, so that
// envFrom (which `env` overrides) and the image's ENV cannot supply any of them.
func TestEveryOwnedVariableIsWrittenLast(t *testing.T) {
	p := testPod(annotations())
	setEnv(p, "A", "1")
	get(p, "spec", "containers", 0).(map[string]any)["envFrom"] = []any{map[string]any{"configMapRef": map[string]any{"name": "x"}, "prefix": "CLOUDTASER_"}}
	c := get(mutated(t, testConfig(), p), "spec", "containers", 0)
	env := get(c, "env").([]any)
	if len(env) != 1+len(contract.OwnedEnv) || get(env[0], "name") != "A" {
		t.Fatalf("env %v", asJSON(env))
	}
	for i, name := range contract.OwnedEnv {
		if get(env[i+1], "name") != name {
			t.Fatalf("entry %d is %v, want %s", i+1, get(env[i+1], "name"), name)
		}
	}
}

// Rule: spec.hostAliases must not name the vault address's host (compared without case and
// trailing dot); other aliases are fine. Checked on reinvocation too.
func TestAHostAliasForTheVaultHostIsDenied(t *testing.T) {
	for _, h := range []string{"bao.internal", "BAO.Internal.", " bao.internal"} {
		p := testPod(annotations())
		p["spec"].(map[string]any)["hostAliases"] = []any{
			map[string]any{"ip": "10.0.0.9", "hostnames": []any{"db.internal"}},
			map[string]any{"ip": "127.0.0.1", "hostnames": []any{"other", h}},
		}
		msg := denied(t, testConfig(), p, webhook.ReasonVaultSteering)
		if !strings.Contains(msg, "hostAliases") {
			t.Errorf("%q: %s", h, msg)
		}
	}
	p := testPod(annotations())
	p["spec"].(map[string]any)["hostAliases"] = []any{map[string]any{"ip": "10.0.0.9", "hostnames": []any{"bao.internal.example", "internal"}}}
	mutated(t, testConfig(), p)
	// A second webhook adding the alias after our patch is caught on reinvocation.
	again := mutated(t, testConfig(), testPod(annotations()))
	again["spec"].(map[string]any)["hostAliases"] = []any{map[string]any{"ip": "10.0.0.9", "hostnames": []any{"bao.internal"}}}
	denied(t, testConfig(), again, webhook.ReasonVaultSteering)
}

// Rule: a mapping to a dangerous variable needs cloudtaser.io/accept-dangerous-env; the
// wrapper gets the accepted list and applies the same rule.
func TestADangerousTargetNeedsTheReviewersAcceptance(t *testing.T) {
	for _, env := range []string{"LD_PRELOAD", "PATH", "NODE_OPTIONS", "BASH_FUNC_x", "JAVA_TOOL_OPTIONS"} {
		p := testPod(annotations("cloudtaser.io/env-map", "username=DB_USER,password="+env))
		msg := denied(t, testConfig(), p, webhook.ReasonDangerousEnv)
		if !strings.Contains(msg, env) || !strings.Contains(msg, contract.AnnotationAcceptDangerousEnv) {
			t.Errorf("%s: %s", env, msg)
		}
		p = testPod(annotations("cloudtaser.io/env-map", "username=DB_USER,password="+env, contract.AnnotationAcceptDangerousEnv, "PYTHONPATH, "+env))
		c := get(mutated(t, testConfig(), p), "spec", "containers", 0)
		if got := envOf(c)[contract.EnvAcceptDanger]; got != "PYTHONPATH,"+env {
			t.Errorf("%s: the wrapper is told %q", env, got)
		}
		wrapperConfig(t, c)
	}
}

// Rule: a reserved target (CLOUDTASER_*) is denied even when "accepted"; a malformed
// acceptance list is a bad annotation.
func TestAReservedTargetIsAlwaysDenied(t *testing.T) {
	p := testPod(annotations("cloudtaser.io/env-map", "password=CLOUDTASER_VAULT_ADDR", contract.AnnotationAcceptDangerousEnv, "CLOUDTASER_VAULT_ADDR"))
	if msg := denied(t, testConfig(), p, webhook.ReasonDangerousEnv); !strings.Contains(msg, "reserves") {
		t.Fatal(msg)
	}
	p = testPod(annotations(contract.AnnotationAcceptDangerousEnv, "PATH;rm"))
	denied(t, testConfig(), p, webhook.ReasonBadAnnotations)
}

// Rule: on reinvocation, a variable the injector owns set a second time (a later webhook
// appended its own value, which would win) is denied; the pod as we left it is not.
func TestAnOwnedVariableAddedAfterTheInjectorIsDeniedOnReinvocation(t *testing.T) {
	injected := mutated(t, testConfig(), testPod(annotations()))
	if r := Mutate(context.Background(), testConfig(), request(t, injected)); !r.Allowed || r.Patch != nil {
		t.Fatalf("the injected pod itself: %+v", r)
	}
	c := get(injected, "spec", "containers", 0).(map[string]any)
	c["env"] = append(c["env"].([]any), map[string]any{"name": contract.EnvSkipVerify, "value": "true"})
	if msg := denied(t, testConfig(), injected, webhook.ReasonEnvConflict); !strings.Contains(msg, contract.EnvSkipVerify) {
		t.Fatal(msg)
	}
}
