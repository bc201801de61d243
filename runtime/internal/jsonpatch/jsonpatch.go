// Package jsonpatch is the tests' RFC 6902 applier: what the API server does with the
// webhook's answer, so tests and the benchmark can look at the pod a patch makes. Only tests
// import it; the runtime binary does not contain it.
package jsonpatch

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Apply applies an RFC 6902 patch (add, remove, replace, test) to doc, strict as the API
// server's applier: a missing parent, an index out of range or a "-" outside add fail.
func Apply(doc []byte, patch []byte) ([]byte, error) {
	var root any
	if err := json.Unmarshal(doc, &root); err != nil {
		return nil, err
	}
	var ops []struct {
		Op    string           `json:"op"`
		Path  string           `json:"path"`
		Value *json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	for i, op := range ops {
		var val any
		if op.Value != nil {
			if err := json.Unmarshal(*op.Value, &val); err != nil {
				return nil, err
			}
		} else if op.Op == "add" || op.Op == "replace" || op.Op == "test" {
			return nil, fmt.Errorf("op %d: %s without value", i, op.Op)
		}
		var err error
		root, err = applyOp(root, op.Op, op.Path, val)
		if err != nil {
			return nil, fmt.Errorf("op %d (%s %s): %w", i, op.Op, op.Path, err)
		}
	}
	return json.Marshal(root)
}

func splitPointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("pointer %q does not start with /", p)
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

func applyOp(root any, op, path string, val any) (any, error) {
	parts, err := splitPointer(path)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		if op == "add" || op == "replace" {
			return val, nil
		}
		return nil, fmt.Errorf("%s on the root", op)
	}
	parent, last, err := parentOf(root, parts)
	if err != nil {
		return nil, err
	}
	switch p := parent.(type) {
	case map[string]any:
		_, exists := p[last]
		switch op {
		case "add":
			p[last] = val
		case "replace":
			if !exists {
				return nil, fmt.Errorf("replace: no member %q", last)
			}
			p[last] = val
		case "remove":
			if !exists {
				return nil, fmt.Errorf("remove: no member %q", last)
			}
			delete(p, last)
		case "test":
			if !exists || !jsonEqual(p[last], val) {
				return nil, fmt.Errorf("test failed")
			}
		default:
			return nil, fmt.Errorf("unsupported op %q", op)
		}
		return root, nil
	case []any:
		idx := len(p)
		if last != "-" {
			n, err := strconv.Atoi(last)
			if err != nil || n < 0 || (last != "0" && strings.HasPrefix(last, "0")) {
				return nil, fmt.Errorf("bad index %q", last)
			}
			idx = n
		} else if op != "add" {
			return nil, fmt.Errorf("%s with -", op)
		}
		var np []any
		switch op {
		case "add":
			if idx > len(p) {
				return nil, fmt.Errorf("index %d out of range", idx)
			}
			np = append(append(append([]any{}, p[:idx]...), val), p[idx:]...)
		case "replace", "remove", "test":
			if idx >= len(p) {
				return nil, fmt.Errorf("index %d out of range", idx)
			}
			switch op {
			case "replace":
				np = append([]any{}, p...)
				np[idx] = val
			case "remove":
				np = append(append([]any{}, p[:idx]...), p[idx+1:]...)
			case "test":
				if !jsonEqual(p[idx], val) {
					return nil, fmt.Errorf("test failed")
				}
				return root, nil
			}
		default:
			return nil, fmt.Errorf("unsupported op %q", op)
		}
		return setAt(root, parts[:len(parts)-1], np)
	}
	return nil, fmt.Errorf("parent of %q is not a container", path)
}

func walk(root any, parts []string) (any, error) {
	cur := root
	for _, s := range parts {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[s]
			if !ok {
				return nil, fmt.Errorf("no member %q", s)
			}
			cur = v
		case []any:
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n >= len(c) {
				return nil, fmt.Errorf("bad index %q", s)
			}
			cur = c[n]
		default:
			return nil, fmt.Errorf("cannot descend into %q", s)
		}
	}
	return cur, nil
}

// parentOf is the container holding the last token of parts (non-empty), and that token.
func parentOf(root any, parts []string) (any, string, error) {
	parent, err := walk(root, parts[:len(parts)-1])
	return parent, parts[len(parts)-1], err
}

// setAt replaces the value at parts (arrays are values in Go, so the new slice is stored
// in its parent).
func setAt(root any, parts []string, v any) (any, error) {
	if len(parts) == 0 {
		return v, nil
	}
	parent, last, err := parentOf(root, parts)
	if err != nil {
		return nil, err
	}
	switch p := parent.(type) {
	case map[string]any:
		p[last] = v
	case []any:
		n, _ := strconv.Atoi(last)
		p[n] = v
	}
	return root, nil
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
