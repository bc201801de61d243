package wrap

import (
	"os"
	"slices"
	"testing"

	"cloudtaser/runtime/internal/contract"
)

// The wrapper's own process loses the variables the standard library would read for it; the
// app's environment, copied before, keeps every one of them.
func TestIsolateProcessEnvKeepsTheAppsCopy(t *testing.T) {
	for _, n := range ProcessEnvIgnored {
		t.Setenv(n, "http://127.0.0.1:1")
	}
	environ := os.Environ()
	IsolateProcessEnv()
	for _, n := range ProcessEnvIgnored {
		if v, ok := os.LookupEnv(n); ok {
			t.Errorf("%s=%s is still in the wrapper's environment", n, v)
		}
	}
	child := contract.ChildEnv(environ, nil)
	for _, n := range ProcessEnvIgnored {
		if !slices.Contains(child, n+"=http://127.0.0.1:1") {
			t.Errorf("%s is missing from the app's environment", n)
		}
	}
}
