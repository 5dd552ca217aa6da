# shellcheck shell=sh
# Sourced by create, destroy and list: the hosts, ssh, and what each side may contain.
# Settings, all optional, from the server's environment (gantry-server.env):
#   GANTRY_SSH           the ssh command, options allowed ("ssh -i /path/key"); default ssh
#   GANTRY_SSH_HOSTS     the hosts file; default: hosts beside these scripts
#   GANTRY_REMOTE_BIN    gantry on the worker hosts; default /usr/local/bin/gantry
#   GANTRY_REMOTE_CONFIG a TOML file on the worker hosts for the workers' [worker] table
#   GANTRY_STOP_TIMEOUT  how long stopping a worker may wait for its jobs; default 6h, [worker] max_timeout's

hosts_file=${GANTRY_SSH_HOSTS:-$(dirname "$0")/hosts}

# Prints the hosts of the hosts file, one per line; stops at the first line that cannot be a host.
hosts() {
    [ -r "$hosts_file" ] || fail "cannot read the hosts file $hosts_file"
    while read -r host _; do
        case $host in
        '' | '#'*) continue ;;
        -* | *[!A-Za-z0-9@._:-]*) fail "$hosts_file: not a host: $host" ;;
        esac
        printf '%s\n' "$host"
    done <"$hosts_file"
}

# Runs the script on stdin with sh on host $1. Only `sh -s` is on the command lines of either host, so what the
# script holds (a token) stays out of ps. BatchMode: never a prompt; StrictHostKeyChecking: every host must be
# in known_hosts already.
remote() {
    # shellcheck disable=SC2086 # GANTRY_SSH may carry options
    ${GANTRY_SSH:-ssh} -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=yes -- "$1" sh -s
}

# Prints the gantry-worker-* units of host $1 that are running or on their way (not inactive or failed).
units() {
    remote "$1" <<'SCRIPT'
set -eu
units=$(systemctl list-units --all --plain --no-legend --full 'gantry-worker-*.service')
printf '%s\n' "$units" | awk '{ u = $1; s = $3; if (u !~ /\.service$/) { u = $2; s = $4 } }
    u ~ /\.service$/ && s != "inactive" && s != "failed" { print u }'
SCRIPT
}

# Worker names are [A-Za-z0-9._-], 1 to 100, not starting with a dot; they end up in unit and file names.
valid_name() {
    case $1 in
    '' | .* | *[!A-Za-z0-9._-]*) return 1 ;;
    esac
    [ ${#1} -le 100 ]
}

fail() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}
