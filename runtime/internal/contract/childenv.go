package contract

import "strings"

// EnvVar is one variable of the child environment.
type EnvVar struct {
	Name  string
	Value string
}

// Stripped reports whether an inherited variable is removed from the child environment:
// every CLOUDTASER_* variable and the vault tokens.
func Stripped(name string) bool {
	return strings.HasPrefix(name, StrippedPrefix) || StrippedNames[name]
}

// CheckValue refuses what cannot be an environment value (a NUL byte); the message names
// where the value came from, never the value.
func CheckValue(where, value string) error {
	if strings.IndexByte(value, 0) >= 0 {
		return errorf(CodeNulInValue, "%s contains a NUL byte and cannot be an environment value", where)
	}
	return nil
}

// ChildEnv builds the command's environment: the inherited entries (KEY=VALUE, in order)
// without stripped variables, with the secrets replacing inherited variables of the same
// name in place and the others appended in order. Pure; the inputs are not modified.
func ChildEnv(parent []string, secrets []EnvVar) []string {
	index := make(map[string]int, len(secrets))
	for i, s := range secrets {
		index[s.Name] = i
	}
	used := make([]bool, len(secrets))
	out := make([]string, 0, len(parent)+len(secrets))
	for _, kv := range parent {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || Stripped(name) {
			continue
		}
		if i, ok := index[name]; ok {
			if !used[i] {
				out = append(out, name+"="+secrets[i].Value)
				used[i] = true
			}
			continue
		}
		out = append(out, kv)
	}
	for i, s := range secrets {
		if !used[i] {
			out = append(out, s.Name+"="+s.Value)
		}
	}
	return out
}
