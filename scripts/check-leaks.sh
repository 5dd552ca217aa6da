#!/usr/bin/env bash
# Fails if a job left anything on the host: a cgroup under any hierarchy's gantry/, a mount made for a container,
# a process of a container, a worker or a farm, a test's network namespace or link, or what egress jobs use (a
# worker's bridge gtb-…, a container's veth gtv-…, a worker's nftables table gantry_…). Run after the test suite.
#   check-leaks.sh --save FILE   records what exists now (before the suite), without failing;
#   check-leaks.sh [FILE]        fails on anything not recorded in FILE (everything, without one).
set -uo pipefail
snapshot() {
  find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -path '*/gantry/*' -type d 2>/dev/null | sed 's/^/cgroup /'
  grep -E 'gantry|/containers/' /proc/self/mountinfo | cut -d' ' -f5 | sed 's/^/mount /'
  pgrep -f 'gantry (up|worker|server|container-zygote)' | sed 's/^/process /'
  # The network namespaces and veth pairs the tests make as other hosts.
  ip netns list 2>/dev/null | grep -o '^gx-[^ ]*' | sed 's/^/netns /'
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(gx|gtb-|gtv-)' | sed 's/^/link /'
  # Addresses of Gantry's egress ranges on any link left (the default 172.30.0.0/16, and the tests' ranges).
  ip -o -4 addr show 2>/dev/null | awk '{print $2, $4}' | grep -E '^(gtb-|gtv-)' | sed 's/^/address /'
  nft list tables 2>/dev/null | awk '$3 ~ /^gantry_/ {print "nftables", $2, $3}'
}
if [ "${1:-}" = "--save" ]; then
  snapshot | sort >"$2"
  exit 0
fi
before=${1:-/dev/null}
sleep 2 # farms are stopped as their tests end; give the last ones a moment to exit
left=$(comm -13 "$before" <(snapshot | sort))
if [ -z "$left" ]; then
  echo "no cgroup, mount, process, network namespace or link left behind"
  exit 0
fi
echo "leak: left behind by the tests:"
while read -r kind what; do
  case $kind in
    process) echo "process $(ps -o pid=,args= -p "$what" 2>/dev/null || echo "$what")" ;;
    *) echo "$kind $what" ;;
  esac
done <<<"$left"
exit 1
