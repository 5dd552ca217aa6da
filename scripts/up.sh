#!/usr/bin/env bash
# Runs the farm on this machine: builds Gantry and starts `gantry up` (server + its pool of local workers, embedded SQLite in
# ./gantry-data, dashboard on http://127.0.0.1:8080). Extra arguments go to `gantry up`. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cargo build --release --locked --bin gantry
# Where cargo put it: a CARGO_TARGET_DIR in the environment moves it out of ./target.
built=${CARGO_TARGET_DIR:-./target}/release/gantry
# On PATH, so that `gantry` works in any terminal (and the git hooks it installs find it); GANTRY_INSTALL_DIR
# puts it elsewhere, GANTRY_INSTALL_DIR= (empty) not at all.
install_dir=${GANTRY_INSTALL_DIR-/usr/local/bin}
if [ -n "$install_dir" ]; then
    install -m 0755 "$built" "$install_dir/gantry"
    echo "Installed $install_dir/gantry (GANTRY_INSTALL_DIR=DIR to put it elsewhere)."
    exec "$install_dir/gantry" up "$@"
fi
exec "$built" up "$@"
