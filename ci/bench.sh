#!/usr/bin/env bash
# Data-plane measurements (not a test): direct TCP, a stunnel4 mTLS pair and
# Florete on the example rete, side by side in one run on loopback (release
# build of flor, real agents and vertices). Prints a markdown table; with
# `--section NAME` also rewrites that section of docs/performance.md.
# Options go to ci/bench.py (--reps, --seconds, --samples, --only, --note);
# BENCH_LO_MTU=1500 runs it all over a 1,500-byte loopback, BENCH_RTT_MS=2
# with hosts a 2 ms round trip apart (below).
# Takes ~6 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$PWD"
# shellcheck source=ci/setup.sh
source ci/setup.sh
# The other tunnel and the clients the bench drives (Debian names).
ensure_commands stunnel4:stunnel4 iperf3:iperf3 proxychains4:proxychains4 openssl:openssl git:git \
  ssh:openssh-client /usr/sbin/sshd:openssh-server microsocks:microsocks
# 1,000 held flows need ~4,000 descriptors across the clients and tunnels.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The client first: `cargo bench` builds flor in the bench profile too, and
# the release build below is the one measured.
CLIENT=$(cargo bench --locked -p flor --bench dataplane --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*dataplane-[0-9a-f]*\)).*/\1/p' | tail -1)
case "$CLIENT" in /*) ;; *) CLIENT="$SRC/$CLIENT" ;; esac
[ -x "$CLIENT" ] || { echo "bench client not built" >&2; exit 1; }
# FLOR_BIN: measure another flor (e.g. a build of main for the "before" rows).
# BENCH_NODE_FLOR: the flor alpha and laptop run instead (mgmt01 keeps FLOR_BIN),
# e.g. the openwrt-x86_64 board's static musl build for router memory figures:
#   BENCH_NODE_FLOR=target/boards/openwrt-x86_64/release/flor ci/bench.sh --only memory
if [ -z "${FLOR_BIN:-}" ]; then
  cargo build --locked --release -p flor
  FLOR_BIN="$SRC/target/release/flor"
fi
# retectl only prepares the rete: a debug build is enough.
cargo build --locked -p retectl
BENCH=(python3 ci/bench.py --src "$SRC" --flor "$(realpath "$FLOR_BIN")"
  --retectl "$SRC/target/debug/retectl" --client "$CLIENT"
  ${BENCH_NODE_FLOR:+--node-flor "$(realpath "$BENCH_NODE_FLOR")"} "$@")
# The bench runs in a network namespace of its own whenever it can (root):
# the example rete's fixed ports (config-server, QUIC, SOCKS5) are then its
# own, so a `ci/demo.sh` or a CI run on the same machine neither breaks it nor
# is broken by it. Its loopback is the kernel's same loopback driver (MTU
# 65536); the namespace's own sysctls (somaxconn, the local port range, some
# tcp_* settings) start at the kernel's defaults rather than the host's, which
# the bench's few hundred connections at a time do not reach. BENCH_PAUSE
# prints how to enter it.
# BENCH_LO_MTU=1500: that namespace's loopback gets that MTU, i.e. the packet
# size of an Ethernet path, for all tunnels alike (TCP keeps its segmentation
# offload there, as on a real NIC; QUIC's path MTU discovery stops at the
# link's size).
# BENCH_RTT_MS=2 (with --only latency): ci/bench.py delays the hops between the
# client's host and the servers' host to that round-trip time (iptables
# NFQUEUE and ci/delay.py), as between a laptop and a server.
if why=$(unshare --net true 2>&1); then
  [ -z "${BENCH_RTT_MS:-}" ] || ensure_commands iptables:iptables
  exec unshare --net sh -c 'ip link set lo up && ip link set lo mtu "$0" &&
    BENCH_NETNS=$(readlink /proc/self/ns/net) && export BENCH_NETNS && exec "$@"' \
    "${BENCH_LO_MTU:-65536}" "${BENCH[@]}"
fi
if [ -n "${BENCH_LO_MTU:-}${BENCH_RTT_MS:-}" ]; then
  echo "bench: BENCH_LO_MTU and BENCH_RTT_MS need a network namespace of the bench's own," \
    "and unshare --net failed (it needs root, or CAP_SYS_ADMIN in a container): $why" >&2
  exit 1
fi
echo "bench: no network namespace of its own (unshare --net: $why): on this machine's" \
  "loopback, so the example rete's ports must be free (no ci/demo.sh running)" >&2
exec "${BENCH[@]}"
