#!/usr/bin/env bash
# Builds (or takes) flor's binaries, builds every package, and checks them:
#   install.sh  in scratch roots, with a host build of flor (packaging/tests/test-install.sh);
#               its unit's `flor service run` picks up a node that `flor enroll` adds
#   .deb        amd64 from the host build, installed in a Debian container built from a
#               debootstrap base: the service picks up `flor enroll <bundle>` and
#               traffic flows (test-deb.sh); arm64 and armhf from the rpi-aarch64 and
#               rpi-armv7 board builds (ci/test.sh's ci/cross.sh builds every board),
#               installed the same way in that Debian with the Pi's architecture
#               added, the packaged binary run by qemu-user through binfmt_misc
#   .ipk        for the mipsel router board, from its static musl build (test-ipk.sh);
#               its `flor service run` under qemu-user picks up a newly enrolled node
#   .msi        around an x86_64-pc-windows-gnu flor.exe (test-msi.sh): tables, then
#               install, service, a rete node and uninstall under Wine
#
# usage: ci/packaging-test.sh [--flor FILE] [--mipsel FILE] [--exe FILE | --no-msi]
#   --flor FILE    host flor for install.sh, the amd64 .deb and the rete the packaged
#                  nodes join (default: target/debug/flor, which `cargo test` has built
#                  already in ci/test.sh; retectl is taken from beside it)
#   --mipsel FILE  static mipsel musl flor (default: build it with size-report for the
#                  openwrt-mipsel board, the cross builders' recipe)
#   --exe FILE     flor.exe to wrap (default: packaging/windows/build-exe.sh)
#   --no-msi       skip the Windows MSI (it needs the cross toolchain, MinGW and Wine)
# Packages land in target/packages/. Exits non-zero when any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

flor=""
mipsel=""
exe=""
msi=1
while [ $# -gt 0 ]; do
	case "$1" in
	--flor) flor=${2:?}; shift ;;
	--mipsel) mipsel=${2:?}; shift ;;
	--exe) exe=${2:?}; shift ;;
	--no-msi) msi=0 ;;
	-h | --help) sed -n '2,23p' "$0"; exit 0 ;;
	*) echo "packaging-test.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

step() { printf '\n== packaging: %s\n' "$*"; }
t0=$(date +%s)
since() { echo "($(($(date +%s) - t0)) s)"; }

# Tools the checks use, from Debian.
need=()
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v busybox >/dev/null || need+=(busybox)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v xmllint >/dev/null || need+=(libxml2-utils)
command -v file >/dev/null || need+=(file)
if [ "$msi" = 1 ]; then
	command -v wixl >/dev/null || need+=(wixl)
	command -v msiinfo >/dev/null || need+=(msitools)
	command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
	# Runs the MSI's install/uninstall and the installed flor.exe (test only).
	[ -x /usr/lib/wine/wine64 ] || need+=(wine64)
	command -v pgrep >/dev/null || need+=(procps)     # windows-node.sh: no flor.exe left
	command -v curl >/dev/null || need+=(curl)        # windows-node.sh: the HTTP client
fi
if [ "${#need[@]}" -gt 0 ]; then
	[ "$(id -u)" = 0 ] || { echo "packaging-test.sh: install ${need[*]} (as root)" >&2; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

results=()
run_check() { # run_check NAME CMD...: runs a test script, remembers its closing line
	local name=$1 out rc
	shift
	out=$("$@" 2>&1) && rc=0 || rc=$?
	printf '%s\n' "$out"
	results+=("$name: $(tail -n1 <<<"$out")")
	[ "$rc" = 0 ] || failed=1
}
failed=0

# Only this run's packages in target/packages.
rm -f target/packages/flor_*.ipk target/packages/flor_*.deb target/packages/flor-*.msi target/packages/flor-amd64

step "shellcheck"
run_check shellcheck bash -c 'shellcheck -x packaging/install.sh packaging/openwrt/build-ipk.sh \
	packaging/openwrt/files/flor.init packaging/openwrt/control/postinst packaging/openwrt/control/prerm \
	packaging/windows/build-msi.sh packaging/windows/build-exe.sh packaging/tests/*.sh ci/packaging-test.sh \
	packaging/deb/build-deb.sh packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm ci/debian-image.sh \
	&& echo "1 passed, 0 failed"'

step "install.sh $(since)"
if [ -z "$flor" ]; then
	# The same build `cargo test --workspace` made in ci/test.sh (same features, so
	# nothing is rebuilt there); standalone, it compiles the tests too.
	nice -n 19 cargo test -q --workspace --locked --no-run
	flor=target/debug/flor
fi
retectl=$(dirname "$flor")/retectl
run_check install.sh packaging/tests/test-install.sh "$flor" "$retectl"

step "Debian .deb $(since)"
# Packages ship stripped binaries (Debian policy; the release profile strips too):
# the debug build's 80 MB of debug info would only slow xz down.
mkdir -p target/packages
strip -o target/packages/flor-amd64 "$flor"
deb=$(packaging/deb/build-deb.sh --binary target/packages/flor-amd64 --arch amd64)
ls -l "$deb"
run_check deb-amd64 packaging/tests/test-deb.sh "$deb" amd64 target/packages/flor-amd64 "$flor" "$retectl"
# The Raspberry Pi packages wrap the boards' cross builds, which ci/cross.sh (run
# by ci/test.sh before this) leaves in target/boards; run alone, this script
# packages them only when they are already built.
for row in "rpi-aarch64 arm64" "rpi-armv7 armhf"; do
	read -r b a <<<"$row"
	pi=target/boards/$b/release/flor
	if [ -f "$pi" ]; then
		deb=$(packaging/deb/build-deb.sh --binary "$pi" --arch "$a")
		run_check "deb-$a" packaging/tests/test-deb.sh "$deb" "$a" "$pi" "$flor" "$retectl"
	else
		results+=("deb-$a: not built (no $pi; ci/cross.sh $b builds it)")
	fi
done

step "OpenWrt .ipk (openwrt-mipsel) $(since)"
board=boards/openwrt-mipsel.toml
if [ -z "$mipsel" ]; then
	# The cross builders' recipe (ci/cross.sh): their toolchain, size-report's build of
	# the board. After ci/cross.sh in ci/test.sh this is a no-op build.
	cross/setup.sh >/dev/null
	cargo build -q --locked -p size-report
	sr=$repo/target/debug/size-report
	# shellcheck source=/dev/null
	mipsel=$(source cross/env.sh && nice -n 19 "$sr" build openwrt-mipsel | tail -n1)
fi
ipk=$(packaging/openwrt/build-ipk.sh --binary "$mipsel" --arch mipsel_24kc)
ls -l "$ipk"
run_check ipk packaging/tests/test-ipk.sh "$ipk" mipsel_24kc "$mipsel" "$board" "$flor" "$retectl"

if [ "$msi" = 1 ]; then
	step "Windows MSI $(since)"
	[ -n "$exe" ] || exe=$(packaging/windows/build-exe.sh)
	version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
	msi_file=$(packaging/windows/build-msi.sh --exe "$exe" --version "$version")
	ls -l "$msi_file"
	run_check msi packaging/tests/test-msi.sh "$msi_file" "$exe" "$version" "$flor" "$(dirname "$flor")/retectl"
else
	results+=("msi: not run (--no-msi)")
fi

step "summary $(since)"
printf '  %s\n' "${results[@]}"
echo "packages in target/packages: $(find "$repo/target/packages" -maxdepth 1 -type f -printf '%f ' | sort)"
exit "$failed"
