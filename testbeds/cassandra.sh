#!/usr/bin/env bash
# A local Apache Cassandra cluster (cassandra-all 5.0 from Maven Central, Java 17) on loopback,
# node N listening on 127.0.0.N, for end-to-end tests.
#
#   cassandra.sh create CLUSTER [--nodes N] [--auth]  (1..3 nodes, default 1; --auth: logins
#                                                  with PasswordAuthenticator, superuser
#                                                  cassandra/cassandra)
#   cassandra.sh stop CLUSTER N
#   cassandra.sh start CLUSTER N                   (waits until the node is UN in nodetool status)
#   cassandra.sh restart CLUSTER N
#   cassandra.sh is-running CLUSTER N              (exit 0 running, 1 not)
#   cassandra.sh status CLUSTER                    (pids, then `nodetool status`)
#   cassandra.sh nodetool CLUSTER [--node N] ARGS...
#   cassandra.sh cqlsh CLUSTER [--node N] ARGS...  (e.g. -e "DESCRIBE KEYSPACES")
#   cassandra.sh env CLUSTER                       (export CQLSH_HOST=... CQLSH_PORT=... of node 1)
#   cassandra.sh destroy CLUSTER
#
# Layout (see testbeds/README.md): CLUSTER/cluster.env  CLUSTER/nN.yaml  CLUSTER/nN.cmd
# CLUSTER/nN.pid  CLUSTER/nN.log  CLUSTER/nN/ (data, commitlog, hints, saved caches)
set -euo pipefail

TB_NAME="cassandra.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() { sed -n '2,19p' "$0" >&2; exit 2; }

load_cluster() { tb_load_cluster "$1" cassandra; }
check_node() { tb_check_node "$1" node; }

# Heap per node. Cassandra sizes memtables and caches from it; 512 MiB starts and serves a
# test's keyspaces (three nodes then take ~2.5 GiB of memory together).
HEAP=512m

# From Cassandra's conf/jvm17-server.options (JPMS opens/exports it needs on Java 17, its G1
# settings, Netty properties). nodetool needs the same exports.
JVM17_OPTS=(
  -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:MaxGCPauseMillis=300
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  -Dio.netty.tryReflectionSetAccessible=true
  -Dio.netty.allocator.useCacheForAllThreads=true
  -Dio.netty.allocator.maxOrder=11
)

addr() { echo "127.0.0.$1"; }
port() { local v="$1_PORT_$2"; echo "${!v}"; }
# Matches "bash CLUSTER/nN.cmd" (before its exec) and "java ... -Dcassandra.config=file://CLUSTER/nN.yaml".
marker() { echo "$C/n$1."; }
alive() { tb_pidfile_alive "$C/n$1.pid" "$(marker "$1")"; }
# The CQL port accepts connections (the node has finished starting).
cql_open() { python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()' "$(addr "$1")" "$(port CQL "$1")" 2>/dev/null; }

# nodetool is a JVM of its own: 3-8 s a call here, more on a loaded machine; bounded at 60 s.
nodetool_on() { # N args...
  local n="$1"; shift
  timeout 60 "$JAVA" -Xmx128m "${JVM17_OPTS[@]}" -cp "$CASSANDRA_HOME/lib/*" \
    -Dlogback.configurationFile="file://$C/logback-tools.xml" \
    org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$(port JMX "$n")" "$@"
}

# N is UN (up, normal) in nodetool status as seen from node N itself, and so are EXPECT nodes.
ring_up() { # N expect
  local out
  out="$(nodetool_on "$1" status 2>/dev/null)" || return 1
  (( $(grep -cE '^UN ' <<<"$out") >= $2 ))
}

fail_node() {
  tb_check_port_clash "$C/n$1.log"
  alive "$1" || tb_log "n$1 is not running"
  tb_tail_log "$C/n$1.log"
  tb_die "node n$1 did not come up"
}

write_node_config() { # N
  local n="$1" a; a="$(addr "$n")"
  mkdir -p "$C/n$n"
  cat >"$C/n$n.yaml" <<EOF
# Cassandra node n$n, written by testbeds/cassandra.sh create
cluster_name: runbook-testbed
num_tokens: 16
allocate_tokens_for_local_replication_factor: $(( NODES < 3 ? NODES : 3 ))
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$(addr 1):$(port STORAGE 1)"
listen_address: $a
storage_port: $(port STORAGE "$n")
rpc_address: $a
native_transport_port: $(port CQL "$n")
start_native_transport: true
# The cluster is new: every node owns its tokens from the start, no streaming.
auto_bootstrap: false
data_file_directories: [$C/n$n/data]
commitlog_directory: $C/n$n/commitlog
saved_caches_directory: $C/n$n/saved_caches
hints_directory: $C/n$n/hints
cdc_raw_directory: $C/n$n/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: $( [[ "$AUTH" == 1 ]] && echo PasswordAuthenticator || echo AllowAllAuthenticator )
authorizer: $( [[ "$AUTH" == 1 ]] && echo CassandraAuthorizer || echo AllowAllAuthorizer )
EOF
  cat >"$C/n$n.cmd" <<EOF
#!/usr/bin/env bash
# Starts Cassandra node n$n (written by testbeds/cassandra.sh). Run it in the background:
#   nohup bash $C/n$n.cmd >> $C/n$n.log 2>&1 < /dev/null & echo \$! > $C/n$n.pid
# It execs java, so that pid is the JVM's.
exec "$JAVA" -Xms$HEAP -Xmx$HEAP -Xss256k -XX:TieredStopAtLevel=1 -XX:+PerfDisableSharedMem -XX:+CrashOnOutOfMemoryError \\
  ${JVM17_OPTS[*]} \\
  -Djava.net.preferIPv4Stack=true \\
  -Dcassandra.config=file://$C/n$n.yaml -Dcassandra.storagedir=$C/n$n -Dcassandra.logdir=$C/n$n \\
  -Dlogback.configurationFile=file://$C/logback.xml \\
  -Dcassandra.jmx.local.port=$(port JMX "$n") \\
  -Dcassandra-foreground=yes -Dcassandra.skip_wait_for_gossip_to_settle=0 \\
  -Dcassandra.superuser_setup_delay_ms=0 \\
  -cp "$CASSANDRA_HOME/lib/*" org.apache.cassandra.service.CassandraDaemon
EOF
}

write_logback() {
  local f
  for f in logback logback-tools; do
    cat >"$C/$f.xml" <<'EOF'
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
EOF
  done
  sed -i 's/level="INFO"/level="WARN"/' "$C/logback-tools.xml"
}

cmd_create() {
  local dir="" nodes=1
  AUTH=0
  while (( $# )); do
    case "$1" in
      --nodes) nodes="${2:?--nodes needs a value}"; shift 2 ;;
      --auth) AUTH=1; shift ;;
      -*) tb_die "unknown option $1" ;;
      *) [[ -z "$dir" ]] || tb_die "unexpected argument $1"; dir="$1"; shift ;;
    esac
  done
  [[ -n "$dir" ]] || usage
  [[ "$nodes" =~ ^[1-3]$ ]] || tb_die "--nodes must be 1..3 (node N listens on 127.0.0.N)"
  TB_NEED="CASSANDRA_HOME JAVA CQLSH" source "$HERE/paths.sh" || exit 1
  local t0; t0=$(tb_now)
  C="$(tb_abs "$dir")"
  tb_new_cluster_dir "$C" cassandra
  NODES="$nodes"

  local ports n
  read -r -a ports <<<"$(tb_free_ports $(( 3 * nodes )))"
  {
    echo "# Cassandra testbed cluster, written by testbeds/cassandra.sh create"
    echo "KIND=cassandra"
    echo "CLUSTER=$C"
    echo "NODES=$nodes"
    echo "AUTH=$AUTH"
    echo "CASSANDRA_VERSION=$CASSANDRA_VERSION"
    echo "CASSANDRA_HOME=$CASSANDRA_HOME"
    echo "JAVA=$JAVA"
    echo "CQLSH=$CQLSH"
    for n in $(seq 1 "$nodes"); do
      echo "ADDRESS_$n=$(addr "$n")"
      echo "CQL_PORT_$n=${ports[$(( 3 * n - 3 ))]}"
      echo "STORAGE_PORT_$n=${ports[$(( 3 * n - 2 ))]}"
      echo "JMX_PORT_$n=${ports[$(( 3 * n - 1 ))]}"
    done
  } >"$C/cluster.env"
  # shellcheck disable=SC1091
  source "$C/cluster.env"
  write_logback
  for n in $(seq 1 "$nodes"); do write_node_config "$n"; done

  trap 'rc=$?; if (( rc != 0 )); then for k in $(seq 1 '"$nodes"'); do tb_stop_pidfile "$C/n$k.pid" "$C/n$k." 30 "n$k" || true; done; tb_log "create failed; left $C for inspection (cassandra.sh destroy $C removes it)"; fi' EXIT
  # The seed first; the others join it once it serves (started together, they all gossip with
  # the seed and none has to stream, as auto_bootstrap is off in a new cluster).
  tb_start_cmd "$C/n1.cmd" "$C/n1.log" "$C/n1.pid"
  tb_wait 180 "n1 to serve CQL on $(addr 1):$(port CQL 1)" node_serving 1 || fail_node 1
  tb_log "n1 serving CQL after $(tb_since "$t0")s"
  for n in $(seq 2 "$nodes"); do tb_start_cmd "$C/n$n.cmd" "$C/n$n.log" "$C/n$n.pid"; done
  for n in $(seq 2 "$nodes"); do
    tb_wait 240 "n$n to serve CQL on $(addr "$n"):$(port CQL "$n")" node_serving "$n" || fail_node "$n"
  done
  tb_wait 120 "all $nodes nodes UN in nodetool status" ring_up 1 "$nodes" || fail_node 1
  if [[ "$AUTH" == 1 ]]; then
    # The default superuser is created just after start-up (superuser_setup_delay_ms=0).
    tb_wait 60 "the superuser cassandra to log in" superuser_login || fail_node 1
  fi
  trap - EXIT
  echo "cassandra cluster with $nodes node(s) ready in $(tb_since "$t0")s at $C"
  echo "cqlsh: $CQLSH $(addr 1) $(port CQL 1)"
  status_body
}

# The default superuser logs in on node 1 (with --auth).
superuser_login() {
  "$CQLSH" -u cassandra -p cassandra "$(addr 1)" "$(port CQL 1)" \
    -e "SELECT release_version FROM system.local" >/dev/null 2>&1
}

# Running and accepting CQL connections; fails at once when the process has died.
node_serving() {
  alive "$1" || fail_node "$1"
  cql_open "$1"
}

status_body() {
  local n pid run cql
  printf '%-5s %-10s %-8s %-8s %s\n' NODE PID RUNNING CQL ADDRESS
  for n in $(seq 1 "$NODES"); do
    pid="$(tb_pidfile_pid "$C/n$n.pid")"
    if alive "$n"; then run=yes; else run=no; fi
    if cql_open "$n"; then cql=open; else cql=closed; fi
    printf '%-5s %-10s %-8s %-8s %s\n' "n$n" "${pid:--}" "$run" "$cql" "$(addr "$n"):$(port CQL "$n")"
  done
  for n in $(seq 1 "$NODES"); do
    if alive "$n"; then
      nodetool_on "$n" status 2>&1 || echo "(nodetool status on n$n failed)"
      return 0
    fi
  done
  echo "no node running"
}

node_args() {
  [[ $# -ge 2 ]] || usage
  load_cluster "$1"; N="$2"; check_node "$N"; shift 2
  [[ $# == 0 ]] || tb_die "unexpected argument $1"
}

# --node N among the first arguments, the rest passed on.
tool_args() {
  [[ $# -ge 1 ]] || usage
  load_cluster "$1"; shift
  N=1
  if [[ "${1:-}" == --node ]]; then N="${2:?--node needs a value}"; check_node "$N"; shift 2; fi
  ARGS=("$@")
}

cmd_stop() { tb_stop_pidfile "$C/n$N.pid" "$(marker "$N")" 60 "n$N"; }

cmd_start() {
  local t0; t0=$(tb_now)
  if alive "$N"; then tb_die "n$N is already running (pid $(cat "$C/n$N.pid"))"; fi
  tb_start_cmd "$C/n$N.cmd" "$C/n$N.log" "$C/n$N.pid"
  tb_wait 180 "n$N to serve CQL" node_serving "$N" || fail_node "$N"
  tb_wait 120 "n$N UN in nodetool status" ring_up "$N" 1 || fail_node "$N"
  echo "n$N running (pid $(cat "$C/n$N.pid")), serving in $(tb_since "$t0")s"
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
  nodetool) shift; tool_args "$@"; nodetool_on "$N" "${ARGS[@]}" ;;
  cqlsh)
    shift; tool_args "$@"
    login=(); [[ "${AUTH:-0}" == 1 ]] && login=(-u cassandra -p cassandra)
    exec "$CQLSH" "${login[@]}" "$(addr "$N")" "$(port CQL "$N")" "${ARGS[@]}" ;;
  env)
    shift; [[ $# == 1 ]] || usage; load_cluster "$1"
    echo "export CQLSH_HOST=$(addr 1) CQLSH_PORT=$(port CQL 1)" ;;
  destroy)
    shift; [[ $# == 1 ]] || usage
    C="$(tb_abs "$1")"
    if [[ ! -e "$C" ]]; then echo "$C does not exist"; exit 0; fi
    load_cluster "$C"
    for n in $(seq 1 "$NODES"); do tb_stop_pidfile "$C/n$n.pid" "$(marker "$n")" 60 "n$n"; done
    tb_destroy_dir "$C" cassandra
    echo "destroyed $C" ;;
  ""|-h|--help|help) usage ;;
  *) tb_die "unknown command '$1' (try --help)" ;;
esac
