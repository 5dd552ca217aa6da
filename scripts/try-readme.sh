#!/usr/bin/env bash
# Follows the README's "Set up" and "Try it" word for word, as a newcomer would, on a fresh clone of this
# repository, and fails at the first command that does not succeed. The commands are read from the clone's
# README, not copied here, so the two cannot drift apart; only the admin token placeholder is filled in.
#
# Not part of CI: it builds the release binary (about 12 minutes on 2 cores; CARGO_TARGET_DIR=… reuses a build
# directory's dependencies), installs /usr/local/bin/gantry and creates /srv/demo.git, as the README does. Run as
# root, with port 8080 free and no /srv/demo.git.
# Usage: scripts/try-readme.sh [COMMIT]   (default: this repository's HEAD)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
commit=${1:-HEAD}
[ "$(id -u)" = 0 ] || { echo "try-readme: run as root, as the README says" >&2; exit 1; }
if [ -e /srv/demo.git ]; then
    echo "try-readme: /srv/demo.git exists; remove it first (\"Try it\" creates it)" >&2
    exit 1
fi
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    echo "try-readme: something already listens on 127.0.0.1:8080, where the farm will" >&2
    exit 1
fi
work=$(mktemp -d -t gantry-readme.XXXX)
echo "try-readme: working in $work (the logs up.log and try.log are kept)"
git clone -q "$here" "$work/gantry"
git -C "$work/gantry" checkout -q "$commit"
cd "$work/gantry"

# The README's code between a heading and the next one.
section() { sed -n "/^## $1\$/,/^## /p" README.md; }
up_command=$(section "Set up" | grep -o '`[^`]*scripts/up\.sh`' | head -1 | tr -d '`')
test_command=$(section "Set up" | grep -o '`[^`]*scripts/test\.sh`' | head -1 | tr -d '`')
try_it=$(section "Try it" | sed -n '/^```sh$/,/^```$/p' | sed '1d;$d')
[ -n "$up_command" ] && [ -n "$test_command" ] && [ -n "$try_it" ] || {
    echo "try-readme: cannot find the set-up commands or the \"Try it\" block in README.md" >&2
    exit 1
}
echo "try-readme: set-up commands: '$up_command' and '$test_command' (the test command is CI's: .ci/run)"

farm=""
stop_farm() {
    [ -n "$farm" ] && kill -0 "$farm" 2>/dev/null || return 0
    kill -INT "$farm"
    for _ in $(seq 120); do kill -0 "$farm" 2>/dev/null || return 0; sleep 0.5; done
    echo "try-readme: the farm did not stop within 60 s of Ctrl-C" >&2
    kill -KILL "$farm"
    return 1
}
# The clone (its build, its farm's data) goes; the logs stay.
trap 'stop_farm || true; rm -rf /srv/demo.git "$work/gantry" "$work/terminal"' EXIT

echo "try-readme: \$ $up_command   (in the background; output in $work/up.log)"
bash -c "exec $up_command" >"$work/up.log" 2>&1 &
farm=$!
token=""
for _ in $(seq 3600); do
    kill -0 "$farm" 2>/dev/null || { echo "try-readme: '$up_command' exited:" >&2; tail -20 "$work/up.log" >&2; exit 1; }
    token=$(sed -n 's/^  admin token: *//p' "$work/up.log" | head -1)
    if [ -n "$token" ] && curl -fsS -o /dev/null http://127.0.0.1:8080/; then break; fi
    sleep 1
done
[ -n "$token" ] || { echo "try-readme: no admin token after an hour" >&2; exit 1; }
grep -q "Pool default: local workers" "$work/up.log" || { echo "try-readme: the farm did not say its capacity" >&2; exit 1; }
echo "try-readme: the farm is up; the dashboard answers on http://127.0.0.1:8080/"

# "Try it", in a second terminal: a fresh shell with nothing of ours but a git identity for the commit.
mkdir -p "$work/terminal"
script=${try_it//<the admin token gantry up printed>/$token}
echo "try-readme: running \"Try it\" (output in $work/try.log)"
if ! (cd "$work/terminal" && env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$work/terminal" GIT_AUTHOR_NAME=Newcomer GIT_AUTHOR_EMAIL=newcomer@example.invalid \
    GIT_COMMITTER_NAME=Newcomer GIT_COMMITTER_EMAIL=newcomer@example.invalid \
    timeout 600 bash -euxo pipefail -c "$script") >"$work/try.log" 2>&1; then
    echo "try-readme: a command of \"Try it\" failed:" >&2
    tail -30 "$work/try.log" >&2
    exit 1
fi
cat "$work/try.log"
for expected in "ok, 1 job" "pipeline #1 (created): 1 job: hello" "hello from"; do
    grep -qF "$expected" "$work/try.log" || { echo "try-readme: \"Try it\" never said '$expected'" >&2; exit 1; }
done
stop_farm
echo "try-readme: every command of \"Set up\" and \"Try it\" succeeded; Ctrl-C stopped the farm"
