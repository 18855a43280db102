#!/usr/bin/env bash
# A local OpenBao Raft cluster on 127.0.0.1 for end-to-end tests and the demo.
#
#   openbao.sh create CLUSTER --version 2.6.2|2.7.2 [--nodes 3]
#   openbao.sh stop CLUSTER N
#   openbao.sh start CLUSTER N [--version V]        (default: the version in node-N.version)
#   openbao.sh restart CLUSTER N [--version V]
#   openbao.sh is-running CLUSTER N                 (exit 0 running, 1 not)
#   openbao.sh unseal CLUSTER N
#   openbao.sh status CLUSTER
#   openbao.sh leader CLUSTER                       (prints N of the active node)
#   openbao.sh wait-healthy CLUSTER [--timeout S]   (autopilot healthy, all nodes voters)
#   openbao.sh env CLUSTER                          (export BAO_ADDR=... BAO_TOKEN=... for the leader)
#   openbao.sh destroy CLUSTER
#
# CLUSTER is a directory (made absolute). Its layout is a contract with the runbooks' `local`
# driver; see testbeds/README.md.
set -euo pipefail

TB_NAME="openbao.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() { sed -n '2,16p' "$0" >&2; exit 2; }

# version -> binary; accepts 2.6.2 / 2.7.2 and the short forms 2.6 / 2.7.
bao_version_norm() {
  case "$1" in
    2.6|2.6.2) echo 2.6.2 ;;
    2.7|2.7.2) echo 2.7.2 ;;
    *) tb_die "unknown OpenBao version '$1' (have 2.6.2 and 2.7.2)" ;;
  esac
}
bao_bin() {
  case "$1" in
    2.6.2) echo "$BAO_262" ;;
    2.7.2) echo "$BAO_272" ;;
    *) tb_die "unknown OpenBao version '$1'" ;;
  esac
}

load_cluster() { tb_load_cluster "$1" openbao; }

check_node() { tb_check_node "$1" node; }

addr() { local v="BAO_ADDR_$1"; echo "${!v}"; }
# Matches both "bash CLUSTER/node-N.cmd" (before its exec) and "bao server -config=CLUSTER/node-N.hcl".
marker() { echo "$C/node-$1."; }
alive() { tb_pidfile_alive "$C/node-$1.pid" "$(marker "$1")"; }
unseal_key() { tb_json "d['unseal_keys_b64'][0]" <"$C/init.json"; }
root_token() { tb_json "d['root_token']" <"$C/init.json"; }
health_code() { tb_http_code "$(addr "$1")/v1/sys/health"; }
seal_status() { tb_http "$(addr "$1")/v1/sys/seal-status"; }

answers() { [[ "$(tb_http_code "$(addr "$1")/v1/sys/seal-status")" == 200 ]]; }
unsealed() { [[ "$(seal_status "$1" | tb_json "d['sealed']" 2>/dev/null)" == false ]]; }
serving() { local c; c="$(health_code "$1")"; [[ "$c" == 200 || "$c" == 429 ]]; }
active() { [[ "$(health_code "$1")" == 200 ]]; }

# Start node N with version V exactly as the contract says (README "OpenBao layout").
start_process() {
  local n="$1" v="$2" bin
  bin="$(bao_bin "$v")"
  [[ -x "$bin" ]] || tb_die "no bao binary for $v; run testbeds/install.sh"
  if alive "$n"; then tb_die "node $n is already running (pid $(cat "$C/node-$n.pid"))"; fi
  nohup "$bin" server -config="$C/node-$n.hcl" >>"$C/node-$n.log" 2>&1 </dev/null &
  echo $! >"$C/node-$n.pid"
  echo "$v" >"$C/node-$n.version"
}

# Unseal node N: wait until it answers, PUT the key, wait until it is unsealed (re-sending the
# key every 3 s: a node that is still joining the Raft cluster may take it before it is ready).
do_unseal() {
  local n="$1" key
  key="$(unseal_key)"
  tb_wait 30 "node $n to answer on $(addr "$n")" answers "$n" || fail_node "$n"
  for _ in $(seq 1 20); do
    if unsealed "$n"; then return 0; fi
    alive "$n" || fail_node "$n"
    curl -s -o /dev/null --connect-timeout 1 --max-time 5 -X PUT \
      -d "{\"key\":\"$key\"}" "$(addr "$n")/v1/sys/unseal" || true
    tb_wait 3 "node $n to unseal" unsealed "$n" 2>/dev/null && return 0
  done
  tb_log "node $n still sealed after 60 s"
  fail_node "$n"
}

# Wait until node N answers and PUT the unseal key once (do_unseal then waits and re-sends).
send_key() {
  tb_wait 30 "node $1 to answer on $(addr "$1")" answers "$1" || fail_node "$1"
  curl -s -o /dev/null --connect-timeout 1 --max-time 5 -X PUT \
    -d "{\"key\":\"$(unseal_key)\"}" "$(addr "$1")/v1/sys/unseal" || true
}

fail_node() {
  tb_check_port_clash "$C/node-$1.log"
  alive "$1" || tb_log "node $1 is not running"
  tb_tail_log "$C/node-$1.log"
  tb_die "node $1 did not come up"
}

autopilot_ok() { # expected voters
  local want="$1" ft_min=$(( ($1 - 1) / 2 )) body n
  for n in $(seq 1 "$NODES"); do
    alive "$n" || continue
    body="$(tb_http "$(addr "$n")/v1/sys/storage/raft/autopilot/state" -H "X-Vault-Token: $(root_token)" 2>/dev/null)" || continue
    [[ "$(tb_json "
(lambda s: s['healthy'] and s['failure_tolerance'] >= $ft_min
 and sum(1 for v in s['servers'].values() if v.get('status') in ('leader', 'voter') and v.get('healthy')) == $want)(d['data'])" <<<"$body" 2>/dev/null)" == true ]] && return 0
  done
  return 1
}

wait_healthy() { # timeout
  tb_wait "$1" "autopilot to report healthy with $NODES voters" autopilot_ok "$NODES"
}

cmd_create() {
  tb_create_args 1 "$@"
  local dir="$CREATE_DIR" version="$CREATE_VERSION" nodes="$CREATE_NODES"
  [[ -n "$version" ]] || tb_die "create needs --version (2.6.2 or 2.7.2)"
  version="$(bao_version_norm "$version")"
  TB_NEED="BAO_262 BAO_272" source "$HERE/paths.sh" || exit 1
  local t0; t0=$(tb_now)
  C="$(tb_abs "$dir")"
  tb_new_cluster_dir "$C" openbao
  NODES="$nodes"

  local ports n
  read -r -a ports <<<"$(tb_free_ports $(( 2 * nodes )))"
  {
    echo "# OpenBao testbed cluster, written by testbeds/openbao.sh create"
    echo "KIND=openbao"
    echo "CLUSTER=$C"
    echo "NODES=$nodes"
    echo "BAO_BIN_2_6_2=$BAO_262"
    echo "BAO_BIN_2_7_2=$BAO_272"
    for n in $(seq 1 "$nodes"); do
      echo "API_PORT_$n=${ports[$(( 2 * n - 2 ))]}"
      echo "CLUSTER_PORT_$n=${ports[$(( 2 * n - 1 ))]}"
      echo "BAO_ADDR_$n=http://127.0.0.1:${ports[$(( 2 * n - 2 ))]}"
    done
  } >"$C/cluster.env"
  # shellcheck disable=SC1091
  source "$C/cluster.env"

  local api cport m
  for n in $(seq 1 "$nodes"); do
    api="API_PORT_$n"; cport="CLUSTER_PORT_$n"
    mkdir -p "$C/node-$n/data"
    {
      echo "ui            = false"
      echo "api_addr      = \"http://127.0.0.1:${!api}\""
      echo "cluster_addr  = \"https://127.0.0.1:${!cport}\""
      echo
      echo "storage \"raft\" {"
      echo "  path    = \"$C/node-$n/data\""
      echo "  node_id = \"node-$n\""
      echo "  # Raft timing as recommended for production (the default 5 makes a lone node wait ~8 s"
      echo "  # before electing itself, and a failover take 5-10 s)."
      echo "  performance_multiplier = 1"
      for m in $(seq 1 "$nodes"); do
        echo "  retry_join {"
        echo "    leader_api_addr = \"$(addr "$m")\""
        echo "  }"
      done
      echo "}"
      echo
      echo "listener \"tcp\" {"
      echo "  address         = \"127.0.0.1:${!api}\""
      echo "  cluster_address = \"127.0.0.1:${!cport}\""
      echo "  tls_disable     = true"
      echo "}"
    } >"$C/node-$n.hcl"
    # The same start as the contract line, as a file a driver can run:
    #   nohup bash node-N.cmd >> node-N.log 2>&1 < /dev/null & echo $! > node-N.pid
    cat >"$C/node-$n.cmd" <<EOF
#!/usr/bin/env bash
# Starts OpenBao node $n with the version named in node-$n.version (written by testbeds/openbao.sh).
set -euo pipefail
source "$C/cluster.env"
v="\$(cat "$C/node-$n.version")"
bin_var="BAO_BIN_\${v//./_}"
[[ -n "\${!bin_var:-}" ]] || { echo "node-$n.cmd: no binary for OpenBao version '\$v'" >&2; exit 1; }
exec "\${!bin_var}" server -config="$C/node-$n.hcl"
EOF
  done

  # From here on a failure stops whatever was started (the directory stays for inspection).
  trap 'rc=$?; if (( rc != 0 )); then for k in $(seq 1 '"$nodes"'); do tb_stop_pidfile "$C/node-$k.pid" "$C/node-$k." 10 "node $k" || true; done; tb_log "create failed; left $C for inspection (openbao.sh destroy $C removes it)"; fi' EXIT

  # Node 1 alone first: while uninitialised it runs retry_join against the others, which only
  # slows `operator init` down; the others join once node 1 is active.
  start_process 1 "$version"
  tb_wait 30 "node 1 to answer on $(addr 1)" answers 1 || fail_node 1
  tb_log "node 1 answering after $(tb_since "$t0")s; initialising"

  local init_out
  init_out="$(BAO_ADDR="$(addr 1)" "$(bao_bin "$version")" operator init -key-shares=1 -key-threshold=1 -format=json)" \
    || { tb_tail_log "$C/node-1.log"; tb_die "bao operator init failed"; }
  (umask 077; printf '%s\n' "$init_out" >"$C/init.json")
  chmod 600 "$C/init.json"

  do_unseal 1
  tb_wait 60 "node 1 to become active" active 1 || fail_node 1
  tb_log "node 1 active after $(tb_since "$t0")s; starting and unsealing the others"
  for n in $(seq 2 "$nodes"); do start_process "$n" "$version"; done
  for n in $(seq 2 "$nodes"); do send_key "$n"; done
  for n in $(seq 2 "$nodes"); do do_unseal "$n"; done
  tb_log "all nodes unsealed after $(tb_since "$t0")s; waiting for autopilot (voters after ~10 s stabilisation)"
  for n in $(seq 1 "$nodes"); do tb_wait 60 "node $n to serve" serving "$n" || fail_node "$n"; done
  wait_healthy 120 || { cmd_status_body; tb_die "cluster did not become healthy"; }
  trap - EXIT

  echo "OpenBao $version cluster with $nodes nodes ready in $(tb_since "$t0")s at $C"
  cmd_status_body
  echo "leader: node $(leader_n)"
  echo "root token and unseal key: $C/init.json"
}

leader_n() {
  local n
  for n in $(seq 1 "$NODES"); do
    if alive "$n" && active "$n"; then echo "$n"; return 0; fi
  done
  return 1
}

cmd_status_body() {
  local n pid run ver sealed code role body
  printf '%-5s %-8s %-8s %-9s %-7s %-7s %s\n' NODE PID RUNNING VERSION SEALED HEALTH ROLE
  for n in $(seq 1 "$NODES"); do
    pid="$(tb_pidfile_pid "$C/node-$n.pid")"
    if alive "$n"; then run=yes; else run=no; fi
    ver="-"; sealed="-"
    if body="$(seal_status "$n" 2>/dev/null)" && [[ -n "$body" ]]; then
      ver="$(tb_json "d.get('version')" <<<"$body" 2>/dev/null || echo "?")"
      sealed="$(tb_json "d.get('sealed')" <<<"$body" 2>/dev/null || echo "?")"
    fi
    code="$(health_code "$n")"
    case "$code" in
      200) role=active ;; 429) role=standby ;; 503) role=sealed ;; 501) role=uninitialised ;;
      000) role=down ;; *) role="?" ;;
    esac
    printf '%-5s %-8s %-8s %-9s %-7s %-7s %s\n' "$n" "${pid:--}" "$run" "${ver:--}" "$sealed" "$code" "$role"
  done
  if [[ -f "$C/init.json" ]]; then
    for n in $(seq 1 "$NODES"); do
      alive "$n" || continue
      body="$(tb_http "$(addr "$n")/v1/sys/storage/raft/autopilot/state" -H "X-Vault-Token: $(root_token)" 2>/dev/null)" || continue
      tb_json "(lambda s: 'autopilot: healthy=%s failure_tolerance=%s leader=%s voters=%s' % (str(s['healthy']).lower(), s['failure_tolerance'], s['leader'], ','.join(sorted(k for k, v in s['servers'].items() if v.get('status') in ('leader', 'voter')))))(d['data'])" <<<"$body" 2>/dev/null && break
    done
  fi
}

node_args() { # CLUSTER N [--version V] -> sets N VERSION_ARG
  [[ $# -ge 2 ]] || usage
  load_cluster "$1"; N="$2"; check_node "$N"; shift 2
  VERSION_ARG=""
  while (( $# )); do
    case "$1" in
      --version) VERSION_ARG="$(bao_version_norm "${2:?--version needs a value}")"; shift 2 ;;
      *) tb_die "unexpected argument $1" ;;
    esac
  done
}

cmd_stop() {
  node_args "$@"
  tb_stop_pidfile "$C/node-$N.pid" "$(marker "$N")" 30 "node $N"
}

cmd_start() {
  node_args "$@"
  BAO_262="$BAO_BIN_2_6_2" BAO_272="$BAO_BIN_2_7_2"
  local v="${VERSION_ARG:-$(cat "$C/node-$N.version")}" t0
  t0=$(tb_now)
  start_process "$N" "$v"
  do_unseal "$N"
  tb_wait 60 "node $N to answer 200/429 on /v1/sys/health" serving "$N" || fail_node "$N"
  echo "node $N running OpenBao $v (pid $(cat "$C/node-$N.pid")), unsealed and serving in $(tb_since "$t0")s"
}

cmd_restart() {
  node_args "$@"
  local v="${VERSION_ARG:-$(cat "$C/node-$N.version")}"
  cmd_stop "$C" "$N"
  cmd_start "$C" "$N" --version "$v"
}

case "${1:-}" in
  create) shift; cmd_create "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  start) shift; cmd_start "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  is-running)
    shift; node_args "$@"
    if alive "$N"; then echo "node $N running (pid $(cat "$C/node-$N.pid"))"; exit 0; fi
    echo "node $N not running"; exit 1 ;;
  unseal)
    shift; node_args "$@"
    alive "$N" || tb_die "node $N is not running"
    do_unseal "$N"; echo "node $N unsealed" ;;
  status) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; cmd_status_body ;;
  leader)
    shift; [[ $# == 1 ]] || usage; load_cluster "$1"
    leader_n || tb_die "no active node in $C" ;;
  wait-healthy)
    shift; [[ $# -ge 1 ]] || usage; load_cluster "$1"; shift
    timeout=120
    [[ "${1:-}" == --timeout ]] && timeout="${2:?--timeout needs seconds}"
    wait_healthy "$timeout" || exit 1
    echo "healthy" ;;
  env)
    shift; [[ $# == 1 ]] || usage; load_cluster "$1"
    n="$(leader_n)" || tb_die "no active node in $C"
    echo "export BAO_ADDR=$(addr "$n") BAO_TOKEN=$(root_token)" ;;
  destroy)
    shift; [[ $# == 1 ]] || usage
    C="$(tb_abs "$1")"
    if [[ ! -e "$C" ]]; then echo "$C does not exist"; exit 0; fi
    load_cluster "$C"
    for n in $(seq 1 "$NODES"); do tb_stop_pidfile "$C/node-$n.pid" "$(marker "$n")" 30 "node $n"; done
    tb_destroy_dir "$C" openbao
    echo "destroyed $C" ;;
  ""|-h|--help|help) usage ;;
  *) tb_die "unknown command '$1' (try --help)" ;;
esac
