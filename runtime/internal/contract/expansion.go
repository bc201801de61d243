package contract

import (
	"encoding/json"
	"strings"
)

// Kubernetes' $(VAR) expansion, as the kubelet applies it to a container's command, args and
// env values (k8s.io/kubernetes third_party/forked/golang/expansion, expand.go; its test table
// expand_test.go). Written here from those rules, not copied; the vectors in
// spec/contract/var-expansion.json pin them for Go and Python:
//
//   - "$$" is one literal "$" (the escape);
//   - "$(NAME)" is a reference: NAME is everything up to the first ")"; a defined NAME becomes
//     its value, which is never expanded again; an undefined one (also "$()", and a NAME that
//     itself holds "$(") stays literally as it was written;
//   - "$(" with no ")" after it stays literally, and scanning goes on after the "(";
//   - "$" before any other byte, and a "$" at the end, stay as they are (no shell syntax:
//     "$VAR", "${VAR}" and backslashes mean nothing).
//
// Env values are expanded in definition order (ExpandEnv): a reference sees the variables
// defined before the pod's env list (envFrom, service links) and the env entries before it,
// already expanded; never a later entry.

// Expand expands the $(NAME) references of s whose NAME lookup knows.
func Expand(s string, lookup func(name string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(s[i+1])
			i++
		}
	}
	return b.String()
}

// References are the NAMEs that Expand would look up in s, in order (repeats kept).
func References(s string) []string {
	var out []string
	Expand(s, func(name string) (string, bool) {
		out = append(out, name)
		return "", false
	})
	return out
}

// EscapeExpansion makes s pass through Expand unchanged: every "$" doubled.
func EscapeExpansion(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// ExpandEnv expands env values in the kubelet's definition order: context holds what is
// defined before the list (it is not modified); each entry is expanded with context and the
// entries before it, and then defines its name for the entries after it. It returns the
// expanded values, in order.
func ExpandEnv(context map[string]string, env []EnvVar) []EnvVar {
	defined := make(map[string]string, len(env))
	out := make([]EnvVar, len(env))
	lookup := func(name string) (string, bool) {
		if v, ok := defined[name]; ok {
			return v, true
		}
		v, ok := context[name]
		return v, ok
	}
	for i, e := range env {
		v := Expand(e.Value, lookup)
		out[i] = EnvVar{Name: e.Name, Value: v}
		defined[e.Name] = v
	}
	return out
}

// ExpandPlan is what the wrapper expands itself (`wrap --expand=JSON`, written by the
// injector): Args, positions in COMMAND ARGS... (after "--") whose text the injector escaped;
// Env, the env entries whose values it escaped, in definition order. Later names, per entry,
// the variables it refers to that the pod's env list defines only at or after that entry:
// the kubelet keeps those references literally.
type ExpandPlan struct {
	Args []int         `json:"args,omitempty"`
	Env  []ExpandEntry `json:"env,omitempty"`
}

// ExpandEntry is one deferred env entry of an ExpandPlan.
type ExpandEntry struct {
	Name  string   `json:"name"`
	Later []string `json:"later,omitempty"`
}

// MaxExpandPlan bounds the --expand value (the kubelet's limit for one argument is far above).
const MaxExpandPlan = 64 << 10

// ParseExpandPlan reads the value of `wrap --expand=`.
func ParseExpandPlan(s string) (ExpandPlan, error) {
	var p ExpandPlan
	if len(s) > MaxExpandPlan {
		return p, errorf(CodeBadExpandPlan, "--expand is longer than %d bytes", MaxExpandPlan)
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || dec.More() {
		return ExpandPlan{}, errorf(CodeBadExpandPlan, "--expand is not a valid expansion plan (JSON with args and env)")
	}
	for _, i := range p.Args {
		if i < 0 {
			return ExpandPlan{}, errorf(CodeBadExpandPlan, "--expand names a negative argument position")
		}
	}
	for _, e := range p.Env {
		if e.Name == "" || strings.ContainsAny(e.Name, "=\x00") {
			return ExpandPlan{}, errorf(CodeBadExpandPlan, "--expand names an env entry without a valid name")
		}
	}
	return p, nil
}

// Apply expands what the plan names, as the kubelet would have with the vault's values:
// environ is the process environment (the deferred entries hold their text unexpanded, as the
// kubelet passed the escaped text on), secrets the vault's values. The vault's values count as
// defined before the pod's env list (like envFrom). It returns argv with the named positions
// expanded (a new slice) and the expanded env entries, in plan order, to be put into the
// child's environment like secrets (they may hold secret values). A position past argv is an
// error (the plan does not belong to this command line).
func (p ExpandPlan) Apply(argv, environ []string, secrets []EnvVar) ([]string, []EnvVar, error) {
	final := EnvMap(ChildEnv(environ, secrets))
	vault := make(map[string]string, len(secrets))
	for _, s := range secrets {
		vault[s.Name] = s.Value
	}
	defined := map[string]string{}
	var out []EnvVar
	for _, e := range p.Env {
		raw, ok := final[e.Name]
		if !ok {
			continue // not in this environment: nothing to expand
		}
		later := map[string]bool{}
		for _, n := range e.Later {
			later[n] = true
		}
		v := Expand(raw, func(name string) (string, bool) {
			if v, ok := defined[name]; ok {
				return v, true
			}
			if later[name] {
				return "", false
			}
			if v, ok := vault[name]; ok {
				return v, true
			}
			v, ok := final[name]
			return v, ok
		})
		defined[e.Name], final[e.Name] = v, v
		out = append(out, EnvVar{Name: e.Name, Value: v})
	}
	args := append([]string{}, argv...)
	for _, i := range p.Args {
		if i >= len(args) {
			return nil, nil, errorf(CodeBadExpandPlan, "--expand names argument %d of a command of %d", i, len(args))
		}
		args[i] = Expand(args[i], func(name string) (string, bool) { v, ok := final[name]; return v, ok })
	}
	return args, out, nil
}

// CodeBadExpandPlan: a `wrap --expand=` value that is not a plan (only the injector writes it).
const CodeBadExpandPlan = "bad-expand-plan"
