package wrap

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloudtaser/runtime/internal/contract"
)

// fakeKV is a KV v2 mount "secret" behind a token login: enough vault for the renderer.
type fakeKV struct {
	mu       sync.Mutex
	data     map[string]map[string]any // path (after secret/data/) -> fields
	versions map[string]int64
}

func (f *fakeKV) put(path string, fields map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[path] = fields
	f.versions[path]++
}

func (f *fakeKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := strings.TrimPrefix(r.URL.Path, "/v1/")
	w.Header().Set("Content-Type", "application/json")
	switch {
	case p == "auth/kubernetes/login":
		_, _ = w.Write([]byte(`{"auth":{"client_token":"s.test","lease_duration":3600,"renewable":true}}`))
	case p == "auth/token/revoke-self":
		w.WriteHeader(204)
	case strings.HasPrefix(p, "secret/data/"):
		k := strings.TrimPrefix(p, "secret/data/")
		d, ok := f.data[k]
		if !ok {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errors":[]}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"data": d, "metadata": map[string]any{"version": f.versions[k]}}})
	case strings.HasPrefix(p, "secret/metadata/"):
		k := strings.TrimPrefix(p, "secret/metadata/")
		if _, ok := f.data[k]; !ok {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errors":[]}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"current_version": f.versions[k]}})
	default:
		w.WriteHeader(404)
	}
}

// binary is every byte value, NUL and invalid UTF-8 included.
var binary = func() []byte {
	b := make([]byte, 512)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

func filesWrapper(t *testing.T, kv *fakeKV, spec string) (*Wrapper, string, *syncBuf) {
	t.Helper()
	memoryFS = func(string) error { return nil } // t.TempDir is not always a tmpfs
	t.Cleanup(func() { memoryFS = realMemoryFS })
	srv := httptest.NewServer(kv)
	t.Cleanup(srv.Close)
	jwt := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(jwt, []byte("header.payload.sig"), 0o600); err != nil {
		t.Fatal(err)
	}
	vols, err := contract.ParseSecretFiles("test", spec)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	for _, v := range vols {
		if err := os.Mkdir(filepath.Join(base, v.Volume), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	buf := &syncBuf{}
	w := &Wrapper{
		Cfg: contract.Config{Address: srv.URL, AuthMethod: "kubernetes", AuthMount: "kubernetes", Role: "r", SATokenPath: jwt,
			Files: vols, StartTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second},
		Stderr: buf, Started: time.Now(),
	}
	return w, base, buf
}

var realMemoryFS = memoryFS

const shopSpec = `[{"defaultMode":292,"files":[
 {"key":"tls.crt","path":"secret/data/shop/tls","file":"tls.crt"},
 {"key":"tls.key","path":"secret/data/shop/tls","file":"tls.key","mode":256},
 {"key":"ks","path":"secret/data/shop/tls","file":"ks/keystore.jks","encoding":"base64"},
 {"key":"password","path":"secret/data/shop/db","file":"conf/db/password","optional":true},
 {"key":"nope","path":"secret/data/shop/none","file":"absent","optional":true}],"volume":"certs"}]`

func shopKV() *fakeKV {
	kv := &fakeKV{data: map[string]map[string]any{}, versions: map[string]int64{}}
	kv.put("shop/tls", map[string]any{"tls.crt": "CERT-1", "tls.key": "KEY-1", "ks": base64.StdEncoding.EncodeToString(binary)})
	kv.put("shop/db", map[string]any{"password": "pw-1"})
	return kv
}

func render(t *testing.T, w *Wrapper, base string) RenderReport {
	t.Helper()
	rep := RenderReport{FormatVersion: 1}
	if err := w.renderFiles(base, &rep); err != nil {
		t.Fatalf("render: %v", err)
	}
	return rep
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

func TestRenderWritesTheKubeletLayout(t *testing.T) {
	w, base, buf := filesWrapper(t, shopKV(), shopSpec)
	rep := render(t, w, base)
	root := filepath.Join(base, "certs")
	if rep.Files != 4 || len(rep.Volumes) != 1 || rep.Volumes[0] != (VolumeReport{Volume: "certs", Files: 4, Skipped: 1}) {
		t.Fatalf("report %+v", rep)
	}
	ts, err := os.Readlink(filepath.Join(root, DataLink))
	if err != nil || !strings.HasPrefix(ts, "..") || strings.Contains(ts, "/") {
		t.Fatalf("..data -> %q, %v", ts, err)
	}
	for top, want := range map[string]string{"tls.crt": "..data/tls.crt", "tls.key": "..data/tls.key", "ks": "..data/ks", "conf": "..data/conf"} {
		if got, err := os.Readlink(filepath.Join(root, top)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %s", top, got, err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "absent")); !os.IsNotExist(err) {
		t.Errorf("an optional file whose path is missing was written: %v", err)
	}
	for rel, want := range map[string]string{"tls.crt": "CERT-1", "tls.key": "KEY-1", "conf/db/password": "pw-1"} {
		if b, err := os.ReadFile(filepath.Join(root, rel)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v", rel, b, err)
		}
	}
	got, _ := os.ReadFile(filepath.Join(root, "ks/keystore.jks"))
	if sha256.Sum256(got) != sha256.Sum256(binary) {
		t.Error("the base64 file is not byte-identical")
	}
	for rel, want := range map[string]os.FileMode{"tls.crt": 0o444, "tls.key": 0o400, "ks/keystore.jks": 0o444, "ks": os.ModeDir | 0o755, ".": os.ModeDir | 0o755} {
		p := filepath.Join(root, DataLink, rel)
		if m := mode(t, p); m != want {
			t.Errorf("%s: mode %v, want %v", rel, m, want)
		}
	}
	if v := readVersions(root); v["secret/data/shop/tls"] != 1 || v["secret/data/shop/none"] != 0 {
		t.Errorf("versions %v", v)
	}
	if strings.Contains(buf.String(), "CERT-1") || strings.Contains(buf.String(), "pw-1") {
		t.Error("a value in the log")
	}
}

func TestRenderAgainSwapsDataAndRemovesTheOldDirectory(t *testing.T) {
	kv := shopKV()
	w, base, _ := filesWrapper(t, kv, shopSpec)
	render(t, w, base)
	root := filepath.Join(base, "certs")
	old, _ := os.Readlink(filepath.Join(root, DataLink))
	// an app holding the old file open keeps reading the old content (like the kubelet's)
	held, err := os.Open(filepath.Join(root, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	kv.put("shop/tls", map[string]any{"tls.crt": "CERT-2", "tls.key": "KEY-2", "ks": base64.StdEncoding.EncodeToString(binary)})
	render(t, w, base)
	now, _ := os.Readlink(filepath.Join(root, DataLink))
	if now == old {
		t.Fatal("..data was not swapped")
	}
	if _, err := os.Stat(filepath.Join(root, old)); !os.IsNotExist(err) {
		t.Fatalf("the old directory %s is still there: %v", old, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "tls.crt")); string(b) != "CERT-2" {
		t.Fatalf("tls.crt: %q", b)
	}
	entries, _ := os.ReadDir(root)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != strings.Join([]string{now, "..data", "conf", "ks", "tls.crt", "tls.key"}, " ") {
		t.Fatalf("root holds %v", names)
	}
}

func TestRenderRefusesAMissingFileBeforeWritingAnything(t *testing.T) {
	for name, spec := range map[string]string{
		"path missing":  `[{"defaultMode":420,"files":[{"key":"tls.crt","path":"secret/data/shop/tls","file":"a"},{"key":"x","path":"secret/data/shop/gone","file":"b"}],"volume":"certs"}]`,
		"field missing": `[{"defaultMode":420,"files":[{"key":"tls.crt","path":"secret/data/shop/tls","file":"a"},{"key":"nofield","path":"secret/data/shop/tls","file":"b"}],"volume":"certs"}]`,
		"not base64":    `[{"defaultMode":420,"files":[{"key":"tls.crt","path":"secret/data/shop/tls","file":"a","encoding":"base64"}],"volume":"certs"}]`,
	} {
		t.Run(name, func(t *testing.T) {
			w, base, _ := filesWrapper(t, shopKV(), spec)
			rep := RenderReport{}
			err := w.renderFiles(base, &rep)
			var f *Failure
			if err == nil || !asFailure(err, &f) || f.Code != ExitMissing {
				t.Fatalf("want exit %d, got %v", ExitMissing, err)
			}
			if strings.Contains(f.Msg, "CERT") {
				t.Fatal("a value in the message")
			}
			if entries, _ := os.ReadDir(filepath.Join(base, "certs")); len(entries) != 0 {
				t.Fatalf("written anyway: %v", entries)
			}
		})
	}
}

func asFailure(err error, f **Failure) bool {
	x, ok := err.(*Failure)
	*f = x
	return ok
}

func TestRenderWithFsGroupMakesFilesGroupReadable(t *testing.T) {
	w, base, _ := filesWrapper(t, shopKV(), shopSpec)
	root := filepath.Join(base, "certs")
	gid := os.Getgid()
	if err := os.Chmod(root, 0o777|os.ModeSetgid); err != nil { // what the kubelet does with fsGroup
		t.Fatal(err)
	}
	render(t, w, base)
	if m := mode(t, filepath.Join(root, "tls.key")); m != 0o440 {
		t.Errorf("tls.key (mode 0400): %v, want 0440", m)
	}
	if m := mode(t, filepath.Join(root, DataLink, "ks")); m != os.ModeDir|os.ModeSetgid|0o755 {
		t.Errorf("ks: %v", m)
	}
	st, _ := os.Stat(filepath.Join(root, "tls.key"))
	if int(st.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Error("group not kept")
	}
}

func TestRenderRefusesADiskDirectory(t *testing.T) {
	dir := t.TempDir()
	if realMemoryFS(dir) == nil {
		t.Skipf("%s is a memory filesystem here", dir)
	}
	err := writeVolume(dir, &volumeData{files: []fileData{{rel: "a", data: []byte("x"), mode: 0o400}}})
	if err == nil || !strings.Contains(err.Error(), "not a memory filesystem") {
		t.Fatalf("want a refusal, got %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatal("something was written")
	}
	if shm := "/dev/shm"; realMemoryFS(shm) != nil {
		t.Errorf("/dev/shm is refused: %v", realMemoryFS(shm))
	}
}

func TestResidentRotationReRendersInPlace(t *testing.T) {
	kv := shopKV()
	w, base, buf := filesWrapper(t, kv, shopSpec)
	render(t, w, base)
	root := filepath.Join(base, "certs")
	first, _ := os.Readlink(filepath.Join(root, DataLink))
	w.files = &fileRotation{base: base, versions: map[string]map[string]int64{}}
	w.rotateFiles() // nothing changed: versions read from ..versions
	if now, _ := os.Readlink(filepath.Join(root, DataLink)); now != first {
		t.Fatal("re-rendered without a change")
	}
	kv.put("shop/db", map[string]any{"password": "pw-2"})
	w.rotateFiles()
	now, _ := os.Readlink(filepath.Join(root, DataLink))
	if now == first {
		t.Fatalf("not re-rendered; log: %s", buf.String())
	}
	if b, _ := os.ReadFile(filepath.Join(root, "conf/db/password")); !bytes.Equal(b, []byte("pw-2")) {
		t.Fatalf("password: %q", b)
	}
	if !strings.Contains(buf.String(), "re-rendered in place") || strings.Contains(buf.String(), "pw-") {
		t.Fatalf("log: %s", buf.String())
	}
	// a failed read keeps the files as they are
	kv.mu.Lock()
	delete(kv.data, "shop/tls")
	kv.versions["shop/tls"]++
	kv.mu.Unlock()
	w.rotateFiles()
	if again, _ := os.Readlink(filepath.Join(root, DataLink)); again != now {
		t.Fatal("the files changed although a non-optional path is gone")
	}
}
