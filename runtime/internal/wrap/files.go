package wrap

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/secmem"
	"cloudtaser/runtime/internal/vault"
)

// Secret files (cloudtaser.io/secret-files; docs/injector.md, "Secret files in the pod").
//
// `cloudtaser-runtime files` (the init container cloudtaser-files) logs in, reads every file
// of CLOUDTASER_SECRET_FILES, and writes each volume at contract.FilesDir/<volume> with the
// kubelet's atomic layout:
//
//	<root>/..2026_12_06_18_30_00.123456789/   the files, in their directories, with their modes
//	<root>/..data -> ..2026_12_06_18_30_00.123456789   swapped by rename(2)
//	<root>/tls.crt -> ..data/tls.crt          one symlink per top-level name
//
// then reports volume names and file counts (never content) in its termination message. Any
// missing non-optional file fails it (exit 4): the pod never starts. The volume must be a
// memory filesystem (tmpfs): a value is never written anywhere else.
//
// With fsGroup, the kubelet makes the volume's root setgid, group fsGroup: then every file
// and directory gets that group, files are group-readable (mode|0440) and directories setgid,
// as the kubelet does for a Secret volume. A resident wrapper with rotation re-renders the
// volumes its CLOUDTASER_SECRET_FILES lists the same way when a path's KV version changes: a
// new ..<timestamp> directory, the ..data swap, the old directory removed; the app is not
// restarted. Each ..<timestamp> directory holds VersionsFile, the KV versions it was rendered
// from (paths and numbers, no value), so the rotating wrapper knows what the init container
// wrote.

// Names in a rendered volume.
const (
	DataLink     = "..data"
	dataTmpLink  = "..data_tmp"
	VersionsFile = "..versions"
	tsLayout     = "..2006_01_02_15_04_05."
)

// RenderReport is the termination message of cloudtaser-files: names and counts, never a value.
type RenderReport struct {
	FormatVersion int            `json:"formatVersion"`
	Files         int            `json:"files"`
	Volumes       []VolumeReport `json:"volumes,omitempty"`
	Error         string         `json:"error,omitempty"`
}

// VolumeReport is one volume of a RenderReport: files written, optional files left out.
type VolumeReport struct {
	Volume  string `json:"volume"`
	Files   int    `json:"files"`
	Skipped int    `json:"skipped,omitempty"`
}

// maxReport is the kubelet's limit for a termination message.
const maxReport = 4096

// fileData is one file to write (rel: its path in the volume).
type fileData struct {
	rel  string
	data []byte
	mode os.FileMode
}

// volumeData is what one volume is rendered from.
type volumeData struct {
	files    []fileData
	versions map[string]int64 // KV version of each path, 0 for a missing (optional) one
	skipped  int
}

func (v *volumeData) wipe() {
	for _, f := range v.files {
		clear(f.data)
	}
}

// memoryFS refuses a directory that is not on a memory filesystem (tests replace it).
var memoryFS = func(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("cannot stat %s: %w", dir, err)
	}
	if st.Type != unix.TMPFS_MAGIC && st.Type != unix.RAMFS_MAGIC {
		return fmt.Errorf("%s is not a memory filesystem (an emptyDir with medium Memory): secret files are never written to a disk", dir)
	}
	return nil
}

// readFiles reads every file of vol (each path once, from cache across volumes) and fails
// closed on a missing non-optional one.
func readFiles(ctx context.Context, c *vault.Client, vol contract.FileVolume, cache map[string]*vault.Secret) (*volumeData, error) {
	out := &volumeData{versions: map[string]int64{}}
	for _, f := range vol.Files {
		sec, ok := cache[f.Path]
		if !ok {
			mount, rest := contract.SplitVaultPath(f.Path)
			var err error
			sec, err = c.ReadKV2(ctx, mount, rest)
			switch {
			case errors.Is(err, vault.ErrNeverWritten), errors.Is(err, vault.ErrDeleted), errors.Is(err, vault.ErrDestroyed):
				sec = nil
			case err != nil:
				out.wipe()
				return nil, readFailure(f.Path, err)
			}
			cache[f.Path] = sec
		}
		where := fmt.Sprintf("file %s/%s (field '%s' of %s)", vol.Volume, f.File, f.Key, f.Path)
		var v any
		if sec != nil {
			out.versions[f.Path] = sec.Version
			v = sec.Data[f.Key]
		} else {
			out.versions[f.Path] = 0
		}
		if v == nil {
			if f.Optional {
				out.skipped++
				continue
			}
			out.wipe()
			if sec == nil {
				return nil, fail(ExitMissing, "%s: the secret does not exist in the vault; refusing to start", where)
			}
			return nil, fail(ExitMissing, "%s: the field is missing or null; refusing to start", where)
		}
		data, err := fileBytes(v, f.Base64)
		if err != nil {
			out.wipe()
			return nil, fail(ExitMissing, "%s: %v; refusing to start", where, err)
		}
		out.files = append(out.files, fileData{rel: f.File, data: data, mode: os.FileMode(f.Mode)})
	}
	return out, nil
}

// fileBytes: a field's text, or with encoding base64 the bytes its (standard, padded) base64
// text encodes.
func fileBytes(v any, b64 bool) ([]byte, error) {
	if !b64 {
		text, _ := fieldText(v)
		return []byte(text), nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, errors.New("the field is not a string, so not base64 (the file has encoding base64)")
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("the field is not valid base64 (the file has encoding base64)")
	}
	return data, nil
}

// writeVolume writes files into root with the kubelet's atomic layout (see the comment at the
// top of this file).
func writeVolume(root string, vd *volumeData) (err error) {
	if err := memoryFS(root); err != nil {
		return err
	}
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	gid := -1 // with fsGroup the kubelet made the root setgid, group fsGroup
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && st.Mode()&os.ModeSetgid != 0 {
		gid = int(sys.Gid)
	}
	dirMode := os.FileMode(0o755)
	if gid >= 0 {
		dirMode |= os.ModeSetgid
	}
	ts, err := os.MkdirTemp(root, time.Now().UTC().Format(tsLayout))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(ts)
		}
	}()
	if err = setOwnership(ts, dirMode, gid); err != nil {
		return err
	}
	for _, f := range vd.files {
		if err = writeFile(ts, f, dirMode, gid); err != nil {
			return err
		}
	}
	versions, _ := json.Marshal(vd.versions)
	if err = writeFile(ts, fileData{rel: VersionsFile, data: versions, mode: 0o444}, dirMode, gid); err != nil {
		return err
	}
	if err = swapData(root, filepath.Base(ts), gid); err != nil {
		return err
	}
	return tidy(root, filepath.Base(ts), vd.files, gid)
}

// setOwnership gives path its mode (chmod: the umask does not apply) and, with fsGroup, its group.
func setOwnership(path string, mode os.FileMode, gid int) error {
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			return err
		}
	}
	return os.Chmod(path, mode)
}

// writeFile writes one file under ts, its directories first; never follows a symlink.
func writeFile(ts string, f fileData, dirMode os.FileMode, gid int) error {
	dir := ts
	segs := strings.Split(f.rel, "/")
	for _, s := range segs[:len(segs)-1] {
		dir = filepath.Join(dir, s)
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := setOwnership(dir, dirMode, gid); err != nil {
			return err
		}
	}
	path := filepath.Join(dir, segs[len(segs)-1])
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	file := os.NewFile(uintptr(fd), path)
	defer file.Close()
	if _, err := file.Write(f.data); err != nil {
		return err
	}
	mode := f.mode & 0o777
	if gid >= 0 {
		if err := file.Chown(-1, gid); err != nil {
			return err
		}
		mode |= 0o440 // the kubelet's read-only mask for a Secret volume with fsGroup
	}
	return file.Chmod(mode)
}

// swapData points ..data at ts: a new symlink renamed over the old one (atomic).
func swapData(root, ts string, gid int) error {
	tmp := filepath.Join(root, dataTmpLink)
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return err
	}
	if gid >= 0 {
		_ = os.Lchown(tmp, -1, gid)
	}
	return os.Rename(tmp, filepath.Join(root, DataLink))
}

// tidy creates the top-level symlinks of the new files, removes those of files gone and every
// ..<timestamp> directory but ts.
func tidy(root, ts string, files []fileData, gid int) error {
	want := map[string]bool{}
	for _, f := range files {
		top, _, _ := strings.Cut(f.rel, "/")
		want[top] = true
	}
	tops := make([]string, 0, len(want))
	for t := range want {
		tops = append(tops, t)
	}
	sort.Strings(tops)
	for _, t := range tops {
		p, target := filepath.Join(root, t), DataLink+"/"+t
		if cur, err := os.Readlink(p); err == nil && cur == target {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			if err := os.Remove(p); err != nil { // a stale link; a placeholder's leftover
				return err
			}
		}
		if err := os.Symlink(target, p); err != nil {
			return err
		}
		if gid >= 0 {
			_ = os.Lchown(p, -1, gid)
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == DataLink || name == ts:
		case strings.HasPrefix(name, ".."):
			if e.IsDir() {
				if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
					return err
				}
			}
		case !want[name] && e.Type()&os.ModeSymlink != 0:
			if cur, _ := os.Readlink(filepath.Join(root, name)); strings.HasPrefix(cur, DataLink+"/") {
				_ = os.Remove(filepath.Join(root, name))
			}
		}
	}
	return nil
}

// RenderFiles is `cloudtaser-runtime files`: render every volume of w.Cfg.Files under
// contract.FilesDir, write the report to reportPath, and return the exit code.
func (w *Wrapper) RenderFiles(reportPath string) int {
	rep := RenderReport{FormatVersion: 1}
	err := w.renderFiles(contract.FilesDir, &rep)
	if err != nil {
		var f *Failure
		if !errors.As(err, &f) {
			f = fail(ExitInternal, "unexpected error (this is a bug in cloudtaser-runtime): %v", err)
		}
		w.Logf("%s", f.Msg)
		rep = RenderReport{FormatVersion: 1, Error: f.Msg}
		writeReport(w, reportPath, rep)
		return f.Code
	}
	w.Logf("secret files written from memory: %d file(s) in %d volume(s)", rep.Files, len(rep.Volumes))
	writeReport(w, reportPath, rep)
	return 0
}

func (w *Wrapper) renderFiles(base string, rep *RenderReport) error {
	if len(w.Cfg.Files) == 0 {
		return fail(ExitConfig, "%s lists no volume: nothing to render", contract.EnvSecretFiles)
	}
	if err := secmem.SetNotDumpable(); err != nil {
		return fail(ExitInternal, "prctl(PR_SET_DUMPABLE, 0) failed: %v", err)
	}
	if err := w.connect(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.Cfg.StartTimeout)
	defer cancel()
	l, err := login(ctx, w.client, &w.Cfg)
	if err != nil {
		return err
	}
	w.login, w.ownToken = l, l != nil
	defer w.revoke()
	// Read everything first: a missing file refuses the pod before any volume is written.
	cache := map[string]*vault.Secret{}
	data := make([]*volumeData, len(w.Cfg.Files))
	defer func() {
		for _, vd := range data {
			if vd != nil {
				vd.wipe()
			}
		}
	}()
	for i, vol := range w.Cfg.Files {
		if data[i], err = readFiles(ctx, w.client, vol, cache); err != nil {
			return err
		}
	}
	for _, sec := range cache {
		if sec != nil {
			clear(sec.Data)
		}
	}
	for i, vol := range w.Cfg.Files {
		root := filepath.Join(base, vol.Volume)
		if err := writeVolume(root, data[i]); err != nil {
			return fail(ExitInternal, "cannot write the files of volume %s: %v", vol.Volume, err)
		}
		rep.Volumes = append(rep.Volumes, VolumeReport{Volume: vol.Volume, Files: len(data[i].files), Skipped: data[i].skipped})
		rep.Files += len(data[i].files)
	}
	w.timing("files")
	return nil
}

// writeReport writes the termination message, logging a failure to do so.
func writeReport(w *Wrapper, path string, rep RenderReport) {
	if err := WriteReport(path, rep); err != nil {
		w.Logf("cannot write the report to %s: %v", path, err)
	}
}

// WriteReport writes rep to path (the termination message); the volume list is left out when
// it does not fit the kubelet's limit.
func WriteReport(path string, rep RenderReport) error {
	b, _ := json.Marshal(rep)
	if len(b) > maxReport {
		rep.Volumes = nil
		b, _ = json.Marshal(rep)
	}
	return os.WriteFile(path, b, 0o644)
}

// fileRotation is a resident wrapper's state for the volumes it re-renders.
type fileRotation struct {
	base     string
	versions map[string]map[string]int64 // volume -> path -> KV version on disk
}

// rotateFiles re-renders every volume one of whose paths has a new KV version: the app keeps
// running and sees the ..data swap. Failures are logged; the files keep their values.
func (w *Wrapper) rotateFiles() {
	if len(w.Cfg.Files) == 0 {
		return
	}
	if w.files == nil {
		w.files = &fileRotation{base: contract.FilesDir, versions: map[string]map[string]int64{}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.Cfg.StartTimeout)
	defer cancel()
	current := map[string]int64{}
	for _, vol := range w.Cfg.Files {
		root := filepath.Join(w.files.base, vol.Volume)
		have, ok := w.files.versions[vol.Volume]
		if !ok {
			have = readVersions(root)
			w.files.versions[vol.Volume] = have
		}
		var changed []string
		for _, f := range vol.Files {
			v, seen := current[f.Path]
			if !seen {
				var err error
				if v, err = w.pathVersion(ctx, f.Path); err != nil {
					w.Logf("rotation: cannot check the version of %s for volume %s (will retry): %v", f.Path, vol.Volume, err)
					return
				}
				current[f.Path] = v
			}
			if have[f.Path] != v && !contains(changed, f.Path) {
				changed = append(changed, f.Path)
			}
		}
		if len(changed) == 0 {
			continue
		}
		vd, err := readFiles(ctx, w.client, vol, map[string]*vault.Secret{})
		if err != nil {
			w.Logf("rotation: volume %s: %v; its files keep the values they have", vol.Volume, err)
			continue
		}
		err = writeVolume(root, vd)
		vd.wipe()
		if err != nil {
			hint := ""
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
				hint = " (the volume was written as another user: give this container a runAsUser, so that cloudtaser-files runs as the same user)"
			}
			w.Logf("rotation: cannot re-render volume %s: %v%s; its files keep the values they have", vol.Volume, err, hint)
			continue
		}
		w.files.versions[vol.Volume] = vd.versions
		w.Logf("rotation: new version of %v; volume %s re-rendered in place (%d file(s), no restart)", changed, vol.Volume, len(vd.files))
	}
}

// pathVersion is a path's current KV version, 0 when it does not exist (an optional file's).
func (w *Wrapper) pathVersion(ctx context.Context, path string) (int64, error) {
	mount, rest := contract.SplitVaultPath(path)
	v, err := w.client.CurrentVersion(ctx, mount, rest)
	var verr *vault.Error
	if errors.As(err, &verr) && verr.Status == 403 { // no metadata read: a data read's version
		var sec *vault.Secret
		if sec, err = w.client.ReadKV2(ctx, mount, rest); err == nil {
			v = sec.Version
			clear(sec.Data)
		}
	}
	if errors.Is(err, vault.ErrNeverWritten) || errors.Is(err, vault.ErrDeleted) || errors.Is(err, vault.ErrDestroyed) {
		return 0, nil
	}
	return v, err
}

// readVersions reads the versions the current ..data was rendered from (none: re-render).
func readVersions(root string) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(filepath.Join(root, DataLink, VersionsFile))
	if err == nil {
		_ = json.Unmarshal(b, &out)
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
