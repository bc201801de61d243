package contract

import "strings"

// Secret is one KV v2 path and the fields read from it, in annotation order.
type Secret struct {
	Path   string
	Fields []FieldEnv
}

// FieldEnv maps one vault field to one environment variable.
type FieldEnv struct {
	Field string
	Env   string
}

// ParseSecretPaths parses the cloudtaser.io/secret-paths value: paths joined by ",", blanks
// around them tolerated; empty means none.
func ParseSecretPaths(name, value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var out []string
	for _, part := range strings.Split(value, ",") {
		p := strings.TrimSpace(part)
		if !ValidVaultPath(p) {
			return nil, errorf(CodeUnsafePath, "%s: %s is not a safe KV v2 path (<mount>/data/<path>)", name, quote(p, 120))
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseEnvMap parses the cloudtaser.io/env-map value: `field=ENV` pairs joined by ",", one
// group per secret path, groups joined by ";". An empty pair, a pair without "=", an invalid
// name, a field given twice in a group or an environment variable fed twice are errors.
func ParseEnvMap(name, value string) ([][]FieldEnv, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var groups [][]FieldEnv
	seenEnv := map[string]bool{}
	for gi, rawGroup := range strings.Split(value, ";") {
		var group []FieldEnv
		seenField := map[string]bool{}
		for _, rawPair := range strings.Split(rawGroup, ",") {
			pair := strings.TrimSpace(rawPair)
			field, env, ok := strings.Cut(pair, "=")
			if !ok {
				return nil, errorf(CodeBadPair, "%s group %d: %s is not a field=ENV_VAR pair", name, gi+1, quote(pair, 80))
			}
			field, env = strings.TrimSpace(field), strings.TrimSpace(env)
			if !ValidField(field) {
				return nil, errorf(CodeBadField, "%s group %d: %s is not a valid vault field name", name, gi+1, quote(field, 80))
			}
			if !ValidEnvName(env) {
				return nil, errorf(CodeBadEnvName, "%s group %d: %s is not a valid environment variable name", name, gi+1, quote(env, 80))
			}
			if seenField[field] {
				return nil, errorf(CodeDuplicateField, "%s group %d: field %s given twice", name, gi+1, quote(field, 80))
			}
			if seenEnv[env] {
				return nil, errorf(CodeDuplicateEnv, "%s: environment variable %s is fed twice", name, quote(env, 80))
			}
			seenField[field], seenEnv[env] = true, true
			group = append(group, FieldEnv{Field: field, Env: env})
		}
		groups = append(groups, group)
	}
	return groups, nil
}

// ParseMapping pairs secret-paths and env-map group by group.
func ParseMapping(pathsName, paths, mapName, envMap string) ([]Secret, error) {
	ps, err := ParseSecretPaths(pathsName, paths)
	if err != nil {
		return nil, err
	}
	gs, err := ParseEnvMap(mapName, envMap)
	if err != nil {
		return nil, err
	}
	if len(ps) != len(gs) {
		return nil, errorf(CodeMappingMismatch, "%s names %d path(s) but %s has %d group(s); they must match one to one", pathsName, len(ps), mapName, len(gs))
	}
	out := make([]Secret, len(ps))
	for i := range ps {
		out[i] = Secret{Path: ps[i], Fields: gs[i]}
	}
	return out, nil
}
