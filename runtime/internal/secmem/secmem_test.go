package secmem

import (
	"os"
	"strings"
	"testing"
)

func checkRegion(t *testing.T, r *Region) {
	t.Helper()
	s, err := r.Append("CANARY-", "locked")
	if err != nil || s != "CANARY-locked" {
		t.Fatalf("%q %v", s, err)
	}
	if _, err := r.Append(strings.Repeat("x", r.Size())); err == nil {
		t.Fatal("overflow accepted")
	}
	smaps, _ := os.ReadFile("/proc/self/smaps")
	if r.Kind() == KindMlock && !strings.Contains(string(smaps), " dd") {
		t.Fatal("no VM_DONTDUMP mapping in smaps")
	}
	r.Close()
	r.Close() // idempotent
}

func TestMemfdSecretOrFallback(t *testing.T) {
	r, err := New(100)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kind %s", r.Kind())
	if r.Size() != os.Getpagesize() {
		t.Fatalf("size %d", r.Size())
	}
	checkRegion(t, r)
}

func TestMlockFallback(t *testing.T) {
	ForceMlock = true
	defer func() { ForceMlock = false }()
	r, err := New(10)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind() != KindMlock {
		t.Fatal(r.Kind())
	}
	checkRegion(t, r)
}
