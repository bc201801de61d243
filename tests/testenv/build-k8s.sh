#!/usr/bin/env bash
# Build the real Kubernetes test-bed binaries from the Go module proxy only:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok.
# Idempotent: does nothing when the cache already holds a complete, stamped set.
#
# Environment:
#   CLOUDTASER_K8S_VERSION   Kubernetes version, no leading v   (default 1.36.3)
#   CLOUDTASER_KWOK_VERSION  kwok version                        (default v0.8.0)
#   CLOUDTASER_TESTENV_CACHE cache root (default ~/.cache/cloudtaser-testenv)
# Output: $CACHE/v$KV/bin/* and $CACHE/v$KV/bin/.complete (the completeness stamp).
# Nothing from Kubernetes is ever written into the repository.
set -euo pipefail
KV=${CLOUDTASER_K8S_VERSION:-1.36.3}
KWOK_V=${CLOUDTASER_KWOK_VERSION:-v0.8.0}
CACHE=${CLOUDTASER_TESTENV_CACHE:-$HOME/.cache/cloudtaser-testenv}
OUT=$CACHE/v$KV/bin
SRC=$CACHE/v$KV/src
STAMP="$OUT/.complete"
WANT="k8s=v$KV kwok=$KWOK_V"
BINS="kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  ok=1
  for b in $BINS; do [ -x "$OUT/$b" ] || ok=0; done
  if [ $ok = 1 ]; then echo "testenv: $WANT cached in $OUT"; exit 0; fi
fi

command -v go >/dev/null || { echo "testenv: 'go' is not on PATH; install Go >= 1.26 or set CLOUDTASER_TESTENV_BIN to prebuilt binaries" >&2; exit 1; }
start=$(date +%s)
export GOWORK=off GOFLAGS=-modcacherw CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}
rm -f "$STAMP"
mkdir -p "$OUT" "$SRC"
cd "$SRC"
[ -f go.mod ] || go mod init cloudtaser-testenv-build >/dev/null
MINOR=$(echo "$KV" | cut -d. -f2)
SV="v0.${KV#1.}"

# 1) Replace every staging module with its published tag, read from k8s.io/kubernetes's own go.mod.
KGOMOD=$(go mod download -json "k8s.io/kubernetes@v$KV" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
python3 - "$KGOMOD" "$SV" <<'PY'
import re, subprocess, sys
text = open(sys.argv[1]).read()
mods = re.findall(r'^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/', text, re.M)
assert mods, "no staging replaces found"
subprocess.check_call(["go", "mod", "edit"] + [f"-replace={m}={m}@{sys.argv[2]}" for m in mods])
g = re.search(r'^godebug\s+(\S+)', text, re.M)
if g:
    subprocess.check_call(["go", "mod", "edit", f"-godebug={g.group(1)}"])
print(f"testenv: {len(mods)} staging modules replaced with {sys.argv[2]}")
PY

CMDS="kube-apiserver kube-controller-manager kube-scheduler kubectl"
go get $(for c in $CMDS; do printf 'k8s.io/kubernetes/cmd/%s@v%s ' "$c" "$KV"; done)
EV=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$KGOMOD")
go get "go.etcd.io/etcd/server/v3@$EV"

# 2) Build with version stamping so /version and --version report the real version.
LDF="-s -w"
for kv in "gitVersion=v$KV" "gitMajor=1" "gitMinor=$MINOR" "gitTreeState=clean" \
          "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
  LDF="$LDF -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done
for c in $CMDS; do
  echo "testenv: building $c"
  go build -trimpath -buildvcs=false -ldflags "$LDF" -o "$OUT/$c" "k8s.io/kubernetes/cmd/$c"
done
echo "testenv: building etcd $EV"
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3

# 3) kwok in its own module graph (never inside the k8s module above).
echo "testenv: building kwok $KWOK_V"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_V"

# kwok >= 0.8 has no built-in stages: keep the upstream Stage YAMLs next to the binaries.
KW=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_V/kustomize/stage
mkdir -p "$OUT/../stages"
first=1
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  [ $first = 1 ] || echo '---'
  first=0
  cat "$KW/$f"
done > "$OUT/../stages/kwok-stages.yaml"

"$OUT/kube-apiserver" --version
"$OUT/etcd" --version | head -1
echo "$WANT" > "$STAMP"
echo "testenv: built $WANT in $(( $(date +%s) - start ))s into $OUT"
