// Package install is `cloudtaser-runtime install DIR`: what the injected init container runs.
// It copies the running binary into DIR (an emptyDir shared with the app container) with mode
// 0555, atomically (temporary file, fsync, rename), so no shell or cp is needed in any image.
package install

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Name is the file name of the installed binary.
const Name = "cloudtaser-runtime"

// Install copies the executable at self (normally /proc/self/exe) to dir/Name.
func Install(self, dir string) (string, error) {
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return "", fmt.Errorf("install: %s is not a directory", dir)
	}
	src, err := os.Open(self)
	if err != nil {
		return "", fmt.Errorf("install: cannot read the running binary: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, "."+Name+".*")
	if err != nil {
		return "", fmt.Errorf("install: cannot write into %s: %w", dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, src); err != nil {
		return "", fmt.Errorf("install: copy failed: %w", err)
	}
	if err := tmp.Chmod(0o555); err != nil {
		return "", fmt.Errorf("install: chmod failed: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("install: fsync failed: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	dst := filepath.Join(dir, Name)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return dst, nil
}
