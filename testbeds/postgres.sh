#!/usr/bin/env bash
# A private PostgreSQL server (Debian's) for backup/restore tests and the demo.
#
#   postgres.sh create DIR     initdb + start on a free 127.0.0.1 port, unix socket in DIR/sock
#   postgres.sh stop DIR       pg_ctl stop -m fast
#   postgres.sh start DIR
#   postgres.sh status DIR     (exit 0 running, 1 not)
#   postgres.sh psql DIR ARGS  psql as the superuser "postgres" (database postgres by default)
#   postgres.sh env DIR        prints export PGHOST=... PGPORT=... PGUSER=... PGDATABASE=...
#   postgres.sh destroy DIR
#
# As root the server runs as the system user runbook-pg (created if missing), since PostgreSQL
# refuses to run as root; DIR and its parents must then be reachable by that user.
set -euo pipefail

TB_NAME="postgres.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
PG_OS_USER="runbook-pg"

usage() { sed -n '2,13p' "$0" >&2; exit 2; }

# Run a command as the server's OS user.
as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

ensure_user() {
  [[ $(id -u) == 0 ]] || return 0
  id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
  # Parallel creates may race here; serialise and re-check.
  (
    flock -w 30 8 || exit 1
    id -u "$PG_OS_USER" >/dev/null 2>&1 && exit 0
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_OS_USER"
  ) 8>/tmp/.runbook-testbeds-useradd.lock || tb_die "could not create user $PG_OS_USER"
  tb_log "created system user $PG_OS_USER"
}

load() {
  D="$(tb_abs "$1")"
  tb_require_cluster "$D" postgres
  # shellcheck disable=SC1091
  source "$D/pg.env"
}

running() { as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

do_start() {
  running && { echo "already running on port $PGPORT"; return 0; }
  as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$D/postgres.log" -w -t 60 start >/dev/null \
    || { tb_check_port_clash "$D/postgres.log"; tb_tail_log "$D/postgres.log"; tb_die "PostgreSQL did not start"; }
  tb_wait 30 "PostgreSQL to accept connections" "$PG_BINDIR/pg_isready" -q -h "$PGHOST" -p "$PGPORT" \
    || tb_die "PostgreSQL is not accepting connections"
}

do_stop() {
  running || { echo "not running"; return 0; }
  as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null || tb_die "pg_ctl stop failed"
}

cmd_create() {
  [[ $# == 1 ]] || usage
  TB_NEED="PG_BINDIR" source "$HERE/paths.sh" || exit 1
  local t0; t0=$(tb_now)
  D="$(tb_abs "$1")"
  ensure_user
  tb_new_cluster_dir "$D" postgres
  mkdir -p "$D/sock"
  if [[ $(id -u) == 0 ]]; then
    chown "$PG_OS_USER:" "$D" "$D/sock"
    runuser -u "$PG_OS_USER" -- test -w "$D" \
      || tb_die "$D is not reachable by user $PG_OS_USER (a parent directory lacks o+x); use a directory under /tmp"
  fi
  local port; port="$(tb_free_ports 1)"
  cat >"$D/pg.env" <<EOF
# PostgreSQL testbed, written by testbeds/postgres.sh create
KIND=postgres
PG_BINDIR=$PG_BINDIR
PGDATA=$D/data
PGHOST=$D/sock
PGPORT=$port
PGUSER=postgres
PGDATABASE=postgres
PG_OS_USER=$( [[ $(id -u) == 0 ]] && echo "$PG_OS_USER" || id -un )
EOF
  # shellcheck disable=SC1091
  source "$D/pg.env"
  as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C >"$D/initdb.log" 2>&1 \
    || { tb_tail_log "$D/initdb.log"; tb_die "initdb failed"; }
  cat >>"$PGDATA/postgresql.conf" <<EOF

# testbeds/postgres.sh
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$D/sock'
EOF
  do_start
  echo "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') ready in $(tb_since "$t0")s: port $port, socket dir $D/sock, superuser postgres (trust)"
}

case "${1:-}" in
  create) shift; cmd_create "$@" ;;
  start) shift; [[ $# == 1 ]] || usage; load "$1"; do_start; echo "running on port $PGPORT" ;;
  stop) shift; [[ $# == 1 ]] || usage; load "$1"; do_stop; echo "stopped" ;;
  status)
    shift; [[ $# == 1 ]] || usage; load "$1"
    if running; then echo "running on port $PGPORT (pid $(head -n1 "$PGDATA/postmaster.pid"))"; exit 0; fi
    echo "not running"; exit 1 ;;
  psql)
    shift; [[ $# -ge 1 ]] || usage; load "$1"; shift
    exec "$PG_BINDIR/psql" -X -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$PGDATABASE" "$@" ;;
  env)
    shift; [[ $# == 1 ]] || usage; load "$1"
    echo "export PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER PGDATABASE=$PGDATABASE PATH=$PG_BINDIR:\$PATH" ;;
  destroy)
    shift; [[ $# == 1 ]] || usage
    D="$(tb_abs "$1")"
    if [[ ! -e "$D" ]]; then echo "$D does not exist"; exit 0; fi
    load "$D"; do_stop >/dev/null
    tb_destroy_dir "$D" postgres
    echo "destroyed $D" ;;
  ""|-h|--help|help) usage ;;
  *) tb_die "unknown command '$1' (try --help)" ;;
esac
