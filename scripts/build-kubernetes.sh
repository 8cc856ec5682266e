#!/usr/bin/env bash
# Build the pinned upstream Kubernetes commands (and an embedded etcd) as one multicall binary from
# build/kubernetes, and upstream CoreDNS from its own module (its go.mod pins client-go 0.35, which
# cannot share one build with Kubernetes 1.34), into a versioned cache outside the work tree:
#   ${OPENCS_CACHE_DIR:-$HOME/.cache/opencs}/kubernetes/<version>/bin/{kubernetes,kubelet,kubectl,...,coredns}
# Idempotent: a fast no-op when that directory already holds the binary of this exact source hash.
# Go's own module and build caches are reused (GOMODCACHE, GOCACHE), so a rebuild after a change of
# main.go only links. Prints the bin directory on its last line.
#   scripts/build-kubernetes.sh            build if needed
#   scripts/build-kubernetes.sh --check    exit 0 if the binary is there and current, 1 if not (no build)
#   scripts/build-kubernetes.sh --print    print the bin directory (whether or not it is built)
set -euo pipefail
cd "$(dirname "$0")/../build/kubernetes"

command -v go >/dev/null || { echo "build-kubernetes: 'go' not found (Go >= 1.26 is needed to build Kubernetes)" >&2; exit 1; }

VERSION=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' go.mod)
STAGING=$(awk '$1 == "k8s.io/api" && $2 == "=>" {print $4; exit}' go.mod)
[ -n "$VERSION" ] && [ -n "$STAGING" ] || { echo "build-kubernetes: cannot read the pinned version from go.mod" >&2; exit 1; }
CACHE=${OPENCS_CACHE_DIR:-$HOME/.cache/opencs}/kubernetes/$VERSION
BIN=$CACHE/bin
# the hash covers what decides the binary: our sources, the pinned modules and the Go toolchain
COREDNS_VERSION=v1.14.7
HASH=$(cat go.mod go.sum ./*.go <(go env GOVERSION GOARCH GOOS; echo "coredns $COREDNS_VERSION") | sha256sum | cut -c1-16)
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd)

current() { [ -x "$BIN/kubernetes" ] && [ -x "$BIN/coredns" ] && [ "$(cat "$CACHE/source-hash" 2>/dev/null)" = "$HASH" ]; }
case "${1:-}" in
  --print) echo "$BIN"; exit 0 ;;
  --check) current; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--check|--print]" >&2; exit 2 ;;
esac
if current; then
  echo "==> kubernetes $VERSION is up to date (source $HASH)" >&2
  echo "$BIN"
  exit 0
fi

# The replace list must be exactly upstream's staging modules at their published release.
want=$(go mod download -json "k8s.io/kubernetes@$VERSION" | awk -F'"' '/"GoMod"/ {print $4}' \
  | xargs grep '=> ./staging/' | awk '{print $1}' | sort)
have=$(awk '$2 == "=>" && $1 ~ /^k8s\.io\// {print $1}' go.mod | sort)
if [ "$want" != "$have" ]; then
  echo "build-kubernetes: go.mod's replace list differs from k8s.io/kubernetes@$VERSION's staging modules:" >&2
  diff <(echo "$want") <(echo "$have") >&2 || true
  exit 1
fi

echo "==> kubernetes $VERSION (staging modules $STAGING): downloading modules into $(go env GOMODCACHE)" >&2
go mod download -x 2>&1 | awk '/^# get .*\.zip$/ {n++; if (n % 50 == 0) printf "    %d module archives fetched\n", n > "/dev/stderr"}'
total=$(go list -deps . | wc -l)
echo "==> compiling $total packages (Go build cache: $(go env GOCACHE)); CGO_ENABLED=0" >&2
mkdir -p "$BIN"
tmp=$(mktemp "$BIN/.kubernetes.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# a reproducible build date: the last commit of build/kubernetes (the epoch before it is committed)
stamp=$(git -C ../.. log -1 --format=%ct -- build/kubernetes 2>/dev/null || true)
build_date=$(date -u -d "@${stamp:-0}" +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  minor=${VERSION#v1.}; minor=${minor%%.*}
  ldflags+=" -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
start=$(date +%s)
if ! CGO_ENABLED=0 go build -v -trimpath -ldflags "$ldflags" -o "$tmp" . 2>&1 | awk -v total="$total" -v start="$start" '
  /^#|: / {print > "/dev/stderr"; next}   # compiler errors pass through
  {n++; if (n % 100 == 0) {printf "    %d packages compiled (of at most %d), %ds\n", n, total, systime() - start > "/dev/stderr"; fflush("/dev/stderr")}}'
then
  echo "build-kubernetes: go build failed" >&2
  exit 1
fi
chmod 0755 "$tmp"
mv -f "$tmp" "$BIN/kubernetes"
trap - EXIT
for c in "${COMMANDS[@]}"; do ln -sfn kubernetes "$BIN/$c"; done
echo "==> coredns $COREDNS_VERSION (its own module; $(( $(date +%s) - start ))s so far)" >&2
cdir=$(mktemp -d "$BIN/.coredns.XXXXXX")
trap 'rm -rf "$cdir"' EXIT
if ! CGO_ENABLED=0 GOBIN="$cdir" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION"; then
  echo "build-kubernetes: coredns $COREDNS_VERSION failed to build" >&2
  exit 1
fi
mv -f "$cdir/coredns" "$BIN/coredns"
rm -rf "$cdir"
trap - EXIT
echo "$HASH" > "$CACHE/source-hash"
echo "==> built $BIN/kubernetes ($(du -h "$BIN/kubernetes" | cut -f1)) in $(( $(date +%s) - start ))s: ${COMMANDS[*]} coredns" >&2
echo "$BIN"
