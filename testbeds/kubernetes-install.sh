#!/usr/bin/env bash
# Builds the Kubernetes testbed's binaries from their published Go modules, pinned, into
# <repo>/.testbeds (or $TESTBEDS_HOME), one directory per component and version:
#
#   kubernetes-v1.36.3/bin/  kube-apiserver kube-controller-manager kube-scheduler kubectl
#                            (testbeds/go/kubernetes: k8s.io/kubernetes + its staging modules)
#   etcd-v3.6.8/bin/etcd     (testbeds/go/etcd: go.etcd.io/etcd/server/v3)
#   kwok-v0.8.0/bin/kwok     (testbeds/go/kwok: sigs.k8s.io/kwok/cmd/kwok; its Stage YAML in stages/,
#                            its Exec/ClusterExec/Logs/ClusterLogs CRDs in crds/)
#   helm-v3.22.0/bin/helm    (testbeds/go/helm: helm.sh/helm/v3/cmd/helm)
#
# A component whose directory exists is skipped (a no-op run takes well under a second). Each is
# built in DIR.tmp and moved into place, so an interrupted build never looks finished. Prints how
# long each download and build took. Needs Go >= 1.26 (GOTOOLCHAIN is left as it is).
#
# Usage: testbeds/kubernetes-install.sh [COMPONENT...]   (default: all; kubernetes etcd kwok helm)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
export TESTBEDS_HOME="${TESTBEDS_HOME:-$REPO/.testbeds}"

# Versions: each must match the require line of testbeds/go/<component>/go.mod (checked below).
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
GO_MIN_MINOR=26   # k8s.io/kubernetes v1.36, kwok v0.8 and helm v3.22 say `go 1.26.0`

log() { echo "kubernetes-install.sh: $*" >&2; }
die() { echo "kubernetes-install.sh: error: $*" >&2; exit 1; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}s')" "$1" "$(date +%s.%N)"; }

COMPONENTS=("$@")
[[ ${#COMPONENTS[@]} -gt 0 ]] || COMPONENTS=(kubernetes etcd kwok helm)
for c in "${COMPONENTS[@]}"; do
  case "$c" in
    kubernetes|etcd|kwok|helm) ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown component '$c' (kubernetes, etcd, kwok, helm)" ;;
  esac
done

# component -> "version module-dir binaries..."
spec() {
  case "$1" in
    kubernetes) echo "$KUBE_VERSION k8s.io/kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl" ;;
    etcd) echo "$ETCD_VERSION go.etcd.io/etcd/server/v3 etcd" ;;
    kwok) echo "$KWOK_VERSION sigs.k8s.io/kwok kwok" ;;
    helm) echo "$HELM_VERSION helm.sh/helm/v3 helm" ;;
  esac
}

# Linker flags that stamp the release into the binaries, as the projects' own Makefiles do
# (`kubectl version` and `/version` report gitVersion; without it they say v0.0.0-master).
ldflags() {
  local c="$1" v="$2" f="-s -w" p minor
  case "$c" in
    kubernetes)
      minor="${v#v1.}"; minor="${minor%%.*}"
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        f+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
        f+=" -X $p.buildDate=1970-01-01T00:00:00Z"
      done ;;
    helm) f+=" -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
  esac
  echo "$f"
}

need_go() {
  command -v go >/dev/null || die "Go not found; Go >= 1.$GO_MIN_MINOR is needed to build the Kubernetes testbed"
  local v; v="$(go env GOVERSION)"
  [[ "$v" =~ ^go1\.([0-9]+) ]] || die "cannot read the Go version ('$v')"
  (( BASH_REMATCH[1] >= GO_MIN_MINOR )) \
    || die "Go $v is too old: the pinned modules need Go >= 1.$GO_MIN_MINOR (or GOTOOLCHAIN=go1.$GO_MIN_MINOR.x)"
}

# Peak resident memory of the build (the go command and its compile/link children, which exec
# nothing further), sampled every 2 s into OUTFILE in KiB.
sample_mem() { # pid outfile
  local pid="$1" out="$2" peak=0 kb
  while kill -0 "$pid" 2>/dev/null; do
    kb="$(ps -o rss= -p "$pid" --ppid "$pid" 2>/dev/null | awk '{s += $1} END {print s + 0}')"
    (( kb > peak )) && peak=$kb
    echo "$peak" >"$out"
    sleep 2
  done
}

# kwok does nothing without Stage objects (it exits with "no stages found"); the release ships
# them as YAML in its module. These give nodes that initialise and keep a heartbeat Lease, pods
# that become Running and Ready at once, Job pods that then Succeed, pods that go away when
# deleted, and pods labelled pod-container-running-failed.stage.kwok.x-k8s.io=true that fail.
copy_kwok_stages() { # moddir outdir
  local src f
  src="$(cd "$1" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" || die "kwok module not found"
  mkdir -p "$2"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
      pod/chaos/pod-container-running-failed.yaml; do
    [[ -f "$src/kustomize/stage/$f" ]] || die "kwok module has no kustomize/stage/$f"
    cp "$src/kustomize/stage/$f" "$2/"
  done
}

# kwok plays the kubelet's exec and logs endpoints too: it runs a pod's `exec` as a local command
# and serves its logs from a local file, as Exec/ClusterExec and Logs/ClusterLogs objects say
# (kubernetes.sh installs these CRDs and starts kwok with --enable-crds).
KWOK_CRDS=(execs clusterexecs logs clusterlogs)
copy_kwok_crds() { # moddir outdir
  local src c
  src="$(cd "$1" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" || die "kwok module not found"
  mkdir -p "$2"
  for c in "${KWOK_CRDS[@]}"; do
    [[ -f "$src/kustomize/crd/bases/kwok.x-k8s.io_$c.yaml" ]] || die "kwok module has no kustomize/crd/bases/kwok.x-k8s.io_$c.yaml"
    cp "$src/kustomize/crd/bases/kwok.x-k8s.io_$c.yaml" "$2/"
  done
}

# A kwok built before its CRDs were copied gets them without a rebuild (the module is downloaded
# again if the cache lost it; that takes seconds).
kwok_crds_missing() { # dir
  local c
  for c in "${KWOK_CRDS[@]}"; do [[ -f "$1/crds/kwok.x-k8s.io_$c.yaml" ]] || return 0; done
  return 1
}
add_kwok_crds() { # dir
  local dir="$1" moddir="$HERE/go/kwok"
  need_go
  (cd "$moddir" && timeout 600 go mod download sigs.k8s.io/kwok) || die "kwok: could not download sigs.k8s.io/kwok"
  rm -rf "$dir/crds.tmp"
  copy_kwok_crds "$moddir" "$dir/crds.tmp"
  mv "$dir/crds.tmp" "$dir/crds"
  log "kwok: CRDs added to $dir/crds"
}

# CPU seconds (user + system) of this shell's reaped children so far, into CHILDREN_CPU: the
# build's CPU time does not depend on what else the machine is doing, its wall time does.
# (`times` must run in this shell, not in a $(...) subshell, which has no children of its own.)
children_cpu() {
  local f; f="$(mktemp)"
  times >"$f"
  CHILDREN_CPU="$(tail -n1 "$f" | python3 -c '
import re, sys
print(sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", sys.stdin.read())))')"
  rm -f "$f"
}

build() {
  local c="$1" version mod bins dir moddir t b
  read -r version mod bins <<<"$(spec "$c")"
  dir="$TESTBEDS_HOME/$c-$version"
  local missing=0
  for b in $bins; do [[ -x "$dir/bin/$b" ]] || missing=1; done
  if [[ $missing == 0 ]]; then
    log "$c $version already in $dir"
    if [[ $c == kwok ]] && kwok_crds_missing "$dir"; then add_kwok_crds "$dir"; fi
    return 0
  fi
  need_go
  moddir="$HERE/go/$c"
  grep -qE "^[[:space:]]*(require[[:space:]]+)?$mod $version( |$)" "$moddir/go.mod" \
    || die "$moddir/go.mod does not require $mod $version (keep the versions in step)"

  # Downloads first, with bounded retries: the module proxy is sometimes slow or drops a
  # connection, and a failed download is worth retrying where a failed compile is not.
  t=$(date +%s.%N)
  local try ok=0
  for try in 1 2 3; do
    if (cd "$moddir" && timeout 1200 go mod download); then ok=1; break; fi
    log "$c: go mod download failed (attempt $try of 3)"
    sleep $(( try * 5 ))
  done
  [[ $ok == 1 ]] || die "$c: could not download the modules of $moddir/go.mod"
  log "$c $version: modules downloaded in $(elapsed "$t")"

  t=$(date +%s.%N)
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp/bin"
  local note=""
  [[ $c != kubernetes ]] || note="; kube-apiserver takes many minutes on 2 cores"
  log "$c $version: building $bins (nice -n 10$note)"
  children_cpu; local cpu0="$CHILDREN_CPU"
  local mem="$dir.tmp/.peak-rss-kb"
  (
    cd "$moddir"
    export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
    exec nice -n 10 go build -trimpath -ldflags "$(ldflags "$c" "$version")" -o "$dir.tmp/bin/" tool
  ) &
  local pid=$!
  sample_mem "$pid" "$mem" &
  local sampler=$!
  local rc=0
  wait "$pid" || rc=$?
  wait "$sampler" 2>/dev/null || true
  [[ $rc == 0 ]] || die "$c $version: go build failed (exit $rc); see the output above"
  # `go build -o DIR/ tool` names a binary after its package's last path element without a
  # major-version suffix; etcd's package is go.etcd.io/etcd/server/v3, so its binary is `server`.
  [[ $c == etcd && -x "$dir.tmp/bin/server" ]] && mv "$dir.tmp/bin/server" "$dir.tmp/bin/etcd"
  for b in $bins; do [[ -x "$dir.tmp/bin/$b" ]] || die "$c $version: build produced no $b"; done
  if [[ $c == kwok ]]; then
    copy_kwok_stages "$moddir" "$dir.tmp/stages"
    copy_kwok_crds "$moddir" "$dir.tmp/crds"
  fi
  local peak; peak="$(cat "$mem" 2>/dev/null || echo 0)"; rm -f "$mem"
  children_cpu; local cpu; cpu="$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}s')" "$cpu0" "$CHILDREN_CPU")"
  {
    echo "component=$c version=$version"
    echo "go=$(go env GOVERSION) built=$(date -u +%FT%TZ) wall=$(elapsed "$t") cpu=$cpu"
    echo "module=$moddir/go.mod"
  } >"$dir.tmp/BUILD"
  mv "$dir.tmp" "$dir"
  log "$c $version built in $(elapsed "$t"), $cpu of CPU (peak memory of the build ~$(( peak / 1024 )) MiB): $dir/bin"
}

mkdir -p "$TESTBEDS_HOME"
exec 8>"$TESTBEDS_HOME/.kubernetes-install.lock"
flock -w 3600 8 || die "another kubernetes-install.sh holds $TESTBEDS_HOME/.kubernetes-install.lock for an hour"
T0=$(date +%s.%N)
for c in "${COMPONENTS[@]}"; do
  build "$c"
done
log "done in $(elapsed "$T0")"
