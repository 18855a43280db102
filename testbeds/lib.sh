#!/usr/bin/env bash
# Helpers shared by the testbed scripts. Source it after setting TB_NAME.
# shellcheck shell=bash

TB_NAME="${TB_NAME:-testbeds}"

tb_die() { echo "$TB_NAME: error: $*" >&2; exit 1; }
tb_log() { echo "$TB_NAME: $*" >&2; }

tb_now() { date +%s.%N; }
# Seconds since a tb_now value, one decimal.
tb_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# Absolute, normalised path (the directory need not exist).
tb_abs() { realpath -m -- "$1"; }

# tb_free_ports N: prints N distinct free TCP ports on 127.0.0.1.
# Candidates are drawn at random from 20000 up to the start of the kernel's ephemeral range, so
# an outgoing connection (which takes its local port from the ephemeral range) cannot grab a
# port between our check and the server's bind; each candidate is checked by binding it
# (all held at once, then released). Ports handed out in the last 5 minutes, by any testbed
# script on this machine, are not handed out again (a small ledger under a lock in /tmp), so
# clusters created in parallel cannot pick the same port before their servers bind it.
# Falls back to binding port 0 if that range is too small.
tb_free_ports() {
  python3 - "$1" <<'EOF'
import fcntl, os, random, socket, sys, time
n = int(sys.argv[1])
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except Exception:
    lo = 32768
ledger = os.path.join(os.environ.get("TMPDIR", "/tmp"), ".runbook-testbeds-ports")
now = time.time()
recent = {}
try:
    fd = os.open(ledger, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)  # shared by every user's testbeds
    except OSError:
        pass
    fcntl.flock(fd, fcntl.LOCK_EX)
    with os.fdopen(os.dup(fd), "r") as f:
        for line in f:
            try:
                p, t = line.split()
                if now - float(t) < 300:
                    recent[int(p)] = float(t)
            except ValueError:
                pass
except OSError:
    fd = None  # no ledger (another user's, read-only): random choice + bind check only
held, ports = [], []
def try_bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s
if lo - 20000 >= 1000:
    for _ in range(200 * n):
        if len(ports) == n:
            break
        p = random.randrange(20000, lo)
        if p in ports or p in recent:
            continue
        s = try_bind(p)
        if s:
            held.append(s); ports.append(p)
while len(ports) < n:
    s = try_bind(0)
    held.append(s); ports.append(s.getsockname()[1])
for p in ports:
    recent[p] = now
if fd is not None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, "".join(f"{p} {t:.0f}\n" for p, t in recent.items()).encode())
print(" ".join(map(str, ports)))
for s in held:
    s.close()
if fd is not None:
    os.close(fd)
EOF
}

# tb_pid_alive PID MARKER: true when PID is a live (non-zombie) process whose command line
# contains MARKER (guards against a stale pid file whose pid was reused by something else).
tb_pid_alive() {
  local pid="$1" marker="$2" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/stat" ]] || return 1
  state="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
  [[ -z "$marker" ]] && return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# tb_pidfile_pid FILE: prints the pid in FILE (empty if none).
tb_pidfile_pid() { [[ -r "$1" ]] && tr -dc '0-9' <"$1" || true; }

# tb_pidfile_alive FILE MARKER
tb_pidfile_alive() { tb_pid_alive "$(tb_pidfile_pid "$1")" "$2"; }

# tb_stop_pidfile FILE MARKER GRACE_SECONDS LABEL: SIGTERM, wait up to GRACE, then SIGKILL and
# wait up to 10 s more. Removes FILE. Returns 0 when the process is gone.
tb_stop_pidfile() {
  local file="$1" marker="$2" grace="$3" label="$4" pid deadline
  pid="$(tb_pidfile_pid "$file")"
  if ! tb_pid_alive "$pid" "$marker"; then
    rm -f "$file"
    tb_log "$label not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(date +%s) + grace ))
  while tb_pid_alive "$pid" "$marker" && (( $(date +%s) < deadline )); do sleep 0.1; done
  if tb_pid_alive "$pid" "$marker"; then
    tb_log "$label (pid $pid) still running ${grace}s after SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + 10 ))
    while tb_pid_alive "$pid" "$marker" && (( $(date +%s) < deadline )); do sleep 0.1; done
    tb_pid_alive "$pid" "$marker" && tb_die "$label (pid $pid) survived SIGKILL"
  fi
  rm -f "$file"
  tb_log "$label stopped (pid $pid)"
}

# tb_wait TIMEOUT_SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds; fails
# (return 1, message on stderr) after TIMEOUT seconds.
tb_wait() {
  local timeout="$1" desc="$2"
  shift 2
  local deadline=$(( $(date +%s) + timeout ))
  while :; do
    if "$@"; then return 0; fi
    if (( $(date +%s) >= deadline )); then
      tb_log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    sleep 0.2
  done
}

# tb_http_code URL [curl args...]: prints the HTTP status (000 when nothing answers).
tb_http_code() {
  local url="$1"; shift
  curl -s -o /dev/null -w '%{http_code}' --connect-timeout 1 --max-time 3 "$@" "$url" 2>/dev/null || true
}

# tb_http URL [curl args...]: prints the body; fails when nothing answers.
tb_http() {
  local url="$1"; shift
  curl -s --connect-timeout 1 --max-time 5 "$@" "$url"
}

# tb_json EXPR: evaluates a Python expression over the JSON document on stdin (bound to d);
# prints str() of it, or "" for None; true/false print as true/false.
tb_json() {
  python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    sys.exit(1)
try:
    v = eval(sys.argv[1])
except Exception:
    sys.exit(1)
if v is None:
    v = ""
elif v is True or v is False:
    v = "true" if v else "false"
print(v)
' "$1"
}

# tb_tail_log FILE: last lines of a log, for error messages.
tb_tail_log() { [[ -f "$1" ]] && { echo "--- last lines of $1:"; tail -n 15 "$1"; } >&2 || true; }

# tb_require_cluster DIR KIND: DIR must be a cluster this tooling created, of KIND.
tb_require_cluster() {
  [[ -f "$1/.testbed" ]] || tb_die "$1 is not a testbed cluster directory (no .testbed file)"
  local k; k="$(cat "$1/.testbed")"
  [[ "$k" == "$2" ]] || tb_die "$1 is a '$k' testbed, not '$2'"
}

# tb_load_cluster DIR KIND: sets C to DIR (absolute), checks its marker, loads its cluster.env.
tb_load_cluster() {
  C="$(tb_abs "$1")"
  tb_require_cluster "$C" "$2"
  # shellcheck disable=SC1091
  source "$C/cluster.env"
}

# tb_check_node N WORD: N must name one of the cluster's $NODES members (WORD: member, node).
tb_check_node() {
  [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= NODES )) || tb_die "$2 must be 1..$NODES, got '$1'"
}

# tb_create_args WITH_VERSION ARGS...: parses `create CLUSTER [--nodes N] [--version V]`
# (--version only when WITH_VERSION is 1) into CREATE_DIR, CREATE_NODES (default 3) and
# CREATE_VERSION; calls the script's usage without a CLUSTER.
tb_create_args() {
  local with_version="$1"; shift
  CREATE_DIR="" CREATE_VERSION="" CREATE_NODES=3
  while (( $# )); do
    case "$1" in
      --version)
        [[ $with_version == 1 ]] || tb_die "unknown option $1"
        CREATE_VERSION="${2:?--version needs a value}"; shift 2 ;;
      --nodes) CREATE_NODES="${2:?--nodes needs a value}"; shift 2 ;;
      -*) tb_die "unknown option $1" ;;
      *) [[ -z "$CREATE_DIR" ]] || tb_die "unexpected argument $1"; CREATE_DIR="$1"; shift ;;
    esac
  done
  [[ -n "$CREATE_DIR" ]] || usage
  [[ "$CREATE_NODES" =~ ^[1-9]$ ]] || tb_die "--nodes must be 1..9"
}

# tb_new_cluster_dir DIR KIND: creates DIR (must be absent or empty) and marks it.
tb_new_cluster_dir() {
  if [[ -e "$1" ]]; then
    [[ -d "$1" ]] || tb_die "$1 exists and is not a directory"
    [[ -z "$(ls -A "$1")" ]] || tb_die "$1 is not empty (destroy it first)"
  fi
  mkdir -p "$1"
  echo "$2" >"$1/.testbed"
}

# tb_destroy_dir DIR KIND: removes a cluster directory after checking its marker.
tb_destroy_dir() {
  local dir="$1"
  [[ -n "$dir" && "$dir" != / ]] || tb_die "refusing to remove '$dir'"
  tb_require_cluster "$dir" "$2"
  rm -rf -- "$dir"
}

# tb_start_cmd CMDFILE LOG PIDFILE: starts `bash CMDFILE` detached from our stdin/stdout
# (the file execs the server, so the recorded pid is the server's).
tb_start_cmd() {
  nohup bash "$1" >>"$2" 2>&1 </dev/null &
  local pid=$! own i
  echo "$pid" >"$3"
  # Until the child execs, its command line is this script's, without the member's marker: a
  # liveness check by marker made then finds it "not running" (a loaded machine widens that
  # window enough for the first check of a start-up wait to fall in it). Wait for the exec.
  own="$(tr '\0' ' ' <"/proc/$$/cmdline")"
  for (( i = 0; i < 1000; i++ )); do
    [[ -r "/proc/$pid/cmdline" ]] || break
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" != "$own" ]] && break
    sleep 0.01
  done
}

# tb_check_port_clash LOG: dies with a clear message if the log shows a port clash.
tb_check_port_clash() {
  if grep -qiE 'address already in use' "$1" 2>/dev/null; then
    tb_tail_log "$1"
    tb_die "a port chosen for this cluster was taken by another process meanwhile; destroy and create again"
  fi
}
