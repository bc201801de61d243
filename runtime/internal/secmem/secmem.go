// Package secmem keeps secret values in memory that is locked (never swapped) and excluded
// from core dumps: memfd_secret(2) where the kernel offers it (Linux >= 5.14, on by default
// since 6.5; the pages are not even mapped in the kernel's direct map), else an anonymous
// mmap with mlock(2), MADV_DONTDUMP and MADV_WIPEONFORK. Both count against RLIMIT_MEMLOCK
// (8 MiB by default since Linux 5.16), which secrets of a pod never come near.
//
// What it cannot do: values are decoded from the vault's JSON on the Go heap before they are
// copied here (the decode buffers are cleared, the decoded strings are garbage the GC frees but
// does not zero), and syscall.ForkExec copies the child's environment on the heap when it
// starts the app. The child's own environment is, by definition, readable as
// /proc/<pid>/environ by processes of the same UID.
package secmem

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ForceMlock skips memfd_secret (tests cover the fallback with it).
var ForceMlock bool

// Region is one locked, non-dumpable mapping.
type Region struct {
	mem  []byte
	used int
	kind string
}

// Kinds of region.
const (
	KindSecret = "memfd_secret"
	KindMlock  = "mlock"
)

// New maps a region of at least size bytes (rounded up to whole pages).
func New(size int) (*Region, error) {
	page := os.Getpagesize()
	if size <= 0 {
		size = 1
	}
	size = (size + page - 1) / page * page
	if !ForceMlock {
		if r, err := newSecret(size); err == nil {
			return r, nil
		}
	}
	return newLocked(size)
}

func newSecret(size int) (*Region, error) {
	fd, err := unix.MemfdSecret(unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	// Touch every page now: a secretmem fault past RLIMIT_MEMLOCK is SIGBUS, better here
	// than later; mlock reports that limit as an error instead.
	if err := unix.Mlock(mem); err != nil {
		_ = unix.Munmap(mem)
		return nil, err
	}
	return &Region{mem: mem, kind: KindSecret}, nil
}

func newLocked(size int) (*Region, error) {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("cannot map memory for the secrets: %w", err)
	}
	if err := unix.Mlock(mem); err != nil {
		_ = unix.Munmap(mem)
		if errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EAGAIN) {
			return nil, fmt.Errorf("cannot lock %d KiB for the secrets (RLIMIT_MEMLOCK too low?): %w", size>>10, err)
		}
		return nil, fmt.Errorf("cannot lock memory for the secrets: %w", err)
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("cannot exclude the secrets from core dumps: %w", err)
	}
	_ = unix.Madvise(mem, unix.MADV_WIPEONFORK) // Linux >= 4.14; best effort
	return &Region{mem: mem, kind: KindMlock}, nil
}

// Kind tells which mechanism backs the region.
func (r *Region) Kind() string { return r.kind }

// Size is the mapped size.
func (r *Region) Size() int { return len(r.mem) }

// Append copies b into the region and returns a string that points into the region (no heap
// copy). The string is valid until Close.
func (r *Region) Append(parts ...string) (string, error) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if r.mem == nil || r.used+n > len(r.mem) {
		return "", errors.New("secret region full")
	}
	start := r.used
	for _, p := range parts {
		r.used += copy(r.mem[r.used:], p)
	}
	if n == 0 {
		return "", nil
	}
	return unsafe.String(&r.mem[start], n), nil
}

// Close wipes and unmaps the region. Strings returned by Append must not be used afterwards.
func (r *Region) Close() {
	if r.mem == nil {
		return
	}
	clear(r.mem)
	_ = unix.Munlock(r.mem)
	_ = unix.Munmap(r.mem)
	r.mem = nil
}

// SetNotDumpable sets PR_SET_DUMPABLE 0: /proc/<pid>/* becomes root-owned, same-UID ptrace
// and environ reads of this process are denied, and no core dump is written. It resets on
// execve, so it protects a resident wrapper, not the app.
func SetNotDumpable() error { return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) }
