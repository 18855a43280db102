#!/usr/bin/env bash
# Smoke test of the testbed scripts against the real servers (needs testbeds/install.sh first).
# Creates one cluster of each kind in parallel under a temporary directory, exercises each once,
# destroys them all (also on failure or Ctrl-C), and ends with "smoke: N passed, N failed".
# About 35-45 s on a 2-core machine.
#
#   testbeds/smoke.sh [--dir DIR]    (DIR: where clusters go; default a mktemp -d under /tmp)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE=""
if [[ "${1:-}" == --dir ]]; then BASE="${2:?--dir needs a directory}"; mkdir -p "$BASE"; fi
[[ -n "$BASE" ]] || BASE="$(mktemp -d /tmp/runbook-smoke.XXXXXX)"
chmod 755 "$BASE"   # postgres.sh runs the server as runbook-pg, which must reach it

TB_NEED="" source "$HERE/paths.sh"
_tb_paths_check

cleanup() {
  "$HERE/openbao.sh" destroy "$BASE/openbao" >/dev/null 2>&1 || true
  "$HERE/etcd.sh" destroy "$BASE/etcd" >/dev/null 2>&1 || true
  "$HERE/nats.sh" destroy "$BASE/nats" >/dev/null 2>&1 || true
  "$HERE/postgres.sh" destroy "$BASE/pg" >/dev/null 2>&1 || true
  rm -f "$BASE"/*.out
  rmdir "$BASE" 2>/dev/null || true
}
trap cleanup EXIT

openbao_case() {
  local C="$BASE/openbao" l
  "$HERE/openbao.sh" create "$C" --version 2.6.2
  eval "$("$HERE/openbao.sh" env "$C")"
  l="$("$HERE/openbao.sh" leader "$C")"
  BAO_ADDR="$BAO_ADDR" BAO_TOKEN="$BAO_TOKEN" "$BAO_262" operator step-down
  "$HERE/openbao.sh" restart "$C" "$l" --version 2.7.2
  "$HERE/openbao.sh" wait-healthy "$C" --timeout 60
  source "$C/cluster.env"
  local v; v="$(curl -s "$(eval echo "\$BAO_ADDR_$l")/v1/sys/seal-status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')"
  [[ "$v" == 2.7.2 ]] || { echo "node $l reports version $v, want 2.7.2"; return 1; }
  "$HERE/openbao.sh" status "$C"
}

etcd_case() {
  local C="$BASE/etcd" l
  "$HERE/etcd.sh" create "$C"
  source "$C/cluster.env"
  ETCDCTL_API=3 "$ETCDCTL" --endpoints "$ETCD_ENDPOINTS" put smoke ok
  l="$("$HERE/etcd.sh" leader "$C")"
  "$HERE/etcd.sh" restart "$C" "$l"
  [[ "$(ETCDCTL_API=3 "$ETCDCTL" --endpoints "$ETCD_ENDPOINTS" get smoke --print-value-only)" == ok ]]
  "$HERE/etcd.sh" status "$C"
}

nats_case() {
  local C="$BASE/nats" ml n msgs
  "$HERE/nats.sh" create "$C" --version 2.9
  "$HERE/nats.sh" request "$C" '$JS.API.STREAM.CREATE.SMOKE' '{"name":"SMOKE","subjects":["smoke.>"],"num_replicas":3}' >/dev/null
  "$HERE/nats.sh" request "$C" smoke.one hello >/dev/null
  ml="$("$HERE/nats.sh" meta-leader "$C")"
  "$HERE/nats.sh" request "$C" '$JS.API.META.LEADER.STEPDOWN' '' --system >/dev/null
  for n in 1 2 3; do "$HERE/nats.sh" restart "$C" "$n" --version 2.15; done
  # /healthz is ok on every node by now, yet the JetStream API may not answer for a few seconds
  # while the meta group settles (seen once in five runs): ask up to 4 times (5 s time-out each).
  local info="" try
  for try in 1 2 3 4; do
    info="$("$HERE/nats.sh" request "$C" '$JS.API.STREAM.INFO.SMOKE')" && break
    echo "stream info attempt $try got no answer"
  done
  msgs="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["state"]["messages"])' "$info")"
  [[ "$msgs" == 1 ]] || { echo "stream SMOKE has $msgs messages after the upgrade, want 1 (meta leader was n$ml)"; return 1; }
  "$HERE/nats.sh" status "$C"
}

pg_case() {
  local D="$BASE/pg"
  "$HERE/postgres.sh" create "$D"
  "$HERE/postgres.sh" psql "$D" -q -c 'create table smoke(x int); insert into smoke values (42);'
  "$HERE/postgres.sh" stop "$D"
  "$HERE/postgres.sh" start "$D"
  [[ "$("$HERE/postgres.sh" psql "$D" -Atc 'select x from smoke')" == 42 ]]
}

declare -A PIDS
for c in openbao etcd nats pg; do
  ( set -e; "${c}_case" ) >"$BASE/$c.out" 2>&1 &
  PIDS[$c]=$!
done
passed=0 failed=0
for c in openbao etcd nats pg; do
  if wait "${PIDS[$c]}"; then
    echo "ok   $c"; passed=$((passed + 1))
  else
    echo "FAIL $c"; sed 's/^/    /' "$BASE/$c.out"; failed=$((failed + 1))
  fi
done
echo "smoke: $passed passed, $failed failed"
(( failed == 0 ))
