package inject

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/webhook"
)

// Every consumer of a migrated variable in an opted-in pod (issue 30; docs/injector.md, "Init
// containers, $(VAR) references, exec probes and hooks"):
//
//   - init containers (native sidecars, restartPolicy Always, included) are wrapped like
//     containers, after cloudtaser-init (and cloudtaser-files), with the same entrypoint rules;
//   - $(VAR) references: a command/args element or a literal env value that refers (by the
//     kubelet's rules, contract.Expand) to a migrated variable, or to an env entry that is
//     itself deferred, is written with every "$" doubled, so the kubelet hands the text over
//     unchanged, and the wrapper expands it (`wrap --expand=PLAN`) with the vault's values, by
//     the kubelet's own rules and definition order;
//   - exec probes and exec lifecycle hooks that mention such a variable ($X, ${X}, $(X)) run
//     through `cloudtaser-runtime exec --`, which gives them the app's own environment (no vault
//     login: internal/wrap/appenv.go);
//   - a pod pinned to Windows is refused: the wrapper is a Linux binary.

// ReasonUnsupportedOS: a pod for a node OS the wrapper cannot run on.
const ReasonUnsupportedOS = webhook.ReasonUnsupportedOS

// ExecRunnerPrefix is what an exec probe or hook that needs the app's environment runs first.
func ExecRunnerPrefix() []string { return []string{WrapperPath, "exec", "--"} }

// consumersPod: what this file reads of a pod, beyond pod.
type consumersPod struct {
	Spec struct {
		OS *struct {
			Name string `json:"name"`
		} `json:"os"`
		NodeSelector   map[string]string   `json:"nodeSelector"`
		InitContainers []consumerContainer `json:"initContainers"`
		Containers     []consumerContainer `json:"containers"`
	} `json:"spec"`
}

type consumerContainer struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name      string          `json:"name"`
		Value     string          `json:"value"`
		ValueFrom json.RawMessage `json:"valueFrom"`
	} `json:"env"`
	LivenessProbe  *probe `json:"livenessProbe"`
	ReadinessProbe *probe `json:"readinessProbe"`
	StartupProbe   *probe `json:"startupProbe"`
	Lifecycle      *struct {
		PostStart *probe `json:"postStart"`
		PreStop   *probe `json:"preStop"`
	} `json:"lifecycle"`
}

// probe is a probe or a lifecycle handler; only exec is read.
type probe struct {
	Exec *struct {
		Command []string `json:"command"`
	} `json:"exec"`
}

// containerConsumers is the consumers plan of one wrapped container.
type containerConsumers struct {
	envIdx  []int // env entries written escaped
	plan    contract.ExpandPlan
	cmdIdx  []int    // command elements written escaped
	argIdx  []int    // args elements written escaped
	tainted []string // names whose value needs the vault (migrated and deferred), sorted
}

// consumers plans one pod: the OS check, then each container's deferred strings.
type consumers struct {
	pod      consumersPod
	migrated map[string]bool
	init     []containerConsumers
	main     []containerConsumers
}

func (m *mutation) consumers(a contract.Annotations) (*consumers, *webhook.Decision) {
	c := &consumers{migrated: map[string]bool{}}
	if err := json.Unmarshal(m.req.Object, &c.pod); err != nil {
		return nil, m.refusal(webhook.ReasonBadRequest, "the request's object is not a readable pod", "Call /mutate only from the API server")
	}
	if os := windowsPin(&c.pod); os != "" {
		return nil, m.refusal(ReasonUnsupportedOS, "it is pinned to Windows nodes ("+os+"): the cloudtaser wrapper runs only on Linux, and the pod would start without its secrets",
			"Keep this workload on Kubernetes Secrets (cloudtaser target discover skips Windows pods), or remove the cloudtaser.io/inject label")
	}
	for _, s := range a.Secrets {
		for _, f := range s.Fields {
			c.migrated[f.Env] = true
		}
	}
	for _, ct := range c.pod.Spec.InitContainers {
		c.init = append(c.init, c.plan(ct))
	}
	for _, ct := range c.pod.Spec.Containers {
		c.main = append(c.main, c.plan(ct))
	}
	return c, nil
}

// windowsPin is how the pod pins Windows ("" when it does not).
func windowsPin(p *consumersPod) string {
	if p.Spec.OS != nil && strings.EqualFold(p.Spec.OS.Name, "windows") {
		return "spec.os.name: windows"
	}
	if strings.EqualFold(p.Spec.NodeSelector["kubernetes.io/os"], "windows") {
		return "nodeSelector kubernetes.io/os: windows"
	}
	return ""
}

// plan finds a container's deferred env entries (in definition order: an entry is deferred
// when it refers to a migrated variable or to an earlier deferred entry) and the command/args
// elements that refer to a migrated or deferred variable.
func (c *consumers) plan(ct consumerContainer) containerConsumers {
	var out containerConsumers
	tainted := map[string]bool{}
	for n := range c.migrated {
		tainted[n] = true
	}
	for k, e := range ct.Env {
		if len(e.ValueFrom) > 0 && string(e.ValueFrom) != "null" {
			if !c.migrated[e.Name] {
				delete(tainted, e.Name) // redefined from elsewhere
			}
			continue
		}
		deferred := false
		for _, ref := range contract.References(e.Value) {
			if tainted[ref] {
				deferred = true
			}
		}
		if !deferred {
			if !c.migrated[e.Name] {
				delete(tainted, e.Name)
			}
			continue
		}
		later := map[string]bool{}
		for _, ref := range contract.References(e.Value) {
			if c.migrated[ref] {
				continue // the vault's values are defined before the env list
			}
			for _, f := range ct.Env[k:] {
				if f.Name == ref {
					later[ref] = true
				}
			}
			for _, f := range ct.Env[:k] {
				if f.Name == ref {
					delete(later, ref) // defined before too: the kubelet sees that one
				}
			}
		}
		out.envIdx = append(out.envIdx, k)
		out.plan.Env = append(out.plan.Env, contract.ExpandEntry{Name: e.Name, Later: sortedKeys(later)})
		tainted[e.Name] = true
	}
	for i, s := range ct.Command {
		if refersTo(s, tainted) {
			out.cmdIdx = append(out.cmdIdx, i)
		}
	}
	for j, s := range ct.Args {
		if refersTo(s, tainted) {
			out.argIdx = append(out.argIdx, j)
		}
	}
	out.tainted = sortedKeys(tainted)
	return out
}

func refersTo(s string, names map[string]bool) bool {
	for _, ref := range contract.References(s) {
		if names[ref] {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// wrapped is the wrapped command of a container whose strings c planned: the --expand flag
// when something is deferred, the deferred command elements escaped. cmd.cmd starts with
// wrapperPrefix(); origLen is the length of the original command (the pod's, or the image's
// ENTRYPOINT).
func (cc *containerConsumers) wrapped(cmd command, setArgs bool) []string {
	prefix := wrapperPrefix()
	orig := append([]string{}, cmd.cmd[len(prefix):]...)
	plan := cc.plan
	plan.Args = nil
	for _, i := range cc.cmdIdx {
		orig[i] = contract.EscapeExpansion(orig[i])
		plan.Args = append(plan.Args, i)
	}
	if !setArgs { // the pod's own args (not the image's CMD, which is never expanded)
		for _, j := range cc.argIdx {
			plan.Args = append(plan.Args, len(orig)+j)
		}
	}
	if len(plan.Args) == 0 && len(plan.Env) == 0 {
		return append(prefix, orig...)
	}
	b, _ := json.Marshal(plan)
	flag := contract.EscapeExpansion("--expand=" + string(b))
	return append([]string{WrapperPath, "wrap", flag, "--"}, orig...)
}

// patch writes the escaped env values and args of the container at base, and routes its exec
// probes and hooks that use a tainted variable through the exec runner.
func (cc *containerConsumers) patch(m *mutation, base string, ct consumerContainer, setArgs bool) {
	for _, k := range cc.envIdx {
		m.ops = append(m.ops, patchOp{Op: "replace", Path: fmt.Sprintf("%s/env/%d/value", base, k), Value: contract.EscapeExpansion(ct.Env[k].Value)})
	}
	if !setArgs {
		for _, j := range cc.argIdx {
			m.ops = append(m.ops, patchOp{Op: "replace", Path: fmt.Sprintf("%s/args/%d", base, j), Value: contract.EscapeExpansion(ct.Args[j])})
		}
	}
	names := map[string]bool{}
	for _, n := range cc.tainted {
		names[n] = true
	}
	handlers := []struct {
		path string
		p    *probe
	}{{"livenessProbe", ct.LivenessProbe}, {"readinessProbe", ct.ReadinessProbe}, {"startupProbe", ct.StartupProbe}}
	if ct.Lifecycle != nil {
		handlers = append(handlers, struct {
			path string
			p    *probe
		}{"lifecycle/postStart", ct.Lifecycle.PostStart}, struct {
			path string
			p    *probe
		}{"lifecycle/preStop", ct.Lifecycle.PreStop})
	}
	for _, h := range handlers {
		if h.p == nil || h.p.Exec == nil || !UsesVariable(h.p.Exec.Command, names) {
			continue
		}
		m.ops = append(m.ops, patchOp{Op: "replace", Path: base + "/" + h.path + "/exec/command", Value: append(ExecRunnerPrefix(), h.p.Exec.Command...)})
	}
}

var shellRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// UsesVariable reports whether an exec command mentions one of names: $NAME or ${NAME...}
// (a shell reading it) or $(NAME). A command already routed through the runner is not
// matched again (reinvocation).
func UsesVariable(command []string, names map[string]bool) bool {
	if len(command) > 0 && command[0] == WrapperPath {
		return false
	}
	for _, s := range command {
		for _, m := range shellRef.FindAllStringSubmatch(s, -1) {
			if names[m[1]] {
				return true
			}
		}
		if refersTo(s, names) { // $(NAME), read apart: "$(cmd "$X")" holds $X too
			return true
		}
	}
	return false
}
