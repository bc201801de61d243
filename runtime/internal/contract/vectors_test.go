package contract

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The JSON vectors in spec/contract/ are shared with the Python tests.

type vectorFile struct {
	FormatVersion int      `json:"formatVersion"`
	Description   string   `json:"description"`
	Cases         []vector `json:"cases"`
}

type vector struct {
	Name   string          `json:"name"`
	Input  json.RawMessage `json:"input"`
	Expect json.RawMessage `json:"expect"`
	Error  string          `json:"error"`
}

func specDir(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "..", "spec", "contract")
}

func loadVectors(t *testing.T, name string) []vector {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(specDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if f.FormatVersion != 1 || len(f.Cases) == 0 {
		t.Fatalf("%s: formatVersion %d, %d cases", name, f.FormatVersion, len(f.Cases))
	}
	for _, c := range f.Cases {
		if (c.Error == "") == (len(c.Expect) == 0) {
			t.Fatalf("%s/%s: exactly one of expect and error", name, c.Name)
		}
	}
	return f.Cases
}

// checkOutcome compares a result (as generic JSON) or an error code with the vector.
func checkOutcome(t *testing.T, c vector, got any, err error, partial bool) {
	t.Helper()
	if c.Error != "" {
		cerr, ok := err.(*Error)
		if !ok {
			t.Fatalf("want error %q, got %v (result %#v)", c.Error, err, got)
		}
		if cerr.Code != c.Error {
			t.Fatalf("want error %q, got %q (%s)", c.Error, cerr.Code, cerr.Msg)
		}
		if cerr.Msg == "" {
			t.Fatal("error without a message")
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	var want, have map[string]any
	if err := json.Unmarshal(c.Expect, &want); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(got)
	if err := json.Unmarshal(raw, &have); err != nil {
		t.Fatal(err)
	}
	if partial {
		for k, v := range want {
			if !reflect.DeepEqual(have[k], v) {
				t.Errorf("%s: want %v, got %v", k, v, have[k])
			}
		}
		return
	}
	if !reflect.DeepEqual(have, want) {
		t.Fatalf("want %v\n got %v", want, have)
	}
}

func mappingJSON(ss []Secret) []map[string]any {
	out := []map[string]any{}
	for _, s := range ss {
		f := map[string]string{}
		for _, fe := range s.Fields {
			f[fe.Field] = fe.Env
		}
		out = append(out, map[string]any{"path": s.Path, "fields": f})
	}
	return out
}

func TestAnnotationVectors(t *testing.T) {
	for _, c := range loadVectors(t, "annotations.json") {
		t.Run(c.Name, func(t *testing.T) {
			var in struct {
				Annotations map[string]string `json:"annotations"`
				Defaults    *Defaults         `json:"defaults"`
			}
			if err := json.Unmarshal(c.Input, &in); err != nil {
				t.Fatal(err)
			}
			var a Annotations
			var err error
			if in.Defaults == nil {
				a, err = ParseAnnotations(in.Annotations)
			} else {
				d, derr := ValidateDefaults(*in.Defaults, func(f string) string { return "--default-" + f })
				if derr != nil {
					t.Fatalf("the case's defaults are invalid: %v", derr)
				}
				a, err = ParseAnnotationsWith(in.Annotations, d)
			}
			var got any = map[string]any{"inject": false}
			if a.Inject {
				m := map[string]any{"inject": true, "address": a.Address, "role": a.Role, "authMount": a.AuthMount, "mapping": mappingJSON(a.Secrets)}
				// present only when not the built-in default (the vectors' shape)
				if a.AuthMethod != AuthKubernetes {
					m["authMethod"] = a.AuthMethod
				}
				if a.Namespace != "" {
					m["namespace"] = a.Namespace
				}
				got = m
			}
			checkOutcome(t, c, got, err, false)
		})
	}
}

func TestWrapperEnvVectors(t *testing.T) {
	for _, c := range loadVectors(t, "wrapper-env.json") {
		t.Run(c.Name, func(t *testing.T) {
			var in struct {
				Env   map[string]string `json:"env"`
				Files []string          `json:"files"`
			}
			if err := json.Unmarshal(c.Input, &in); err != nil {
				t.Fatal(err)
			}
			exists := func(p string) bool {
				for _, f := range in.Files {
					if f == p {
						return true
					}
				}
				return false
			}
			cfg, err := ResolveEnv(in.Env, exists)
			for _, name := range []string{EnvToken, "VAULT_TOKEN", "BAO_TOKEN"} {
				tok := in.Env[name]
				if tok != "" && (err != nil && strings.Contains(err.Error(), tok) ||
					strings.Contains(cfg.String(), tok) || strings.Contains(fmt.Sprintf("%v %#v", cfg, cfg), tok)) {
					t.Fatalf("the token of %s is shown", name)
				}
			}
			got := map[string]any{
				"address": cfg.Address, "authMethod": cfg.AuthMethod, "authMount": cfg.AuthMount, "role": cfg.Role,
				"tokenSet": cfg.Token != "", "namespace": cfg.Namespace, "caCert": cfg.CACert, "skipVerify": cfg.SkipVerify,
				"saTokenPath": cfg.SATokenPath, "mapping": mappingJSON(cfg.Secrets), "mode": cfg.Mode,
				"startTimeoutMs": cfg.StartTimeout.Milliseconds(), "requestTimeoutMs": cfg.RequestTimeout.Milliseconds(),
				"rotationIntervalMs": cfg.RotationInterval.Milliseconds(), "gracePeriodMs": cfg.GracePeriod.Milliseconds(), "debug": cfg.Debug,
			}
			checkOutcome(t, c, got, err, true)
		})
	}
}

func TestChildEnvVectors(t *testing.T) {
	for _, c := range loadVectors(t, "child-env.json") {
		t.Run(c.Name, func(t *testing.T) {
			var in struct {
				Env     map[string]string `json:"env"`
				Secrets []struct{ Name, Value string }
			}
			if err := json.Unmarshal(c.Input, &in); err != nil {
				t.Fatal(err)
			}
			parent := []string{}
			for k, v := range in.Env {
				parent = append(parent, k+"="+v)
			}
			var secrets []EnvVar
			var err error
			for _, s := range in.Secrets {
				if e := CheckValue("field of secret/data/x", s.Value); e != nil && err == nil {
					err = e
				}
				secrets = append(secrets, EnvVar{s.Name, s.Value})
			}
			var got any
			if err == nil {
				got = map[string]any{"env": EnvMap(ChildEnv(parent, secrets))}
			}
			checkOutcome(t, c, got, err, false)
		})
	}
}

func TestValueVectors(t *testing.T) {
	for _, c := range loadVectors(t, "values.json") {
		t.Run(c.Name, func(t *testing.T) {
			var in struct{ Kind, Name, Value string }
			if err := json.Unmarshal(c.Input, &in); err != nil {
				t.Fatal(err)
			}
			var got any
			var err error
			switch in.Kind {
			case "bool":
				var b bool
				b, err = ParseBool(in.Name, in.Value)
				got = map[string]any{"value": b}
			case "duration":
				var d time.Duration
				d, err = ParseDuration(in.Name, in.Value, -1)
				var ms any = d.Milliseconds()
				if d == -1 {
					ms = nil
				}
				got = map[string]any{"ms": ms}
			default:
				t.Fatalf("unknown kind %q", in.Kind)
			}
			checkOutcome(t, c, got, err, false)
		})
	}
}
