#!/usr/bin/env bash
# Checks an OpenWrt .ipk of flor: the ar layout opkg reads, the control fields, the
# files and their modes, that the binary is a static build for the package's
# architecture (and runs under qemu when a qemu-user for it is installed), the procd
# init script (shellcheck, and its start_service run under busybox ash against a
# scratch /etc/flor), the maintainer scripts, and that a rebuild gives the same bytes.
# With FLOR and RETECTL, the must-show: the package's `flor service run`, run under
# qemu-user as the init script's procd instance, picks up a rete that a plain
# `flor enroll <bundle>` adds, and curl gets a page through the emulated node.
#
# usage: packaging/tests/test-ipk.sh IPK ARCH BINARY [BOARD_TOML [FLOR RETECTL]]
#   IPK         the package to check (from packaging/openwrt/build-ipk.sh)
#   ARCH        the OpenWrt architecture it must declare, e.g. mipsel_24kc
#   BINARY      the flor it was built from (compared byte for byte, and rebuilt from)
#   BOARD_TOML  optional boards/<board>.toml: its [file].expect and [qemu] are used
#   FLOR, RETECTL  host builds for the rete's other nodes and its operator
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/tests/lib.sh
source "$here/lib.sh"
# shellcheck source=packaging/tests/rete.sh
source "$here/rete.sh"
repo=$(cd "$here/../.." && pwd)
ipk=${1:?usage: test-ipk.sh IPK ARCH BINARY [BOARD_TOML [FLOR RETECTL]]}
arch=${2:?ARCH}
binary=${3:?BINARY}
board=${4:-}
flor=${5:-}
retectl=${6:-}
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
for f in "$ipk" "$binary" ${board:+"$board"}; do
	[ -f "$f" ] || { echo "test-ipk.sh: $f: no such file" >&2; echo "0 passed, 1 failed"; exit 1; }
done
ipk=$(abs "$ipk")
binary=$(abs "$binary")
[ -z "$board" ] || board=$(abs "$board")

T=$(mktemp -d)
trap 'rete_down; rm -rf "$T"' EXIT

echo "== $(basename "$ipk"): archive layout"
check "ar members are debian-binary, control.tar.gz, data.tar.gz in that order" \
	[ "$(ar t "$ipk" | tr '\n' ' ')" = "debian-binary control.tar.gz data.tar.gz " ]
mkdir -p "$T/ar"
# busybox's ar reader is the code opkg's own unpacker descends from.
if command -v busybox >/dev/null && busybox ar --help >/dev/null 2>&1; then
	(cd "$T/ar" && busybox ar x "$ipk")
	check "busybox ar (opkg's reader lineage) unpacks it" [ -s "$T/ar/data.tar.gz" ]
else
	(cd "$T/ar" && ar x "$ipk")
fi
check "debian-binary is 2.0" [ "$(cat "$T/ar/debian-binary")" = 2.0 ]
mkdir -p "$T/control" "$T/data"
tar -C "$T/control" -xzf "$T/ar/control.tar.gz"
tar -C "$T/data" -xzf "$T/ar/data.tar.gz"

echo "== control"
field() { sed -n "s/^$1: //p" "$T/control/control"; }
check "Package: flor" [ "$(field Package)" = flor ]
check "Version is <upstream>-<release> ($(field Version))" grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+-[0-9]+$' <<<"$(field Version)"
check "Architecture: $arch" [ "$(field Architecture)" = "$arch" ]
check "Depends: procd (static binary: no libraries; procd runs the init script)" [ "$(field Depends)" = procd ]
check "Maintainer is set" [ -n "$(field Maintainer)" ]
check "Description has a summary and a long text" \
	bash -c "[ -n \"\$(sed -n 's/^Description: //p' '$T/control/control')\" ] && grep -q '^ ' '$T/control/control'"
sum=$(find "$T/data" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
check "Installed-Size is the sum of the files ($sum)" [ "$(field Installed-Size)" = "$sum" ]
check "conffiles lists /etc/config/flor" [ "$(cat "$T/control/conffiles")" = /etc/config/flor ]
check "control.tar.gz holds exactly control, conffiles, postinst, prerm" \
	[ "$(tar -tzf "$T/ar/control.tar.gz" | sort | tr '\n' ' ')" = "./ ./conffiles ./control ./postinst ./prerm " ]

echo "== data"
listing=$(tar -tvzf "$T/ar/data.tar.gz" | awk '$1 !~ /^d/ {print $1, $2, $6}' | sort -k3)
expected="-rw-r--r-- 0/0 ./etc/config/flor
-rwxr-xr-x 0/0 ./etc/init.d/flor
-rwxr-xr-x 0/0 ./usr/bin/flor
-rw-r--r-- 0/0 ./usr/share/bash-completion/completions/flor"
check "data holds /usr/bin/flor, /etc/init.d/flor, /etc/config/flor, bash's completion, root-owned, right modes" [ "$listing" = "$expected" ]
[ "$listing" = "$expected" ] || printf '     got:\n%s\n' "$listing"
check "every entry in both tars is owned by 0/0" \
	bash -c "! tar -tvzf '$T/ar/data.tar.gz' | awk '{print \$2}' | grep -v '^0/0$' && ! tar -tvzf '$T/ar/control.tar.gz' | awk '{print \$2}' | grep -v '^0/0$'"
check "/usr/bin/flor is the given binary, byte for byte" cmp -s "$binary" "$T/data/usr/bin/flor"

echo "== the binary"
desc=$(file -b "$T/data/usr/bin/flor")
echo "     file: $desc"
expect=()
qemu=""
qemu_cpu=""
if [ -n "$board" ]; then
	mapfile -t expect < <(python3 -c 'import sys, tomllib; [print(e) for e in tomllib.load(open(sys.argv[1], "rb"))["file"]["expect"]]' "$board")
	qemu=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("qemu", {}).get("binary", ""))' "$board")
	qemu_cpu=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("qemu", {}).get("cpu", ""))' "$board")
fi
# Without a board file, what every build for the architecture family must show.
case "$arch" in
mipsel_*) fam=("ELF 32-bit LSB executable" "MIPS"); dq="qemu-mipsel-static" ;;
mips_*) fam=("ELF 32-bit MSB executable" "MIPS"); dq="qemu-mips-static" ;;
arm_*) fam=("ELF 32-bit LSB executable" "ARM, EABI5"); dq="qemu-arm-static" ;;
aarch64_*) fam=("ELF 64-bit LSB executable" "ARM aarch64"); dq="qemu-aarch64-static" ;;
*) fam=("ELF 64-bit LSB executable" "x86-64"); dq="" ;;
esac
[ "${#expect[@]}" -gt 0 ] || expect=("${fam[@]}")
[ -n "$qemu" ] || qemu=$dq
printf '%s\n' "${expect[@]}" | grep -qx "statically linked" || expect+=("statically linked")
for e in "${expect[@]}"; do
	check "file says '$e'" grep -qF "$e" <<<"$desc"
done
check "not a static-pie (it crashed under qemu on MIPS; see boards/)" bash -c "! grep -q 'pie executable' <<<'$desc'"
upstream=$(field Version)
upstream=${upstream%-*}
if [ -n "$qemu" ] && command -v "$qemu" >/dev/null; then
	ver=$("$qemu" ${qemu_cpu:+-cpu "$qemu_cpu"} "$T/data/usr/bin/flor" --version 2>&1 || true)
	check "it runs under $qemu${qemu_cpu:+ -cpu $qemu_cpu}: '$ver' = 'flor $upstream'" [ "$ver" = "flor $upstream" ]
elif [ -z "$qemu" ]; then
	ver=$("$T/data/usr/bin/flor" --version 2>&1 || true)
	check "it runs: '$ver' = 'flor $upstream'" [ "$ver" = "flor $upstream" ]
else
	echo "  note: $qemu is not installed; the binary was not run"
fi

echo "== init script"
init=$T/data/etc/init.d/flor
check "runs under /etc/rc.common" [ "$(head -n1 "$init")" = "#!/bin/sh /etc/rc.common" ]
check "USE_PROCD=1" grep -qx 'USE_PROCD=1' "$init"
check "START and STOP are set" bash -c "grep -Eqx 'START=[0-9]+' '$init' && grep -Eqx 'STOP=[0-9]+' '$init'"
check "defines start_service and service_triggers" bash -c "grep -q '^start_service()' '$init' && grep -q '^service_triggers()' '$init'"
check "procd instance respawns" grep -q 'procd_set_param respawn' "$init"
if command -v shellcheck >/dev/null; then
	check "shellcheck: init script, postinst, prerm" shellcheck "$init" "$T/control/postinst" "$T/control/prerm"
else
	bad "shellcheck is not installed (apt-get install shellcheck)"
fi

# Run the real start_service against a scratch /etc/flor, with rc.common's procd and
# UCI helpers replaced by ones that print each call: one instance per enrolled scope.
# OpenWrt's shell is busybox ash; use it when installed, else this machine's sh.
sh_=(sh)
if command -v busybox >/dev/null && busybox ash -c true 2>/dev/null; then sh_=(busybox ash); fi
mkdir -p "$T/home/retes/demo.flor" "$T/home/retes/home" "$T/home/retes/not-enrolled"
echo '{}' >"$T/home/retes/demo.flor/scope.json"
echo '{}' >"$T/home/retes/home/scope.json"
cat >"$T/harness.sh" <<'EOF'
config_load() { :; }
config_get_bool() { eval "$1=\${FLOR_TEST_ENABLED:-$4}"; }
config_get() { eval "$1=\$4"; }
procd_open_instance() { echo "instance $1"; }
procd_set_param() { echo "  $*"; }
procd_close_instance() { echo "close"; }
. "$1"
start_service
EOF
got=$(FLOR_HOME="$T/home" FLOR_RUNTIME_DIR="$T/run" "${sh_[@]}" "$T/harness.sh" "$init")
want="instance flor
  command /usr/bin/flor service run
  env FLOR_HOME=$T/home FLOR_RUNTIME_DIR=$T/run RUST_LOG=warn FLOR_LOG=procd
  respawn 3600 5 0
  stdout 1
  stderr 1
close"
check "start_service (${sh_[*]}): one respawning 'flor service run' for every scope" [ "$got" = "$want" ]
[ "$got" = "$want" ] || diff <(echo "$want") <(echo "$got") | sed 's/^/     /' || true
got=$(FLOR_TEST_ENABLED=0 FLOR_HOME="$T/home" "${sh_[@]}" "$T/harness.sh" "$init")
check "option enabled '0' starts nothing" [ -z "$got" ]
# The instance's command, run as procd would (under qemu when the binary is foreign).
run_flor() {
	if [ -n "$qemu" ]; then timeout 20 "$qemu" ${qemu_cpu:+-cpu "$qemu_cpu"} "$T/data/usr/bin/flor" "$@"
	else timeout 20 "$T/data/usr/bin/flor" "$@"; fi
}
check "the instance's command line is one the binary accepts (exit 0 on --help)" \
	run_flor service run --help

echo "== the service under qemu-user picks up a newly enrolled rete"
# The init script's one instance, `flor service run` with its environment, run from the
# package's binary under qemu-user. The service starts each agent, and each agent its
# vertex, from /proc/self/exe: a foreign binary the kernel can run only through
# binfmt_misc. So the service runs in a user namespace of its own with a binfmt_misc
# instance (Linux 6.7+) that registers qemu for the package's architecture; nothing
# is registered on this machine. FLOR_HOME and FLOR_RUNTIME_DIR name a scratch
# /etc/flor and /var/run/flor, as the init script passes them to procd.
case "$arch" in
mipsel_*) bf_magic='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00'
	bf_mask='\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
mips_*) bf_magic='\x7fELF\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08'
	bf_mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff' ;;
arm_*) bf_magic='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00'
	bf_mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
aarch64_*) bf_magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
	bf_mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
*) bf_magic="" ;;
esac
qemu_path=$(command -v "$qemu" 2>/dev/null || true)
if [ -z "$flor" ] || [ -z "$retectl" ]; then
	echo "  note: no host FLOR and RETECTL given: the service was not run against a rete"
elif [ -z "$bf_magic" ] || [ -z "$qemu_path" ]; then
	echo "  note: no qemu-user for $arch here: the service was not run"
elif ! unshare --user --map-root-user --mount --fork sh -c 'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc' 2>/dev/null; then
	bad "a user namespace with its own binfmt_misc (Linux 6.7+, unshare) to run the service's children under qemu"
elif ! rete_up "$T/rete" "$flor" "$retectl"; then
	bad "a rete runs on loopback (mgmt01 with the config-server, alpha with the wiki)"
else
	ok "a rete runs on loopback (mgmt01 with the config-server, alpha with the wiki)"
	router=$T/router
	mkdir -p "$router/etc/flor/retes" "$router/var/run/flor" "$router/tmp"
	router_env=(env FLOR_HOME="$router/etc/flor" FLOR_RUNTIME_DIR="$router/var/run/flor"
		RUST_LOG=warn FLOR_LOG=procd ${qemu_cpu:+QEMU_CPU="$qemu_cpu"})
	# shellcheck disable=SC2016 # $1.. belong to the inner sh
	"${router_env[@]}" unshare --user --map-root-user --mount --fork --kill-child=TERM sh -c '
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || exit 97
		printf "%s" ":flor-test:M::$1:$2:$3:F" >/proc/sys/fs/binfmt_misc/register || exit 98
		shift 3
		exec "$@"' _ "$bf_magic" "$bf_mask" "$qemu_path" "$T/data/usr/bin/flor" service run \
		>"$T/procd.log" 2>&1 &
	svc=$!
	# As root on the router: plain `flor enroll <bundle>`, run under qemu too.
	t0=$(date +%s%N)
	enrolled=$(cd "$router/tmp" && "${router_env[@]}" "$qemu_path" "$T/data/usr/bin/flor" enroll "$RETE_BUNDLE" 2>&1) && erc=0 || erc=$?
	took=$((($(date +%s%N) - t0) / 1000000))
	printf '%s\n' "$enrolled" | sed 's/^/     /'
	# shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
	check "flor enroll <bundle> alone exits 0 and says traffic flows (${took} ms under qemu)" \
		bash -c '[ "$1" = 0 ] && grep -q "runs its vertex: traffic flows" <<<"$2"' _ "$erc" "$enrolled"
	status=$("${router_env[@]}" "$qemu_path" "$T/data/usr/bin/flor" agent status --json 2>/dev/null || true)
	bob=$(socks_port_of "$status" bob 2>/dev/null || echo 0)
	page=$(curl -sS --max-time 30 --socks5-hostname "127.0.0.1:$bob" http://wiki.demo.flor.rete/ 2>&1 || true)
	check "curl gets the wiki through the emulated node's SOCKS5 port $bob (bob): '$page'" [ "$page" = "$RETE_WIKI" ]
	check "the agents' lines go to the service's streams (procd's log), not to the flash" \
		test ! -e "$router/etc/flor/retes/demo.flor/agent.log"
	if [ "$erc" != 0 ] || [ "$page" != "$RETE_WIKI" ]; then
		echo "     the service's output (logd):"
		sed 's/^/     /' "$T/procd.log" | tail -n 20
	fi
	# unshare --fork ignores SIGTERM itself; when it dies, --kill-child sends the
	# service SIGTERM, as procd's stop would.
	kill -KILL "$svc" 2>/dev/null || true
	wait "$svc" 2>/dev/null || true
	check "stopping the service stops the agent and its vertex (port $bob closed)" \
		rete_wait 30 python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $bob)) == 0)"
	rete_down
fi

echo "== maintainer scripts (image-build mode, IPKG_INSTROOT)"
I=$T/instroot
mkdir -p "$I"
IPKG_INSTROOT=$I "${sh_[@]}" "$T/control/postinst"
check "postinst makes /etc/flor/retes mode 700" [ "$(mode "$I/etc/flor/retes")" = 700 ]
check "postinst enables boot links S95flor and K10flor" \
	[ "$(readlink "$I/etc/rc.d/S95flor") $(readlink "$I/etc/rc.d/K10flor")" = "../init.d/flor ../init.d/flor" ]
check "prerm does nothing to an image being built" env IPKG_INSTROOT="$I" "${sh_[@]}" "$T/control/prerm"

echo "== reproducible"
again=$("$repo/packaging/openwrt/build-ipk.sh" --binary "$binary" --arch "$arch" --version "$(field Version)" --out "$T/again")
check "a rebuild from the same inputs gives the same bytes" cmp -s "$ipk" "$again"

summary
