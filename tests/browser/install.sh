#!/usr/bin/env bash
# Installs what the headless-browser tests (tests/web.rs → tests/browser/*.mjs) need:
#   Debian `chromium` (/usr/bin/chromium), when it is missing and $CHROMIUM names no browser;
#   node_modules here (`npm ci` from package-lock.json), when missing or stale.
# Idempotent: with both in place it changes nothing and takes well under a second.
# playwright-core never downloads a browser: the tests point it at Debian's chromium.
#
# Usage: tests/browser/install.sh [--no-apt]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DO_APT=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) DO_APT=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "browser/install.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "browser/install.sh: $*" >&2; }
die() { echo "browser/install.sh: error: $*" >&2; exit 1; }
T0=$SECONDS

# One installer at a time (parallel CI steps may both call it).
exec 9>"$HERE/.install.lock"
flock -w 900 9 || die "another install holds $HERE/.install.lock for 15 min"

# ---------------------------------------------------------------- chromium
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]]; then
  log "chromium present: $CHROMIUM"
elif [[ $DO_APT == 0 ]]; then
  die "$CHROMIUM is missing (and --no-apt was given)"
else
  [[ $CHROMIUM == /usr/bin/chromium ]] || die "\$CHROMIUM=$CHROMIUM is not an executable"
  SUDO=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "installing chromium needs root (or sudo)"
    SUDO=(sudo)
  fi
  log "installing Debian chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q >/dev/null
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null
  [[ -x /usr/bin/chromium ]] || die "apt-get installed chromium but /usr/bin/chromium is missing"
  log "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
fi

# ---------------------------------------------------------------- node + npm
command -v node >/dev/null || die "node is missing (playwright-core needs Node.js 20 or later)"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
(( NODE_MAJOR >= 20 )) || die "node $(node --version) is too old: playwright-core needs Node.js 20 or later"

# node_modules is fresh when it was installed from exactly this lockfile by this script.
STAMP="$HERE/node_modules/.runbook-install-stamp"
want_stamp() {
  # The lockfile's content and node's major version (a native-free package, but a major node
  # upgrade is a good reason to reinstall).
  echo "node$NODE_MAJOR $(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
}
fresh() {
  [[ -f "$STAMP" && -f "$HERE/node_modules/playwright-core/package.json" ]] &&
    [[ "$(cat "$STAMP")" == "$(want_stamp)" ]]
}
[[ -f "$HERE/package-lock.json" ]] || die "$HERE/package-lock.json is missing"
if fresh; then
  log "node_modules up to date"
else
  command -v npm >/dev/null || die "npm is missing (Node.js $(node --version) is here, npm is not)"
  log "npm ci (node $(node --version), npm $(npm --version 2>/dev/null))"
  # npm ci removes node_modules first; it never touches package.json or the lockfile.
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
  want_stamp >"$STAMP"
fi

# ---------------------------------------------------------------- check
PW=$(cd "$HERE" && node -p 'require("playwright-core/package.json").version')
log "ready: $("$CHROMIUM" --version 2>/dev/null | head -1), playwright-core $PW ($((SECONDS - T0)) s)"
