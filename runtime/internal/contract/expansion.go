package contract

import "strings"

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
