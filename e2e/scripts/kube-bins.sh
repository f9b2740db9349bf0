#!/usr/bin/env bash
# Provides the real Kubernetes control-plane binaries that the e2e harness, the benchmarks and the
# sandbox run: kube-apiserver, kube-controller-manager, kube-scheduler, kubemark and etcd.
#
# Prints the directory that holds them on stdout (everything else goes to stderr), so callers can
# write: KUBE_BIN_DIR=$(e2e/scripts/kube-bins.sh)
#
#  - KUBE_BIN_DIR set and complete: used as it is (any Kubernetes >= 1.20).
#  - otherwise: built once from Debian's `kubernetes` source package (1.20.2) and cached under
#    ${MOCK_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mock-kind}/kube-<version>/bin.
set -euo pipefail

KUBE_VERSION=1.20.2
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubemark etcd)
CACHE_ROOT=${MOCK_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mock-kind}
CACHE_DIR=$CACHE_ROOT/kube-$KUBE_VERSION
BIN_DIR=$CACHE_DIR/bin
STAMP=$BIN_DIR/.complete

log() { printf 'kube-bins: %s\n' "$*" >&2; }
die() { printf 'kube-bins: error: %s\n' "$*" >&2; exit 1; }

# A directory is usable when every binary is there, executable and answers --version: a partial
# copy or a truncated file from an interrupted build fails here and is rebuilt.
check_dir() {
  local dir=$1 b
  for b in "${BINS[@]}"; do
    [[ -x $dir/$b ]] || { log "$dir/$b is missing or not executable"; return 1; }
    "$dir/$b" --version >/dev/null 2>&1 || { log "$dir/$b does not run (--version failed)"; return 1; }
  done
}

if [[ -n ${KUBE_BIN_DIR:-} ]]; then
  check_dir "$KUBE_BIN_DIR" || die "KUBE_BIN_DIR=$KUBE_BIN_DIR must hold ${BINS[*]}; unset it to build Kubernetes $KUBE_VERSION from Debian's source package"
  echo "$KUBE_BIN_DIR"
  exit 0
fi

# The stamp holds the checksums written after a good build: a file changed since fails the check.
if [[ -f $STAMP ]] && (cd "$BIN_DIR" && sha256sum --quiet -c .complete >/dev/null 2>&1) && check_dir "$BIN_DIR"; then
  echo "$BIN_DIR"
  exit 0
fi
[[ -d $BIN_DIR ]] && log "cache $BIN_DIR is incomplete or damaged: rebuilding"

command -v apt-get >/dev/null || die "no apt-get: set KUBE_BIN_DIR to a directory holding ${BINS[*]}"
[[ $(id -u) -eq 0 ]] || die "building needs root for apt-get; run as root or set KUBE_BIN_DIR to a directory holding ${BINS[*]}"

# Serialise concurrent callers (two test binaries, sandbox and tests) on one lock.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.kube-bins.lock"
flock 9
if [[ -f $STAMP ]] && (cd "$BIN_DIR" && sha256sum --quiet -c .complete >/dev/null 2>&1) && check_dir "$BIN_DIR"; then
  echo "$BIN_DIR"; exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SRC_LIST=/etc/apt/sources.list.d/mock-kind-deb-src.sources
if [[ ! -f $SRC_LIST ]]; then
  [[ -f /etc/apt/sources.list.d/debian.sources ]] || die "no /etc/apt/sources.list.d/debian.sources to mirror as deb-src; set KUBE_BIN_DIR"
  log "adding deb-src entries mirroring the machine's Debian sources"
  sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$SRC_LIST"
fi
log "apt-get update"
apt-get update -qq >&2 || die "apt-get update failed"
log "installing golang-go etcd-server rsync golang-github-modern-go-reflect2-dev dpkg-dev"
apt-get install -y -qq golang-go etcd-server rsync golang-github-modern-go-reflect2-dev dpkg-dev >&2 \
  || die "apt-get install failed"

WORK=$CACHE_DIR/src
rm -rf "$WORK"; mkdir -p "$WORK"
log "downloading Debian's kubernetes source package"
(cd "$WORK" && apt-get source --download-only kubernetes >&2) || die "apt-get source kubernetes failed"
ORIG=$(ls "$WORK"/kubernetes_*.orig.tar.gz 2>/dev/null | head -n1)
[[ -n $ORIG ]] || die "no kubernetes_*.orig.tar.gz downloaded"
log "unpacking $(basename "$ORIG")"
tar -xzf "$ORIG" -C "$WORK"
SRC=$(find "$WORK" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
[[ -n $SRC && -d $SRC/vendor ]] || die "unexpected layout in $ORIG"

# reflect2 v1.0.1 corrupts memory under Go >= 1.18 (kube-apiserver dies with "fatal error: fault");
# Debian's 1.0.2 is API-compatible. Its go.mod stays out: the tree builds in GOPATH/vendor mode.
R2=/usr/share/gocode/src/github.com/modern-go/reflect2
[[ -d $R2 ]] || die "$R2 missing (package golang-github-modern-go-reflect2-dev)"
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
mkdir -p "$SRC/vendor/github.com/modern-go/reflect2"
(cd "$R2" && find . -maxdepth 1 -type f -name '*.go' ! -name '*_test.go' -exec cp {} "$SRC/vendor/github.com/modern-go/reflect2/" \;)
for f in "$R2"/*.s; do [[ -e $f ]] && cp "$f" "$SRC/vendor/github.com/modern-go/reflect2/"; done

log "building kube-apiserver kube-scheduler kube-controller-manager kubemark (5-10 minutes on 2 cores)"
rm -rf "$SRC/_output"
(
  cd "$SRC"
  export KUBE_GIT_VERSION=v$KUBE_VERSION KUBE_GIT_TREE_STATE=clean KUBE_VERBOSE=1
  make WHAT="cmd/kube-apiserver cmd/kube-scheduler cmd/kube-controller-manager cmd/kubemark" 2>&1 \
    | while IFS= read -r line; do printf '  build: %s\n' "$line" >&2; done
  exit "${PIPESTATUS[0]}"
) || die "make failed in $SRC (see the build lines above)"

OUT=$SRC/_output/bin
[[ -d $OUT ]] || OUT=$(find "$SRC/_output" -type d -path '*/bin' | head -n1)
rm -rf "$BIN_DIR.tmp"; mkdir -p "$BIN_DIR.tmp"
for b in kube-apiserver kube-scheduler kube-controller-manager kubemark; do
  [[ -x $OUT/$b ]] || die "build produced no $b in $OUT"
  cp "$OUT/$b" "$BIN_DIR.tmp/"
done
ETCD=$(command -v etcd || true)
[[ -z $ETCD && -x /usr/bin/etcd ]] && ETCD=/usr/bin/etcd
[[ -n $ETCD ]] || die "etcd not found after installing etcd-server"
cp "$ETCD" "$BIN_DIR.tmp/etcd"
(cd "$BIN_DIR.tmp" && sha256sum "${BINS[@]}" >.complete)
rm -rf "$BIN_DIR"; mv "$BIN_DIR.tmp" "$BIN_DIR"
check_dir "$BIN_DIR" || die "built binaries in $BIN_DIR do not run"
rm -rf "$WORK"
log "cached in $BIN_DIR"
echo "$BIN_DIR"
