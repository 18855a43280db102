#!/usr/bin/env bash
# Installs Apache Cassandra for the testbeds from Maven Central, pinned, into
# <repo>/.testbeds/cassandra-<version>/lib (or under $TESTBEDS_HOME): cassandra-all and its runtime
# dependencies, copied by `mvn dependency:copy-dependencies` from testbeds/cassandra/pom.xml.
# Nothing is compiled. testbeds/cassandra.sh runs org.apache.cassandra.service.CassandraDaemon
# (and org.apache.cassandra.tools.NodeTool for nodetool) from these jars on Java 17. cqlsh is a
# PyPI package; testbeds/install.sh puts it in its own virtualenv.
#
# Skipped when the directory exists (a no-op run takes well under a second). Built in DIR.tmp and
# moved into place, so an interrupted install never looks finished. Needs `java` (17 or newer) and
# `mvn` (Debian: openjdk-17-jre-headless, maven; install.sh installs them when missing).
#
# Usage: testbeds/cassandra-install.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
export TESTBEDS_HOME="${TESTBEDS_HOME:-$REPO/.testbeds}"

# Must match <cassandra.version> in testbeds/cassandra/pom.xml (checked below).
CASSANDRA_VERSION=5.0.9

log() { echo "cassandra-install.sh: $*" >&2; }
die() { echo "cassandra-install.sh: error: $*" >&2; exit 1; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}s')" "$1" "$(date +%s.%N)"; }

[[ $# == 0 ]] || { sed -n '2,13p' "$0"; exit 0; }

dir="$TESTBEDS_HOME/cassandra-$CASSANDRA_VERSION"
if [[ -f "$dir/lib/cassandra-all-$CASSANDRA_VERSION.jar" ]]; then
  log "cassandra $CASSANDRA_VERSION already in $dir"
  exit 0
fi
grep -qF "<cassandra.version>$CASSANDRA_VERSION</cassandra.version>" "$HERE/cassandra/pom.xml" \
  || die "testbeds/cassandra/pom.xml does not pin cassandra-all $CASSANDRA_VERSION (keep the versions in step)"
command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
command -v java >/dev/null || die "java not found (Debian: apt-get install openjdk-17-jre-headless)"
jv="$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')"
if [[ ! "$jv" =~ ^[0-9]+$ ]] || (( jv < 17 )); then
  die "Cassandra $CASSANDRA_VERSION needs Java 17 here; java is '$jv'"
fi

mkdir -p "$TESTBEDS_HOME"
exec 8>"$TESTBEDS_HOME/.cassandra-install.lock"
flock -w 900 8 || die "another cassandra-install.sh holds $TESTBEDS_HOME/.cassandra-install.lock for 15 min"

t=$(date +%s.%N)
rm -rf "$dir" "$dir.tmp"
mkdir -p "$dir.tmp/lib"
# Maven retries each artifact download itself; a whole second attempt covers a dropped connection
# to the repository partway through.
ok=0
for try in 1 2; do
  if nice -n 10 mvn -B -q -Dstyle.color=never -f "$HERE/cassandra/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$dir.tmp/lib"; then ok=1; break; fi
  log "mvn dependency:copy-dependencies failed (attempt $try of 2)"
  sleep 5
done
[[ $ok == 1 ]] || die "could not fetch cassandra-all $CASSANDRA_VERSION and its dependencies from Maven Central"
[[ -f "$dir.tmp/lib/cassandra-all-$CASSANDRA_VERSION.jar" ]] || die "mvn did not produce cassandra-all-$CASSANDRA_VERSION.jar"
echo "cassandra-all $CASSANDRA_VERSION, $(ls "$dir.tmp/lib" | wc -l) jars, installed $(date -u +%FT%TZ)" >"$dir.tmp/INSTALL"
mv "$dir.tmp" "$dir"
log "cassandra $CASSANDRA_VERSION installed in $(elapsed "$t") ($(du -sh "$dir" | cut -f1)): $dir"
