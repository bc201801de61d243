package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// The cloudtaser.io/secret-files annotation (issue 29; docs/injector.md, "Secret files in the
// pod"): the Secrets a pod read as files, now read from the vault. Compact JSON written by
// `cloudtaser target protect`, a list with one object per migrated pod volume, in the pod
// spec's volume order:
//
//	[{"defaultMode":420,"files":[
//	   {"encoding":"base64","key":"keystore.jks","mode":256,"path":"secret/data/shop/tls","file":"ks/keystore.jks"},
//	   {"key":"password","optional":true,"path":"secret/data/shop/db","file":"db/password"}],
//	  "volume":"certs"}]
//
// The vault path and field follow the rule book (ValidVaultPath, ValidField); the file path
// follows the kubelet's rules for a Secret volume's items[].path, tightened by one: segments of
// [A-Za-z0-9._-], none empty, none "." or starting with "..", at most MaxFilePath characters.
// spec/contract/secret-files.json holds the vectors both languages run.

// FilesDir is where the files init container, and a resident wrapper that rotates files,
// mount each volume of the annotation read-write: FilesDir/<volume>.
const FilesDir = "/cloudtaser/files"

// Limits of the secret-files annotation.
const (
	MaxSecretFilesBytes = 65536 // the whole annotation value
	MaxFilesPerVolume   = 4096
	MaxFilePath         = 4096 // the kubelet's limit for items[].path
	MaxFileMode         = 0o777
	DefaultFileMode     = 0o644 // Kubernetes' defaultMode of a Secret volume
	EncodingBase64      = "base64"
)

// Error codes of the secret-files annotation (spec/contract/secret-files.json).
const (
	CodeBadSecretFiles     = "bad-secret-files"      // not JSON, wrong shape or type, unknown or missing key, empty
	CodeSecretFilesTooLong = "secret-files-too-long" // over MaxSecretFilesBytes
	CodeTooManyFiles       = "too-many-files"        // over MaxFilesPerVolume in one volume
	CodeBadVolumeName      = "bad-volume-name"       // not a DNS label
	CodeDuplicateVolume    = "duplicate-volume"
	CodeBadFilePath        = "bad-file-path"
	CodeDuplicateFile      = "duplicate-file"
	CodeFilePrefix         = "file-prefix" // a file is a directory of another one
	CodeBadFileMode        = "bad-file-mode"
	CodeBadEncoding        = "bad-encoding"
)

// FileVolume is one pod volume whose files come from the vault.
type FileVolume struct {
	Volume      string       `json:"volume"`
	DefaultMode uint32       `json:"defaultMode"`
	Files       []SecretFile `json:"files"`
}

// SecretFile is one file of a FileVolume. Mode is the effective mode (the file's own, else the
// volume's defaultMode).
type SecretFile struct {
	File     string `json:"file"`
	Path     string `json:"path"`
	Key      string `json:"key"`
	Mode     uint32 `json:"mode"`
	Base64   bool   `json:"base64"`
	Optional bool   `json:"optional"`
}

var (
	volumeKeys = map[string]bool{"volume": true, "defaultMode": true, "files": true}
	fileKeys   = map[string]bool{"file": true, "path": true, "key": true, "mode": true, "encoding": true, "optional": true}
)

// ParseSecretFiles parses and validates a cloudtaser.io/secret-files value (name is how
// messages call it). An empty or blank value means no files.
func ParseSecretFiles(name, value string) ([]FileVolume, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	if len(value) > MaxSecretFilesBytes {
		return nil, errorf(CodeSecretFilesTooLong, "%s is %d bytes, more than the %d allowed", name, len(value), MaxSecretFilesBytes)
	}
	var raw []json.RawMessage
	if json.Unmarshal([]byte(value), &raw) != nil || raw == nil {
		return nil, errorf(CodeBadSecretFiles, "%s is not a JSON list of volumes", name)
	}
	if len(raw) == 0 {
		return nil, errorf(CodeBadSecretFiles, "%s lists no volume (leave it out instead)", name)
	}
	out := make([]FileVolume, 0, len(raw))
	seen := map[string]bool{}
	for i, r := range raw {
		v, err := parseFileVolume(fmt.Sprintf("%s[%d]", name, i), r)
		if err != nil {
			return nil, err
		}
		if seen[v.Volume] {
			return nil, errorf(CodeDuplicateVolume, "%s[%d]: volume %s is listed twice", name, i, quote(v.Volume, 63))
		}
		seen[v.Volume] = true
		out = append(out, v)
	}
	return out, nil
}

// object decodes a JSON object, refusing anything else and keys outside allowed.
func object(where string, raw json.RawMessage, allowed map[string]bool) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("null")) || json.Unmarshal(raw, &m) != nil {
		return nil, errorf(CodeBadSecretFiles, "%s is not a JSON object", where)
	}
	for k := range m {
		if !allowed[k] {
			return nil, errorf(CodeBadSecretFiles, "%s has an unknown key %s", where, quote(k, 40))
		}
	}
	return m, nil
}

func parseFileVolume(where string, raw json.RawMessage) (FileVolume, error) {
	var v FileVolume
	m, err := object(where, raw, volumeKeys)
	if err != nil {
		return v, err
	}
	for _, k := range []string{"volume", "defaultMode", "files"} {
		if _, ok := m[k]; !ok {
			return v, errorf(CodeBadSecretFiles, "%s has no %s", where, k)
		}
	}
	if json.Unmarshal(m["volume"], &v.Volume) != nil || !DNSLabel(v.Volume) {
		return v, errorf(CodeBadVolumeName, "%s: volume is not a pod volume name (a DNS label)", where)
	}
	if v.DefaultMode, err = fileMode(where+".defaultMode", m["defaultMode"]); err != nil {
		return v, err
	}
	var files []json.RawMessage
	if json.Unmarshal(m["files"], &files) != nil || len(files) == 0 {
		return v, errorf(CodeBadSecretFiles, "%s: files is not a non-empty list", where)
	}
	if len(files) > MaxFilesPerVolume {
		return v, errorf(CodeTooManyFiles, "%s has %d files, more than the %d allowed", where, len(files), MaxFilesPerVolume)
	}
	seen := map[string]bool{}
	for j, r := range files {
		f, err := parseSecretFile(fmt.Sprintf("%s.files[%d]", where, j), r, v.DefaultMode)
		if err != nil {
			return v, err
		}
		if seen[f.File] {
			return v, errorf(CodeDuplicateFile, "%s.files[%d]: file %s is listed twice in volume %s", where, j, quote(f.File, 120), v.Volume)
		}
		seen[f.File] = true
		v.Files = append(v.Files, f)
	}
	for _, f := range v.Files {
		for dir := f.File; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if seen[dir] {
				return v, errorf(CodeFilePrefix, "%s: file %s is also the directory of %s", where, quote(dir, 120), quote(f.File, 120))
			}
		}
	}
	return v, nil
}

func parseSecretFile(where string, raw json.RawMessage, defaultMode uint32) (SecretFile, error) {
	f := SecretFile{Mode: defaultMode}
	m, err := object(where, raw, fileKeys)
	if err != nil {
		return f, err
	}
	for _, k := range []string{"file", "path", "key"} {
		if _, ok := m[k]; !ok {
			return f, errorf(CodeBadSecretFiles, "%s has no %s", where, k)
		}
	}
	if json.Unmarshal(m["file"], &f.File) != nil || !ValidFilePath(f.File) {
		return f, errorf(CodeBadFilePath, "%s: file is not a relative path of [A-Za-z0-9._-] segments (none empty, \".\" or starting with \"..\", at most %d characters)", where, MaxFilePath)
	}
	if json.Unmarshal(m["path"], &f.Path) != nil || !ValidVaultPath(f.Path) {
		return f, errorf(CodeUnsafePath, "%s: path is not a safe KV v2 path (<mount>/data/<path>)", where)
	}
	if json.Unmarshal(m["key"], &f.Key) != nil || !ValidField(f.Key) {
		return f, errorf(CodeBadField, "%s: key is not a valid vault field name", where)
	}
	if r, ok := m["mode"]; ok {
		if f.Mode, err = fileMode(where+".mode", r); err != nil {
			return f, err
		}
	}
	if r, ok := m["encoding"]; ok {
		var enc string
		if json.Unmarshal(r, &enc) != nil || enc != EncodingBase64 {
			return f, errorf(CodeBadEncoding, "%s: encoding can only be %q (the field holds the base64 of the file's bytes)", where, EncodingBase64)
		}
		f.Base64 = true
	}
	if r, ok := m["optional"]; ok {
		if string(r) != "true" && string(r) != "false" {
			return f, errorf(CodeBadSecretFiles, "%s: optional is not true or false", where)
		}
		f.Optional = string(r) == "true"
	}
	return f, nil
}

// fileMode: a JSON integer 0..MaxFileMode (no sign, fraction or exponent).
func fileMode(where string, raw json.RawMessage) (uint32, error) {
	s := string(raw)
	if s == "" || len(s) > 3 || strings.Trim(s, "0123456789") != "" {
		return 0, errorf(CodeBadFileMode, "%s is not a file mode (an integer 0..511, 0o777)", where)
	}
	n := uint32(0)
	for i := 0; i < len(s); i++ {
		n = n*10 + uint32(s[i]-'0')
	}
	if n > MaxFileMode || (len(s) > 1 && s[0] == '0') {
		return 0, errorf(CodeBadFileMode, "%s is not a file mode (an integer 0..511, 0o777)", where)
	}
	return n, nil
}

// ValidFilePath reports whether p is a file path inside a volume: segments of [A-Za-z0-9._-]
// joined by "/", none empty (so no leading or trailing "/"), none "." or starting with ".."
// (the kubelet's own names "..data" and "..<timestamp>" live at the top), at most MaxFilePath
// characters.
func ValidFilePath(p string) bool {
	if p == "" || len(p) > MaxFilePath {
		return false
	}
	for _, s := range strings.Split(p, "/") {
		if s == "" || s == "." || strings.HasPrefix(s, "..") {
			return false
		}
		for i := 0; i < len(s); i++ {
			if !isPathChar(s[i]) {
				return false
			}
		}
	}
	return true
}
