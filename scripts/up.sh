#!/usr/bin/env bash
# Runs the farm on this machine: builds Gantry and starts `gantry up` (server + a local worker, embedded SQLite in
# ./gantry-data, dashboard on http://127.0.0.1:8080). Extra arguments go to `gantry up`. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cargo build --release --locked --bin gantry
exec ./target/release/gantry up "$@"
