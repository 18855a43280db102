#!/usr/bin/env bash
# A local etcd cluster (Debian's etcd 3.4) on 127.0.0.1 for end-to-end tests and the demo.
#
#   etcd.sh create CLUSTER [--nodes 3]
#   etcd.sh stop CLUSTER N
#   etcd.sh start CLUSTER N [--no-wait]     (waits for /health ok unless --no-wait)
#   etcd.sh restart CLUSTER N [--no-wait]
#   etcd.sh is-running CLUSTER N            (exit 0 running, 1 not)
#   etcd.sh status CLUSTER                  (members, leader, raft indexes)
#   etcd.sh leader CLUSTER                  (prints N of the leader)
#   etcd.sh endpoints CLUSTER               (comma-separated client URLs)
#   etcd.sh destroy CLUSTER
#
# Members are m1..mN. Layout (a contract with the runbooks' `local` driver, see README.md):
#   CLUSTER/cluster.env  CLUSTER/mN.cmd  CLUSTER/mN.pid  CLUSTER/mN.log  CLUSTER/mN.etcd/
set -euo pipefail

TB_NAME="etcd.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() { sed -n '2,15p' "$0" >&2; exit 2; }

load_cluster() { tb_load_cluster "$1" etcd; }
check_node() { tb_check_node "$1" member; }

ep() { local v="ETCD_ENDPOINT_$1"; echo "${!v}"; }
# Matches "bash CLUSTER/mN.cmd" (before its exec) and "etcd ... --data-dir CLUSTER/mN.etcd".
marker() { echo "$C/m$1."; }
alive() { tb_pidfile_alive "$C/m$1.pid" "$(marker "$1")"; }
healthy() { [[ "$(tb_http "$(ep "$1")/health" 2>/dev/null | tb_json "d.get('health')" 2>/dev/null)" == true ]]; }
answers() { [[ "$(tb_http_code "$(ep "$1")/version")" == 200 ]]; }
post() { tb_http "$(ep "$1")$2" -X POST -d '{}'; }
all_healthy() { local n; for n in $(seq 1 "$NODES"); do healthy "$n" || return 1; done; }

fail_member() {
  tb_check_port_clash "$C/m$1.log"
  alive "$1" || tb_log "m$1 is not running"
  tb_tail_log "$C/m$1.log"
  tb_die "member m$1 did not come up"
}

cmd_create() {
  tb_create_args 0 "$@"
  local dir="$CREATE_DIR" nodes="$CREATE_NODES"
  TB_NEED="ETCD ETCDCTL" source "$HERE/paths.sh" || exit 1
  local t0; t0=$(tb_now)
  C="$(tb_abs "$dir")"
  tb_new_cluster_dir "$C" etcd
  NODES="$nodes"

  local ports n initial="" token
  read -r -a ports <<<"$(tb_free_ports $(( 2 * nodes )))"
  token="runbook-etcd-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
  for n in $(seq 1 "$nodes"); do
    initial+="${initial:+,}m$n=http://127.0.0.1:${ports[$(( 2 * n - 1 ))]}"
  done
  {
    echo "# etcd testbed cluster, written by testbeds/etcd.sh create"
    echo "KIND=etcd"
    echo "CLUSTER=$C"
    echo "NODES=$nodes"
    echo "ETCD_BIN=$ETCD"
    echo "ETCDCTL_BIN=$ETCDCTL"
    echo "ETCD_TOKEN=$token"
    echo "ETCD_INITIAL_CLUSTER=$initial"
    local eps=""
    for n in $(seq 1 "$nodes"); do
      echo "CLIENT_PORT_$n=${ports[$(( 2 * n - 2 ))]}"
      echo "PEER_PORT_$n=${ports[$(( 2 * n - 1 ))]}"
      echo "ETCD_ENDPOINT_$n=http://127.0.0.1:${ports[$(( 2 * n - 2 ))]}"
      eps+="${eps:+,}http://127.0.0.1:${ports[$(( 2 * n - 2 ))]}"
    done
    echo "ETCD_ENDPOINTS=$eps"
  } >"$C/cluster.env"
  # shellcheck disable=SC1091
  source "$C/cluster.env"

  local cport pport
  for n in $(seq 1 "$nodes"); do
    cport="CLIENT_PORT_$n"; pport="PEER_PORT_$n"
    cat >"$C/m$n.cmd" <<EOF
#!/usr/bin/env bash
# Starts etcd member m$n (written by testbeds/etcd.sh). Run it in the background:
#   nohup bash $C/m$n.cmd >> $C/m$n.log 2>&1 < /dev/null & echo \$! > $C/m$n.pid
# It execs etcd, so that pid is etcd's. First start: --initial-cluster-state new; once the data
# dir holds member/, existing.
set -euo pipefail
state=new
[[ -d "$C/m$n.etcd/member" ]] && state=existing
exec "$ETCD" --name m$n --data-dir "$C/m$n.etcd" \\
  --listen-client-urls http://127.0.0.1:${!cport} --advertise-client-urls http://127.0.0.1:${!cport} \\
  --listen-peer-urls http://127.0.0.1:${!pport} --initial-advertise-peer-urls http://127.0.0.1:${!pport} \\
  --initial-cluster "$initial" --initial-cluster-token "$token" --initial-cluster-state "\$state" \\
  --heartbeat-interval 100 --election-timeout 1000 --logger zap --log-outputs stderr
EOF
  done

  trap 'rc=$?; if (( rc != 0 )); then for k in $(seq 1 '"$nodes"'); do tb_stop_pidfile "$C/m$k.pid" "$C/m$k." 10 "m$k" || true; done; tb_log "create failed; left $C for inspection (etcd.sh destroy $C removes it)"; fi' EXIT
  for n in $(seq 1 "$nodes"); do tb_start_cmd "$C/m$n.cmd" "$C/m$n.log" "$C/m$n.pid"; done
  for n in $(seq 1 "$nodes"); do
    tb_wait 60 "m$n /health ok" healthy "$n" || fail_member "$n"
  done
  trap - EXIT
  echo "etcd cluster with $nodes members ready in $(tb_since "$t0")s at $C"
  echo "endpoints: $ETCD_ENDPOINTS"
  status_body
}

# Member id (decimal) -> N, from the member list of any live member.
leader_n() {
  local n body
  for n in $(seq 1 "$NODES"); do
    alive "$n" || continue
    body="$(post "$n" /v3/maintenance/status 2>/dev/null)" || continue
    local lid; lid="$(tb_json "d.get('leader', '')" <<<"$body" 2>/dev/null)" || continue
    [[ -n "$lid" && "$lid" != 0 ]] || continue
    body="$(post "$n" /v3/cluster/member/list 2>/dev/null)" || continue
    local name
    name="$(tb_json "next((m.get('name', '') for m in d['members'] if m['ID'] == '$lid'), '')" <<<"$body" 2>/dev/null)" || continue
    [[ "$name" =~ ^m([0-9]+)$ ]] && { echo "${BASH_REMATCH[1]}"; return 0; }
  done
  return 1
}

status_body() {
  local n pid run health body line
  printf '%-6s %-8s %-8s %-7s %-17s %-7s %-6s %-10s %s\n' MEMBER PID RUNNING HEALTH ID LEADER TERM APPLIED VERSION
  for n in $(seq 1 "$NODES"); do
    pid="$(tb_pidfile_pid "$C/m$n.pid")"
    if alive "$n"; then run=yes; else run=no; fi
    if healthy "$n"; then health=ok; elif answers "$n"; then health=no; else health=down; fi
    line="-                 -       -      -          -"
    if body="$(post "$n" /v3/maintenance/status 2>/dev/null)" && [[ -n "$body" ]]; then
      line="$(tb_json "'%-17s %-7s %-6s %-10s %s' % ('%x' % int(d['header']['member_id']), 'yes' if d.get('leader') == d['header']['member_id'] else 'no', d.get('raftTerm', '0'), d.get('raftAppliedIndex', '0'), d.get('version', '?'))" <<<"$body" 2>/dev/null || echo "?")"
    fi
    printf '%-6s %-8s %-8s %-7s %s\n' "m$n" "${pid:--}" "$run" "$health" "$line"
  done
  local l; if l="$(leader_n)"; then echo "leader: m$l"; else echo "leader: none"; fi
}

node_args() {
  [[ $# -ge 2 ]] || usage
  load_cluster "$1"; N="$2"; check_node "$N"; shift 2
  NO_WAIT=0
  while (( $# )); do
    case "$1" in
      --no-wait) NO_WAIT=1; shift ;;
      *) tb_die "unexpected argument $1" ;;
    esac
  done
}

cmd_stop() { tb_stop_pidfile "$C/m$N.pid" "$(marker "$N")" 30 "m$N"; }

cmd_start() {
  local t0; t0=$(tb_now)
  if alive "$N"; then tb_die "m$N is already running (pid $(cat "$C/m$N.pid"))"; fi
  tb_start_cmd "$C/m$N.cmd" "$C/m$N.log" "$C/m$N.pid"
  tb_wait 30 "m$N to answer on $(ep "$N")" answers "$N" || fail_member "$N"
  if [[ $NO_WAIT == 0 ]]; then
    tb_wait 30 "m$N /health ok (needs a quorum of members running)" healthy "$N" || fail_member "$N"
    echo "m$N running (pid $(cat "$C/m$N.pid")), healthy in $(tb_since "$t0")s"
  else
    echo "m$N running (pid $(cat "$C/m$N.pid")), answering in $(tb_since "$t0")s"
  fi
}

case "${1:-}" in
  create) shift; cmd_create "$@" ;;
  stop) shift; node_args "$@"; cmd_stop ;;
  start) shift; node_args "$@"; cmd_start ;;
  restart) shift; node_args "$@"; cmd_stop; cmd_start ;;
  is-running)
    shift; node_args "$@"
    if alive "$N"; then echo "m$N running (pid $(cat "$C/m$N.pid"))"; exit 0; fi
    echo "m$N not running"; exit 1 ;;
  status) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; status_body ;;
  leader) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; leader_n || tb_die "no leader in $C" ;;
  endpoints) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; echo "$ETCD_ENDPOINTS" ;;
  destroy)
    shift; [[ $# == 1 ]] || usage
    C="$(tb_abs "$1")"
    if [[ ! -e "$C" ]]; then echo "$C does not exist"; exit 0; fi
    load_cluster "$C"
    for n in $(seq 1 "$NODES"); do tb_stop_pidfile "$C/m$n.pid" "$(marker "$n")" 30 "m$n"; done
    tb_destroy_dir "$C" etcd
    echo "destroyed $C" ;;
  ""|-h|--help|help) usage ;;
  *) tb_die "unknown command '$1' (try --help)" ;;
esac
