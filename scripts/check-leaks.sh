#!/usr/bin/env bash
# Fails if a job left anything on the host: a cgroup under any hierarchy's gantry/, a mount made for a container,
# or a process of a container, a worker or a farm. Run after the test suite.
set -uo pipefail
sleep 2 # farms are stopped as their tests end; give the last ones a moment to exit
status=0
cgroups=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -path '*/gantry/*' -type d 2>/dev/null)
if [ -n "$cgroups" ]; then
  echo "leak: cgroups left behind:"; echo "$cgroups"; status=1
fi
mounts=$(grep -E 'gantry|/containers/' /proc/self/mountinfo)
if [ -n "$mounts" ]; then
  echo "leak: mounts left behind:"; echo "$mounts"; status=1
fi
procs=$(pgrep -af 'gantry (up|worker|server|container-zygote)' | grep -v pgrep)
if [ -n "$procs" ]; then
  echo "leak: processes left behind:"; echo "$procs"; status=1
fi
[ $status = 0 ] && echo "no cgroup, mount or process left behind"
exit $status
