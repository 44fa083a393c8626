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
# Names of this run's own: two runs (CI in two worktrees, say) must not
# delete each other's hosts. The namespaces are flor<id>-<host>, the veths
# e<id>-<host> (at most 15 characters: IFNAMSIZ), id = this shell's pid in hex.
ID=$(printf '%x' "$$")
export E2E_NETNS_PREFIX="flor$ID"
ns() { echo "$E2E_NETNS_PREFIX-$1"; }

cleanup() {
  for h in "${HOSTS[@]}"; do
    if ip netns list | grep -qw "$(ns "$h")"; then
      ip netns pids "$(ns "$h")" 2>/dev/null | xargs -r kill 2>/dev/null || true
    fi
  done
  sleep 0.3
  for h in "${HOSTS[@]}" sw; do
    ip netns pids "$(ns "$h")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$(ns "$h")" 2>/dev/null || true
  done
  if [ -z "${E2E_KEEP:-}" ]; then rm -rf "$E2E"; fi
}
trap cleanup EXIT
# Hosts left by a run that was killed before its cleanup: flor<id>-* whose
# run (pid <id>) is gone, or that carry this run's id (a reused pid). The fixed
# names of runs before 2026-12-03 (flor-<host>, flor-sw) only when nothing runs
# in any of them: a live run of that kind cannot be told apart otherwise, and
# its switch namespace holds no process of its own.
stale=$(ip netns list | sed -n 's/^\(flor[0-9a-f]*-[a-z0-9]*\).*/\1/p')
legacy_busy=
for n in $stale; do
  case "$n" in flor-*) [ -z "$(ip netns pids "$n" 2>/dev/null)" ] || legacy_busy=$n ;; esac
done
for n in $stale; do
  id=${n#flor}
  id=${id%%-*}
  if [ -z "$id" ] && [ -n "$legacy_busy" ]; then
    echo "   left alone: network namespace $n ($legacy_busy has processes: an e2e run of an" \
      "older ci/e2e.sh?); remove by hand: ip netns pids <ns> | xargs -r kill; ip netns del <ns>"
    continue
  fi
  if [ -z "$id" ] || [ "$id" = "$ID" ] || ! kill -0 "$((16#$id))" 2>/dev/null; then
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$n" 2>/dev/null || true
  fi
done

echo "== building flor and retectl"
cargo build --locked -p flor -p retectl
export PATH="$PWD/target/debug:$PATH"

echo "== four hosts on a bridge"
SW=$(ns sw)
ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
i=1
for h in "${HOSTS[@]}"; do
  ip netns add "$(ns "$h")"
  ip link add "e$ID-$h" type veth peer name eth0 netns "$(ns "$h")"
  ip link set "e$ID-$h" netns "$SW"
  ip -n "$SW" link set "e$ID-$h" master br0 up
  ip -n "$(ns "$h")" addr add "10.77.0.$i/24" dev eth0
  ip -n "$(ns "$h")" link set eth0 up
  ip -n "$(ns "$h")" link set lo up
  echo "   $h: 10.77.0.$i (network namespace $(ns "$h"))"
  mkdir -p "$E2E/$h"
  i=$((i + 1))
done

python3 ci/playbook.py docs/playbook.md "$E2E" "$(IFS=,; echo "${HOSTS[*]}")"
