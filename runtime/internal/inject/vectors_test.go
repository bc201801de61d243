package inject

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/jsonpatch"
	"cloudtaser/runtime/internal/webhook"
)

// spec/contract/injection.json: input pod + configuration -> the pod after the webhook's
// patch, "unchanged", or the denial reason. The Python side loads the same file.
// CLOUDTASER_UPDATE_VECTORS=1 rewrites the expected pods from the current code (review the
// diff before committing it).

type injectionFile struct {
	FormatVersion int                  `json:"formatVersion"`
	Description   string               `json:"description"`
	Config        vectorConfig         `json:"config"`
	Images        map[string]imageJSON `json:"images"`
	Cases         []injectionCase      `json:"cases"`
}

type vectorConfig struct {
	RuntimeImage     string   `json:"runtimeImage,omitempty"`
	AllowedAddresses []string `json:"allowedAddresses,omitempty"`
	Audience         string   `json:"audience,omitempty"`
	EmptyDirSize     string   `json:"emptyDirSize,omitempty"`
	Version          string   `json:"version,omitempty"`
	Registry         *bool    `json:"registry,omitempty"`
	// Defaults and JWTTokenExpiration: the cluster defaults of defaults.go.
	Defaults           *contract.Defaults `json:"defaults,omitempty"`
	JWTTokenExpiration int64              `json:"jwtTokenExpiration,omitempty"`
}

type imageJSON struct {
	Entrypoint []string                   `json:"entrypoint,omitempty"`
	Cmd        []string                   `json:"cmd,omitempty"`
	Index      map[string]imageJSONSingle `json:"index,omitempty"`
}

type imageJSONSingle struct {
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
}

type injectionCase struct {
	Name  string `json:"name"`
	Input struct {
		Pod       json.RawMessage `json:"pod"`
		Operation string          `json:"operation,omitempty"`
		Config    *vectorConfig   `json:"config,omitempty"`
	} `json:"input"`
	Expect *struct {
		Pod       any  `json:"pod,omitempty"`
		Unchanged bool `json:"unchanged,omitempty"`
	} `json:"expect,omitempty"`
	Error string `json:"error,omitempty"`
}

func injectionPath() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "..", "spec", "contract", "injection.json")
}

func TestInjectionVectors(t *testing.T) {
	raw, err := os.ReadFile(injectionPath())
	if err != nil {
		t.Fatal(err)
	}
	var f injectionFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if f.FormatVersion != 1 || len(f.Cases) < 20 {
		t.Fatalf("formatVersion %d, %d cases", f.FormatVersion, len(f.Cases))
	}
	update := os.Getenv("CLOUDTASER_UPDATE_VECTORS") == "1"
	images := map[string]imageSpec{}
	for ref, im := range f.Images {
		s := imageSpec{Entrypoint: im.Entrypoint, Cmd: im.Cmd}
		if im.Index != nil {
			amd, arm := im.Index["linux/amd64"], im.Index["linux/arm64"]
			if len(im.Index) != 2 || arm.Entrypoint == nil || !reflect.DeepEqual(amd.Cmd, arm.Cmd) {
				t.Fatalf("image %s: the test registry builds linux/amd64 + linux/arm64 indexes with one cmd", ref)
			}
			s = imageSpec{Entrypoint: amd.Entrypoint, Cmd: amd.Cmd, Arm64: arm.Entrypoint}
		}
		images[ref] = s
	}
	resolver := startRegistry(t, images)
	kinds := map[string]int{}
	for i := range f.Cases {
		c := &f.Cases[i]
		if (c.Error == "") == (c.Expect == nil) || (c.Expect != nil && (c.Expect.Pod == nil) == !c.Expect.Unchanged && !update) {
			t.Fatalf("%s: exactly one of expect.pod, expect.unchanged, error", c.Name)
		}
		t.Run(c.Name, func(t *testing.T) {
			vc := f.Config
			useRegistry := true
			if o := c.Input.Config; o != nil {
				if o.EmptyDirSize != "" {
					vc.EmptyDirSize = o.EmptyDirSize
				}
				if o.AllowedAddresses != nil {
					vc.AllowedAddresses = o.AllowedAddresses
				}
				if o.Audience != "" {
					vc.Audience = o.Audience
				}
				if o.Registry != nil {
					useRegistry = *o.Registry
				}
				vc.Defaults, vc.JWTTokenExpiration = o.Defaults, o.JWTTokenExpiration
			}
			cfg := &Config{RuntimeImage: vc.RuntimeImage, AllowedAddresses: vc.AllowedAddresses, Audience: vc.Audience, EmptyDirSize: vc.EmptyDirSize, Version: vc.Version,
				JWTTokenExpiration: vc.JWTTokenExpiration}
			if vc.Defaults != nil {
				cfg.Defaults = *vc.Defaults
			}
			if useRegistry {
				cfg.Resolver = resolver
			}
			req := &webhook.Request{UID: "vector", Kind: webhook.GroupVersionKind{Version: "v1", Kind: "Pod"}, Namespace: "app", Operation: webhook.OperationCreate, Object: c.Input.Pod}
			if c.Input.Operation != "" {
				req.Operation = c.Input.Operation
			}
			resp := Mutate(context.Background(), cfg, req)
			switch {
			case c.Error != "":
				kinds["error"]++
				if resp.Allowed || resp.Reason != c.Error || resp.Code != 403 || !strings.HasPrefix(resp.Message, "cloudtaser: ") {
					t.Fatalf("want denial %s, got allowed=%v %+v", c.Error, resp.Allowed, resp)
				}
			case c.Expect.Unchanged:
				kinds["unchanged"]++
				if !resp.Allowed || resp.Patch != nil {
					t.Fatalf("want unchanged, got %+v", resp)
				}
			default:
				kinds["pod"]++
				if !resp.Allowed || resp.Patch == nil {
					t.Fatalf("want a patch, got %+v", resp)
				}
				out, err := jsonpatch.Apply(c.Input.Pod, resp.Patch)
				if err != nil {
					t.Fatal(err)
				}
				var got any
				_ = json.Unmarshal(out, &got)
				if update {
					c.Expect.Pod = got
					return
				}
				if !reflect.DeepEqual(got, c.Expect.Pod) {
					w, _ := json.MarshalIndent(c.Expect.Pod, "", " ")
					g, _ := json.MarshalIndent(got, "", " ")
					t.Fatalf("pod differs\nwant %s\n got %s", w, g)
				}
				// And the vector's own expected pod is a fixed point.
				again := Mutate(context.Background(), cfg, &webhook.Request{UID: "v2", Kind: req.Kind, Namespace: "app", Operation: webhook.OperationCreate, Object: out})
				if !again.Allowed || again.Patch != nil {
					t.Fatalf("expected pod is mutated again: %+v", again)
				}
			}
		})
	}
	if !update && (kinds["error"] == 0 || kinds["unchanged"] == 0 || kinds["pod"] == 0) {
		t.Fatalf("vector kinds %v: every kind must be covered", kinds)
	}
	if update {
		out, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(injectionPath(), append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("vectors rewritten")
	}
}
