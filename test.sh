#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine (Debian packages,
# project-local Python virtualenvs with the real servers, Cassandra from Maven Central, Kubernetes,
# etcd 3.6, kwok and helm built from their Go modules, Debian chromium and playwright-core for the
# browser tests), then runs every test.
set -euo pipefail
cd "$(dirname "$0")"

testbeds/install.sh
tests/browser/install.sh
cargo test --workspace "$@"
