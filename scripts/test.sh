#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need, then `cargo test` over the workspace. The tests start
# their own throwaway PostgreSQL and farms; container tests make real containers, so this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo test --workspace --locked --no-fail-fast "$@"
