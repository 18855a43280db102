#!/usr/bin/env bash
# A local Kubernetes control plane on 127.0.0.1 for end-to-end tests: etcd, kube-apiserver
# (RBAC), kube-controller-manager, kube-scheduler (all built from the published Go modules by
# kubernetes-install.sh) and kwok, which plays the kubelet of a few fake nodes (pods on them
# become Running and Ready, Job pods Succeed; `exec` runs a local command and `logs` reads a
# local file, as a kwok Exec or Logs object for the pod says). No container runtime, no kubelet.
#
#   kubernetes.sh create CLUSTER [--nodes N] [--agent-node NAME]
#                                  N kwok nodes kwok-node-1..N (default 3, 1..9); --agent-node
#                                  also creates Node NAME that kwok does not manage (for a node agent)
#   kubernetes.sh status CLUSTER   (processes, health, server version, nodes)
#   kubernetes.sh env CLUSTER      (export KUBECONFIG=CLUSTER/kubeconfig)
#   kubernetes.sh kubectl CLUSTER ARGS...
#   kubernetes.sh user CLUSTER NAME [--group G]...
#                                  client certificate for user NAME (no rights unless RBAC grants
#                                  them); prints the path of its kubeconfig, CLUSTER/users/NAME.kubeconfig
#   kubernetes.sh destroy CLUSTER
#
# Layout (see testbeds/README.md): CLUSTER/cluster.env  CLUSTER/kubeconfig (cluster-admin)
# CLUSTER/pki/  CLUSTER/<member>.cmd|.pid|.log for etcd kube-apiserver kube-controller-manager
# kube-scheduler kwok  CLUSTER/etcd.data/
set -euo pipefail

TB_NAME="kubernetes.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() { sed -n '2,20p' "$0" >&2; exit 2; }

# Start order; destroy stops them in reverse.
MEMBERS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.1/16
KWOK_NODE_ANNOTATION="kwok.x-k8s.io/node=fake"
# The kwok CRDs installed (from KWOK_CRDS) and watched by kwok.
KWOK_ENABLED_CRDS="Exec,ClusterExec,Logs,ClusterLogs"
AGENT_TAINT_KEY="runbook.testbed/agent-node"

load_cluster() { tb_load_cluster "$1" kubernetes; }
# Each member's command line names a file CLUSTER/<member>.* (its data dir, kubeconfig or cert),
# so "CLUSTER/<member>." tells it from any other process.
marker() { echo "$C/$1."; }
alive() { tb_pidfile_alive "$C/$1.pid" "$(marker "$1")"; }

kc() { "$KUBECTL" --kubeconfig "$C/kubeconfig" --request-timeout=20s "$@"; }

# ------------------------------------------------------------------ certificates
# One CA signs everything: serving certificates, client certificates (the API server's
# --client-ca-file), and CSRs through the controller-manager's signer. ECDSA P-256 keys: quick to
# make, and every component here takes them.
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

make_ca() {
  new_key "$C/pki/ca.key"
  openssl req -x509 -new -key "$C/pki/ca.key" -subj "/CN=runbook-testbed-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$C/pki/ca.crt" 2>/dev/null
}

# issue NAME SUBJECT EXT_KEY_USAGE [SAN]: CLUSTER/pki/NAME.key and NAME.crt signed by the CA.
issue() {
  local name="$1" subj="$2" eku="$3" san="${4:-}" ext
  new_key "$C/pki/$name.key"
  ext="$(mktemp)"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -key "$C/pki/$name.key" -subj "$subj" 2>/dev/null \
    | openssl x509 -req -CA "$C/pki/ca.crt" -CAkey "$C/pki/ca.key" -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
        -days 3650 -extfile "$ext" -out "$C/pki/$name.crt" 2>/dev/null
  rm -f "$ext"
  [[ -s "$C/pki/$name.crt" ]] || tb_die "openssl could not issue the certificate $name"
}

# kubeconfig FILE USER CERT_NAME: a kubeconfig with the CA and the client certificate embedded.
kubeconfig() {
  local file="$1" user="$2" cert="$3"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: runbook-testbed
  cluster:
    server: $API_SERVER
    certificate-authority-data: $(base64 -w0 <"$C/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$C/pki/$cert.crt")
    client-key-data: $(base64 -w0 <"$C/pki/$cert.key")
contexts:
- name: $user@runbook-testbed
  context:
    cluster: runbook-testbed
    user: $user
current-context: $user@runbook-testbed
EOF
  chmod 600 "$file"
}

make_pki() {
  mkdir -p "$C/pki"
  chmod 700 "$C/pki"
  make_ca
  issue kube-apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP"
  # The API server's client identity towards the "kubelets" (kwok's server): logs, exec.
  issue kube-apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  # system:masters is bound to the cluster-admin ClusterRole (and passes every authorizer).
  issue admin "/O=system:masters/CN=kubernetes-admin" clientAuth
  # The aggregation layer's front proxy (kubeadm's front-proxy-client); without it the
  # controller-manager and scheduler log "missing content for CA bundle" over and over.
  issue front-proxy-client "/CN=front-proxy-client" clientAuth
  # The built-in RBAC policy grants these identities exactly what the components need.
  issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # kwok writes node and pod status, leases and events for every node it manages: cluster-admin.
  issue kwok-client "/O=system:masters/CN=kwok" clientAuth
  issue kwok-serving "/CN=kwok" serverAuth "IP:127.0.0.1,DNS:localhost"
  # Service-account tokens: signed by the API server (TokenRequest) and the token controller.
  new_key "$C/pki/sa.key"
  openssl pkey -in "$C/pki/sa.key" -pubout -out "$C/pki/sa.pub" 2>/dev/null
  # The serving certificate sits beside the other kube-apiserver.* files: its path on the
  # command line is what tells the API server's process from others (see marker).
  mv "$C/pki/kube-apiserver.crt" "$C/pki/kube-apiserver.key" "$C/"
  kubeconfig "$C/kubeconfig" kubernetes-admin admin
  kubeconfig "$C/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager
  kubeconfig "$C/kube-scheduler.kubeconfig" system:kube-scheduler kube-scheduler
  kubeconfig "$C/kwok.kubeconfig" kwok kwok-client
}

# ------------------------------------------------------------------ members
write_cmd() { # member command...
  local m="$1"; shift
  {
    echo "#!/usr/bin/env bash"
    echo "# Starts $m (written by testbeds/kubernetes.sh). Run it in the background:"
    echo "#   nohup bash $C/$m.cmd >> $C/$m.log 2>&1 < /dev/null & echo \$! > $C/$m.pid"
    echo "# It execs the server, so that pid is the server's."
    printf 'exec'
    printf ' %q' "$@"
    echo
  } >"$C/$m.cmd"
}

write_member_cmds() {
  write_cmd etcd "$ETCD36_BIN" --name default --data-dir "$C/etcd.data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --logger zap --log-level warn --log-outputs stderr

  write_cmd kube-apiserver "$KUBE_APISERVER_BIN" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$C/kube-apiserver.crt" --tls-private-key-file "$C/kube-apiserver.key" \
    --client-ca-file "$C/pki/ca.crt" \
    --requestheader-client-ca-file "$C/pki/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$C/pki/front-proxy-client.crt" --proxy-client-key-file "$C/pki/front-proxy-client.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$C/pki/sa.pub" --service-account-signing-key-file "$C/pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --kubelet-client-certificate "$C/pki/kube-apiserver-kubelet-client.crt" \
    --kubelet-client-key "$C/pki/kube-apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --endpoint-reconciler-type none \
    --profiling=false

  write_cmd kube-controller-manager "$KUBE_CONTROLLER_MANAGER_BIN" \
    --kubeconfig "$C/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$C/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$C/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
    --leader-elect=false --controllers '*' --use-service-account-credentials=true \
    --service-account-private-key-file "$C/pki/sa.key" --root-ca-file "$C/pki/ca.crt" \
    --cluster-signing-cert-file "$C/pki/ca.crt" --cluster-signing-key-file "$C/pki/ca.key" \
    --cluster-name runbook-testbed --service-cluster-ip-range "$SERVICE_CIDR" \
    --profiling=false

  write_cmd kube-scheduler "$KUBE_SCHEDULER_BIN" \
    --kubeconfig "$C/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$C/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$C/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false

  # --enable-crds: kwok serves `kubectl exec` and `kubectl logs` of a pod (the API server reaches
  # it as the node's kubelet on --node-port) from the Exec/ClusterExec and Logs/ClusterLogs
  # objects in the cluster, read as they change: a test creates one for its pod, naming a local
  # command's working directory or a log file. Without a matching object exec and logs fail
  # with kwok's "no exec found for container …".
  # kwok reads ~/.kwok/kwok.yaml too when it exists; a HOME of its own keeps it to ours.
  # --node-lease-duration-seconds: kwok renews each node's Lease in kube-node-lease as a kubelet
  # does (kwokctl's default, 40 s). Without it the node lifecycle controller saw no heartbeat and
  # marked every node NotReady each ~55 s, and the pods on them Ready=False for good, so
  # StatefulSets lost their ready replicas and `helm --wait` hung.
  mkdir -p "$C/kwok.home"
  write_cmd kwok env HOME="$C/kwok.home" "$KWOK_BIN" \
    --kubeconfig "$C/kwok.kubeconfig" --config "$C/kwok.yaml" --node-lease-duration-seconds 40 \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector "$KWOK_NODE_ANNOTATION" \
    --node-ip 127.0.0.1 --node-port "$KWOK_PORT" --server-address "127.0.0.1:$KWOK_PORT" \
    --tls-cert-file "$C/pki/kwok-serving.crt" --tls-private-key-file "$C/pki/kwok-serving.key" \
    --cidr "$POD_CIDR" --enable-crds "$KWOK_ENABLED_CRDS"
}

write_kwok_config() {
  local f first=1
  : >"$C/kwok.yaml"
  for f in "$KWOK_STAGES"/*.yaml; do
    [[ $first == 1 ]] || echo "---" >>"$C/kwok.yaml"
    first=0
    cat "$f" >>"$C/kwok.yaml"
  done
}

# Node objects: kwok manages the ones with its annotation; the agent node has none, so kwok
# leaves it (and its pods) alone. The agent node is tainted so that only pods that tolerate
# it (and select it) are scheduled there.
write_nodes() {
  local n
  : >"$C/nodes.yaml"
  for n in $(seq 1 "$KWOK_NODES"); do
    cat >>"$C/nodes.yaml" <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    runbook.testbed/kwok: "true"
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
---
EOF
  done
  if [[ -n "$AGENT_NODE" ]]; then
    cat >>"$C/nodes.yaml" <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $AGENT_NODE
  labels:
    kubernetes.io/hostname: $AGENT_NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    $AGENT_TAINT_KEY: "true"
spec:
  taints:
  - key: $AGENT_TAINT_KEY
    value: "$AGENT_NODE"
    effect: NoSchedule
status:
  allocatable: {cpu: "8", memory: 16Gi, pods: "110"}
  capacity: {cpu: "8", memory: 16Gi, pods: "110"}
EOF
  fi
}

# ------------------------------------------------------------------ health
etcd_healthy() { [[ "$(tb_http "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | tb_json "d.get('health')" 2>/dev/null)" == true ]]; }
https_code() { # port path [curl args]
  local port="$1" path="$2"; shift 2
  tb_http_code "https://127.0.0.1:$port$path" --cacert "$C/pki/ca.crt" "$@"
}
apiserver_ready() { [[ "$(https_code "$APISERVER_PORT" /readyz --cert "$C/pki/admin.crt" --key "$C/pki/admin.key")" == 200 ]]; }
controller_manager_healthy() { [[ "$(https_code "$CONTROLLER_MANAGER_PORT" /healthz -k)" == 200 ]]; }
scheduler_healthy() { [[ "$(https_code "$SCHEDULER_PORT" /healthz -k)" == 200 ]]; }
kwok_healthy() { [[ "$(https_code "$KWOK_PORT" /healthz)" == 200 ]]; }
member_healthy() {
  case "$1" in
    etcd) etcd_healthy ;;
    kube-apiserver) apiserver_ready ;;
    kube-controller-manager) controller_manager_healthy ;;
    kube-scheduler) scheduler_healthy ;;
    kwok) kwok_healthy ;;
  esac
}
# Running and healthy; fails at once (with its log) when the process has died. Right after the
# fork the child is still a copy of this script (its command line not yet the member's): that is
# "not up yet", not "died" — under load the first check can land in that instant.
member_up() {
  if ! alive "$1"; then
    tb_pid_alive "$(tb_pidfile_pid "$C/$1.pid")" "" && return 1
    fail_member "$1"
  fi
  member_healthy "$1"
}
fail_member() {
  tb_check_port_clash "$C/$1.log"
  if alive "$1"; then
    # Running but not healthy: what it is doing (state, CPU time, where it waits) and the load.
    tb_log "$1 is running but not healthy: $(ps -o pid=,stat=,etime=,time=,wchan:20= -p "$(cat "$C/$1.pid")" 2>/dev/null); load: $(cut -d' ' -f1-3 /proc/loadavg)"
  else
    tb_log "$1 is not running"
  fi
  tb_tail_log "$C/$1.log"
  tb_die "$1 did not come up"
}

kwok_nodes_ready() {
  local ready
  ready="$(kc get nodes -l runbook.testbed/kwok=true -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c '^True$')" || return 1
  (( ready == KWOK_NODES ))
}
# The serviceaccount controller has made the default ServiceAccount: pods can be created.
default_sa() { kc get serviceaccount default -n default -o name >/dev/null 2>&1; }

start_member() { # member timeout
  local t; t=$(tb_now)
  tb_start_cmd "$C/$1.cmd" "$C/$1.log" "$C/$1.pid"
  tb_wait "$2" "$1 to be healthy" member_up "$1" || fail_member "$1"
  tb_log "$1 healthy in $(tb_since "$t")s (pid $(cat "$C/$1.pid"))"
}

stop_all() { # grace
  local i m f
  for (( i = ${#MEMBERS[@]} - 1; i >= 0; i-- )); do
    m="${MEMBERS[$i]}"
    [[ -e "$C/$m.pid" ]] && tb_stop_pidfile "$C/$m.pid" "$(marker "$m")" "$1" "$m"
  done
  # Room for processes added later (a node agent): any other CLUSTER/NAME.pid whose process names
  # a file of this cluster on its command line is stopped too.
  for f in "$C"/*.pid; do
    [[ -e "$f" ]] || continue
    tb_stop_pidfile "$f" "$C/" "$1" "$(basename "$f" .pid)"
  done
  return 0
}

# ------------------------------------------------------------------ commands
cmd_create() {
  local dir="" nodes=3 agent=""
  while (( $# )); do
    case "$1" in
      --nodes) nodes="${2:?--nodes needs a value}"; shift 2 ;;
      --agent-node) agent="${2:?--agent-node needs a node name}"; shift 2 ;;
      -*) tb_die "unknown option $1" ;;
      *) [[ -z "$dir" ]] || tb_die "unexpected argument $1"; dir="$1"; shift ;;
    esac
  done
  [[ -n "$dir" ]] || usage
  [[ "$nodes" =~ ^[1-9]$ ]] || tb_die "--nodes must be 1..9"
  [[ -z "$agent" || "$agent" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] \
    || tb_die "--agent-node must be a DNS label (lower-case letters, digits, '-'), got '$agent'"
  [[ ! "$agent" =~ ^kwok-node-[0-9]+$ ]] || tb_die "--agent-node must not be named like a kwok node"
  command -v openssl >/dev/null || tb_die "openssl not found (Debian: apt-get install openssl)"
  TB_NEED="KUBE_APISERVER KUBE_CONTROLLER_MANAGER KUBE_SCHEDULER KUBECTL ETCD36 KWOK KWOK_STAGES KWOK_CRDS" \
    source "$HERE/paths.sh" || exit 1
  local t0; t0=$(tb_now)
  C="$(tb_abs "$dir")"
  tb_new_cluster_dir "$C" kubernetes

  local ports
  read -r -a ports <<<"$(tb_free_ports 6)"
  {
    echo "# Kubernetes testbed cluster, written by testbeds/kubernetes.sh create"
    echo "KIND=kubernetes"
    echo "CLUSTER=$C"
    echo "KUBE_VERSION=$TB_KUBE_VERSION"
    echo "KUBE_APISERVER_BIN=$KUBE_APISERVER"
    echo "KUBE_CONTROLLER_MANAGER_BIN=$KUBE_CONTROLLER_MANAGER"
    echo "KUBE_SCHEDULER_BIN=$KUBE_SCHEDULER"
    echo "KUBECTL=$KUBECTL"
    echo "ETCD36_BIN=$ETCD36"
    echo "KWOK_BIN=$KWOK"
    echo "KWOK_STAGES=$KWOK_STAGES"
    echo "KWOK_CRDS=$KWOK_CRDS"
    echo "HELM=$HELM"
    echo "ETCD_CLIENT_PORT=${ports[0]}"
    echo "ETCD_PEER_PORT=${ports[1]}"
    echo "APISERVER_PORT=${ports[2]}"
    echo "CONTROLLER_MANAGER_PORT=${ports[3]}"
    echo "SCHEDULER_PORT=${ports[4]}"
    echo "KWOK_PORT=${ports[5]}"
    echo "API_SERVER=https://127.0.0.1:${ports[2]}"
    echo "KUBECONFIG=$C/kubeconfig"
    echo "KWOK_NODES=$nodes"
    echo "AGENT_NODE=$agent"
  } >"$C/cluster.env"
  # shellcheck disable=SC1091
  source "$C/cluster.env"

  make_pki
  write_member_cmds
  write_kwok_config
  write_nodes

  trap 'rc=$?; if (( rc != 0 )); then stop_all 10; tb_log "create failed; left $C for inspection (kubernetes.sh destroy $C removes it)"; fi' EXIT
  start_member etcd 60
  start_member kube-apiserver 180
  # kwok watches these from its start: they must be served before it runs.
  local tc; tc=$(tb_now)
  kc apply -f "$KWOK_CRDS" >/dev/null || tb_die "could not install kwok's CRDs (kubectl apply -f $KWOK_CRDS)"
  kc wait --for condition=Established --timeout 60s -f "$KWOK_CRDS" >/dev/null \
    || tb_die "kwok's CRDs were not established within 60 s"
  tb_log "kwok's Exec/ClusterExec/Logs/ClusterLogs CRDs established in $(tb_since "$tc")s"
  # Independent of each other; started together, awaited in turn.
  local m t; t=$(tb_now)
  for m in kube-controller-manager kube-scheduler kwok; do
    tb_start_cmd "$C/$m.cmd" "$C/$m.log" "$C/$m.pid"
  done
  for m in kube-controller-manager kube-scheduler kwok; do
    tb_wait 120 "$m to be healthy" member_up "$m" || fail_member "$m"
    tb_log "$m healthy $(tb_since "$t")s after the three started (pid $(cat "$C/$m.pid"))"
  done
  kc apply -f "$C/nodes.yaml" >/dev/null || tb_die "could not create the nodes (kubectl apply -f $C/nodes.yaml)"
  tb_wait 90 "$nodes kwok nodes Ready" kwok_nodes_ready || { kc get nodes -o wide >&2 || true; fail_member kwok; }
  tb_wait 90 "the default ServiceAccount (serviceaccount controller)" default_sa || fail_member kube-controller-manager
  trap - EXIT
  echo "kubernetes $KUBE_VERSION control plane with $nodes kwok node(s)${agent:+ and agent node $agent} ready in $(tb_since "$t0")s at $C"
  echo "export KUBECONFIG=$C/kubeconfig"
  status_body
}

status_body() {
  local m pid run health
  printf '%-24s %-8s %-8s %-8s %s\n' MEMBER PID RUNNING HEALTH ADDRESS
  for m in "${MEMBERS[@]}"; do
    pid="$(tb_pidfile_pid "$C/$m.pid")"
    if alive "$m"; then run=yes; else run=no; fi
    if member_healthy "$m"; then health=ok; else health=no; fi
    local port
    case "$m" in
      etcd) port="http://127.0.0.1:$ETCD_CLIENT_PORT" ;;
      kube-apiserver) port="$API_SERVER" ;;
      kube-controller-manager) port="https://127.0.0.1:$CONTROLLER_MANAGER_PORT" ;;
      kube-scheduler) port="https://127.0.0.1:$SCHEDULER_PORT" ;;
      kwok) port="https://127.0.0.1:$KWOK_PORT" ;;
    esac
    printf '%-24s %-8s %-8s %-8s %s\n' "$m" "${pid:--}" "$run" "$health" "$port"
  done
  if apiserver_ready; then
    echo "server version: $(kc version -o json 2>/dev/null | tb_json "d['serverVersion']['gitVersion']" 2>/dev/null || echo '?')"
    kc get nodes -o wide 2>&1 || true
  else
    echo "API server not ready"
  fi
}

cmd_user() {
  [[ $# -ge 2 ]] || usage
  load_cluster "$1"
  local name="$2" groups="" subj
  shift 2
  [[ "$name" =~ ^[A-Za-z0-9][-A-Za-z0-9_.:@]*$ ]] || tb_die "user name '$name' has characters a certificate subject here does not take"
  while (( $# )); do
    case "$1" in
      --group)
        [[ "${2:-}" =~ ^[A-Za-z0-9][-A-Za-z0-9_.:@]*$ ]] || tb_die "--group needs a name (letters, digits, - _ . : @)"
        groups+="/O=$2"; shift 2 ;;
      *) tb_die "unexpected argument $1" ;;
    esac
  done
  mkdir -p "$C/users"
  chmod 700 "$C/users"
  subj="$groups/CN=$name"
  issue "user-$name" "$subj" clientAuth
  kubeconfig "$C/users/$name.kubeconfig" "$name" "user-$name"
  echo "$C/users/$name.kubeconfig"
}

case "${1:-}" in
  create) shift; cmd_create "$@" ;;
  status) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; status_body ;;
  env) shift; [[ $# == 1 ]] || usage; load_cluster "$1"; echo "export KUBECONFIG=$C/kubeconfig" ;;
  kubectl) shift; [[ $# -ge 1 ]] || usage; load_cluster "$1"; shift; exec "$KUBECTL" --kubeconfig "$C/kubeconfig" "$@" ;;
  user) shift; cmd_user "$@" ;;
  destroy)
    shift; [[ $# == 1 ]] || usage
    C="$(tb_abs "$1")"
    if [[ ! -e "$C" ]]; then echo "$C does not exist"; exit 0; fi
    load_cluster "$C"
    stop_all 30
    tb_destroy_dir "$C" kubernetes
    echo "destroyed $C" ;;
  ""|-h|--help|help) usage ;;
  *) tb_die "unknown command '$1' (try --help)" ;;
esac
