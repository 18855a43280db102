#!/usr/bin/env bash
# Smoke test of the testbed scripts against the real servers (needs testbeds/install.sh first).
# Creates one cluster of each kind in parallel under a temporary directory, exercises each once,
# destroys them all (also on failure or Ctrl-C), and ends with "smoke: N passed, N failed".
# openbao, etcd, nats and pg take 35-45 s on a 2-core machine; kubernetes and cassandra take
# longer (see testbeds/README.md).
#
#   testbeds/smoke.sh [--dir DIR] [CASE...]
#     DIR: where clusters go (default a mktemp -d under /tmp)
#     CASE: openbao etcd nats pg kubernetes cassandra (default: all of them)
#     SMOKE_CASSANDRA_NODES=3 makes the cassandra case use three nodes (default 1)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE=""
if [[ "${1:-}" == --dir ]]; then BASE="${2:?--dir needs a directory}"; mkdir -p "$BASE"; shift 2; fi
ALL_CASES=(openbao etcd nats pg kubernetes cassandra)
CASES=("$@")
[[ ${#CASES[@]} -gt 0 ]] || CASES=("${ALL_CASES[@]}")
for c in "${CASES[@]}"; do
  [[ " ${ALL_CASES[*]} " == *" $c "* ]] || { echo "smoke.sh: unknown case '$c' (${ALL_CASES[*]})" >&2; exit 2; }
done
[[ -n "$BASE" ]] || BASE="$(mktemp -d /tmp/runbook-smoke.XXXXXX)"
chmod 755 "$BASE"   # postgres.sh runs the server as runbook-pg, which must reach it

TB_NEED="" source "$HERE/paths.sh"
# What each case needs installed.
declare -A NEEDS=(
  [openbao]="BAO_262 BAO_272" [etcd]="ETCD ETCDCTL" [nats]="NATS_29 NATS_215" [pg]="PG_BINDIR"
  [kubernetes]="KUBE_APISERVER KUBE_CONTROLLER_MANAGER KUBE_SCHEDULER KUBECTL ETCD36 KWOK KWOK_STAGES KWOK_CRDS HELM"
  [cassandra]="CASSANDRA_HOME JAVA CQLSH"
)
TB_NEED=""
for c in "${CASES[@]}"; do TB_NEED+=" ${NEEDS[$c]}"; done
_tb_paths_check

cleanup() {
  "$HERE/openbao.sh" destroy "$BASE/openbao" >/dev/null 2>&1 || true
  "$HERE/etcd.sh" destroy "$BASE/etcd" >/dev/null 2>&1 || true
  "$HERE/nats.sh" destroy "$BASE/nats" >/dev/null 2>&1 || true
  "$HERE/postgres.sh" destroy "$BASE/pg" >/dev/null 2>&1 || true
  "$HERE/kubernetes.sh" destroy "$BASE/kubernetes" >/dev/null 2>&1 || true
  "$HERE/cassandra.sh" destroy "$BASE/cassandra" >/dev/null 2>&1 || true
  rm -rf "$BASE/chart" "$BASE/node"
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

# kubectl against the smoke cluster; every call bounded.
k() { "$KUBECTL" --kubeconfig "$BASE/kubernetes/kubeconfig" --request-timeout=30s "$@"; }
# until_ok SECONDS DESCRIPTION CMD...: polls CMD every 0.5 s.
until_ok() {
  local secs="$1" desc="$2"; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || { echo "timed out after ${secs}s waiting for $desc"; return 1; }
    sleep 0.5
  done
}
# "name node phase ready image" per pod of SELECTOR in NAMESPACE
pods_of() { # selector [namespace]
  k get pods -n "${2:-default}" -l "$1" -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.spec.containers[0].image}{"\n"}{end}'
}
# COUNT pods of SELECTOR, each Running, Ready and on a kwok node.
all_running_on_kwok() { # selector count [namespace]
  local out; out="$(pods_of "$1" "${3:-default}")" || return 1
  [[ "$(grep -c . <<<"$out")" == "$2" ]] || return 1
  ! grep -vqE '^[^ ]+ kwok-node-[0-9]+ Running True ' <<<"$out"
}
# "db-0=IMAGE:READY db-1=… " for the StatefulSet's pods, sorted
sts_images() {
  k get pods -l app=db -o jsonpath='{range .items[*]}{.metadata.name}={.spec.containers[0].image}:{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | sort | tr '\n' ' '
}
sts_images_are() { [[ "$(sts_images)" == "$1" ]]; }
exec_runs_in() { [[ "$(k exec "$1" -- pwd)" == "$2" ]]; } # pod dir
ns_gone() { ! k get namespace stuck >/dev/null 2>&1; }
ns_finalizers_remaining() {
  [[ "$(k get namespace stuck -o jsonpath='{.status.phase} {.status.conditions[?(@.type=="NamespaceFinalizersRemaining")].status}')" == "Terminating True" ]]
}

kubernetes_case() {
  local C="$BASE/kubernetes" v alice out
  "$HERE/kubernetes.sh" create "$C" --nodes 3 --agent-node agent-1
  source "$C/cluster.env"

  # The API server is the version built, the kwok nodes are Ready, the agent node is not kwok's.
  v="$(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
  [[ "$v" == "$KUBE_VERSION" ]] || { echo "server version $v, want $KUBE_VERSION"; return 1; }
  echo "server version $v"
  k get nodes
  [[ "$(k get nodes -l runbook.testbed/kwok=true -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')" == 3 ]] \
    || { echo "want 3 Ready kwok nodes"; return 1; }
  [[ "$(k get node agent-1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" != True ]] \
    || { echo "agent-1 is Ready, yet nothing runs it"; return 1; }

  # RBAC is on: a user without a binding is refused.
  alice="$("$HERE/kubernetes.sh" user "$C" alice --group smoke-users)"
  if out="$("$KUBECTL" --kubeconfig "$alice" get pods -n default 2>&1)"; then
    echo "alice (no RoleBinding) could list pods: $out"; return 1
  fi
  grep -q 'Forbidden' <<<"$out" || { echo "alice: want Forbidden, got: $out"; return 1; }
  echo "alice without a RoleBinding: $out"

  # Deployment -> ReplicaSet -> pods, Running and Ready on kwok nodes (not on the tainted agent-1).
  k create deployment web --image=registry.local/web:1 --replicas=3
  k rollout status deployment/web --timeout=90s
  until_ok 60 "3 web pods Running/Ready on kwok nodes" all_running_on_kwok app=web 3
  pods_of app=web

  # StatefulSet: the controller creates db-0..2, then honours the partition.
  k apply -f - <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "registry.local/db:1"}]
EOF
  until_ok 90 "3 db pods Running/Ready on kwok nodes" all_running_on_kwok app=db 3
  local held="db-0=registry.local/db:1:True db-1=registry.local/db:1:True db-2=registry.local/db:2:True "
  local all="db-0=registry.local/db:2:True db-1=registry.local/db:2:True db-2=registry.local/db:2:True "
  k set image statefulset/db db=registry.local/db:2
  until_ok 90 "db-2 on the new image, db-0 and db-1 held back by partition 2" sts_images_are "$held"
  sleep 3   # time for the controller to go wrong: db-0 and db-1 must stay on :1
  sts_images_are "$held" || { echo "partition not honoured: $(sts_images)"; return 1; }
  echo "statefulset with partition 2: $(sts_images)"
  k patch statefulset db -p '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}'
  until_ok 120 "every db pod on the new image" sts_images_are "$all"
  k rollout status statefulset/db --timeout=60s
  echo "statefulset after partition 2 then 0: $(sts_images)"

  # exec and logs reach kwok through the API server: a local command in the directory an Exec
  # object names, the file a Logs object names.
  local web; web="$(k get pods -l app=web -o jsonpath='{.items[0].metadata.name}')"
  mkdir -p "$BASE/node"
  printf '%s stdout F hello from the node\n' "$(date -u +%Y-%m-%dT%H:%M:%S.000000000Z)" >"$BASE/node/web.log"
  k apply -f - <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Exec
metadata: {name: $web, namespace: default}
spec: {execs: [{local: {workDir: "$BASE/node"}}]}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata: {name: $web, namespace: default}
spec: {logs: [{logsFile: "$BASE/node/web.log"}]}
EOF
  until_ok 30 "kubectl exec in $web to run in $BASE/node" exec_runs_in "$web" "$BASE/node"
  out="$(k logs "$web" 2>&1)"
  [[ "$out" == "hello from the node" ]] || { echo "kubectl logs $web: $out"; return 1; }
  echo "exec and logs of $web served by kwok"

  # Job: kwok runs its pod to Succeeded, the Job controller marks the Job Complete.
  k create job once --image=registry.local/once:1
  k wait --for=condition=Complete job/once --timeout=90s

  # A namespace holding an object whose finalizer nobody clears stays Terminating.
  k create namespace stuck
  k apply -n stuck -f - <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: held, finalizers: [runbook.test/never]}
data: {k: v}
EOF
  k delete namespace stuck --wait=false
  until_ok 90 "namespace stuck Terminating with NamespaceFinalizersRemaining" ns_finalizers_remaining
  sleep 3
  ns_finalizers_remaining || { echo "namespace stuck no longer waits on the finalizer"; return 1; }
  k patch configmap held -n stuck --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]'
  until_ok 90 "namespace stuck to be gone once the finalizer is removed" ns_gone
  echo "namespace stuck: Terminating while the finalizer stayed, gone once it was removed"

  # Helm installs a chart (the one `helm create` writes: Deployment, Service, ServiceAccount).
  "$HELM" create "$BASE/chart" >/dev/null
  KUBECONFIG="$C/kubeconfig" "$HELM" install smoke "$BASE/chart" --namespace apps --create-namespace \
    --set image.repository=registry.local/app --set image.tag=1 --wait --timeout 120s
  v="$(KUBECONFIG="$C/kubeconfig" "$HELM" status smoke -n apps -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["status"])')"
  [[ "$v" == deployed ]] || { echo "helm release smoke is $v, want deployed"; return 1; }
  until_ok 60 "the chart's pod Running/Ready" all_running_on_kwok app.kubernetes.io/instance=smoke 1 apps
  KUBECONFIG="$C/kubeconfig" "$HELM" uninstall smoke -n apps --wait --timeout 60s

  "$HERE/kubernetes.sh" status "$C"
  "$HERE/kubernetes.sh" destroy "$C"
  if pgrep -f "$C/" >/dev/null; then echo "processes left after destroy: $(pgrep -af "$C/")"; return 1; fi
}

cassandra_case() {
  local C="$BASE/cassandra" n="${SMOKE_CASSANDRA_NODES:-1}" out
  "$HERE/cassandra.sh" create "$C" --nodes "$n"
  out="$("$HERE/cassandra.sh" nodetool "$C" status)"
  echo "$out"
  [[ "$(grep -c '^UN ' <<<"$out")" == "$n" ]] || { echo "want $n UN nodes"; return 1; }
  out="$("$HERE/cassandra.sh" cqlsh "$C" -e "
    CREATE KEYSPACE smoke WITH replication = {'class': 'SimpleStrategy', 'replication_factor': $n};
    CREATE TABLE smoke.kv (k text PRIMARY KEY, v text);
    CONSISTENCY ALL;
    INSERT INTO smoke.kv (k, v) VALUES ('answer', 'forty-two');
    SELECT v FROM smoke.kv WHERE k = 'answer';" 2>&1)"
  echo "$out"
  grep -q 'forty-two' <<<"$out" || { echo "cqlsh did not read the row back"; return 1; }
  "$HERE/cassandra.sh" destroy "$C"
  if pgrep -f "$C/" >/dev/null; then echo "processes left after destroy: $(pgrep -af "$C/")"; return 1; fi
}

declare -A PIDS
for c in "${CASES[@]}"; do
  ( set -e; "${c}_case" ) >"$BASE/$c.out" 2>&1 &
  PIDS[$c]=$!
done
passed=0 failed=0
for c in "${CASES[@]}"; do
  if wait "${PIDS[$c]}"; then
    echo "ok   $c"; passed=$((passed + 1))
  else
    echo "FAIL $c"; sed 's/^/    /' "$BASE/$c.out"; failed=$((failed + 1))
  fi
done
echo "smoke: $passed passed, $failed failed"
(( failed == 0 ))
