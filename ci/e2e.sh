#!/usr/bin/env bash
# End-to-end in network namespaces: four hosts on one bridge (mgmt01, alpha,
# beta, laptop — the operator's workstation is the laptop), each its own
# network stack, running docs/playbook.md's code blocks in order.
# Needs root (ip netns). Only the hosts' own addresses (10.77.0.0/24, inside
# namespaces this script creates) and their loopbacks carry traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/setup.sh
source ci/setup.sh

HOSTS=(mgmt01 alpha beta laptop)
E2E="${E2E_DIR:-$(mktemp -d /tmp/flor-e2e.XXXXXX)}"
rm -rf "${E2E:?}" && mkdir -p "$E2E"

cleanup() {
  for h in "${HOSTS[@]}"; do
    if ip netns list | grep -qw "flor-$h"; then
      ip netns pids "flor-$h" 2>/dev/null | xargs -r kill 2>/dev/null || true
    fi
  done
  sleep 0.3
  for h in "${HOSTS[@]}" sw; do
    ip netns pids "flor-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "flor-$h" 2>/dev/null || true
  done
  if [ -z "${E2E_KEEP:-}" ]; then rm -rf "$E2E"; fi
}
trap cleanup EXIT
cleanup_before() { for h in "${HOSTS[@]}" sw; do ip netns del "flor-$h" 2>/dev/null || true; done; }
cleanup_before

echo "== building flor and retectl"
cargo build --locked -p flor -p retectl
export PATH="$PWD/target/debug:$PATH"

echo "== four hosts on a bridge"
ip netns add flor-sw
ip -n flor-sw link add br0 type bridge
ip -n flor-sw link set br0 up
i=1
for h in "${HOSTS[@]}"; do
  ip netns add "flor-$h"
  ip link add "e2e-$h" type veth peer name eth0 netns "flor-$h"
  ip link set "e2e-$h" netns flor-sw
  ip -n flor-sw link set "e2e-$h" master br0 up
  ip -n "flor-$h" addr add "10.77.0.$i/24" dev eth0
  ip -n "flor-$h" link set eth0 up
  ip -n "flor-$h" link set lo up
  echo "   $h: 10.77.0.$i"
  mkdir -p "$E2E/$h"
  i=$((i + 1))
done

python3 ci/playbook.py docs/playbook.md "$E2E" "$(IFS=,; echo "${HOSTS[*]}")"
