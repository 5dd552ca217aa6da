#!/usr/bin/env bash
# Installs the Debian packages Gantry needs: `build` (to compile and run the farm), `test` (also what the test
# suite runs against) or `bench` (also the container peers the benchmarks measure). Installs only what is missing, so it is quick when everything is there.
set -euo pipefail

build=(build-essential pkg-config libssl-dev git ca-certificates openssl curl nftables)
test=("${build[@]}" postgresql util-linux iproute2 procps chromium docker-registry skopeo umoci busybox-static dnsmasq-base)
bench=("${test[@]}" crun runc bubblewrap)

case "${1:-}" in
  build) wanted=("${build[@]}") ;;
  test) wanted=("${test[@]}") ;;
  bench) wanted=("${bench[@]}") ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
  echo "Gantry's worker makes real containers (namespaces, cgroups, overlayfs) and must run as root: run this as root (sudo -i)." >&2
  exit 1
fi

missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The postgresql package would start a cluster of its own; the tests start throwaway servers instead.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
  # The packaged registry service would listen on every interface at boot; the tests start their own on loopback.
  if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs) first" >&2; exit 1; }
