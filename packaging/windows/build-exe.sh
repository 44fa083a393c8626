#!/usr/bin/env bash
# Cross-builds flor.exe for x86_64-pc-windows-gnu on this Debian machine.
#
# rustup here has no Windows target, so this uses the cross toolchain's Debian rustc
# (rustc-web + rust-web-src, installed by cross/setup.sh) with -Z build-std, and
# Debian's MinGW-w64 gcc as linker and as C compiler for ring. Debian's rustc ships no
# MinGW CRT objects of its own, so link-self-contained=no makes gcc supply them.
#
# usage: packaging/windows/build-exe.sh      prints the path of flor.exe
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
	[ "$(id -u)" = 0 ] || { echo "build-exe.sh: install gcc-mingw-w64-x86-64 (as root)" >&2; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-mingw-w64-x86-64 >/dev/null
fi
if [ -f cross/env.sh ]; then
	# shellcheck source=/dev/null
	source cross/env.sh
fi
if [ ! -d /usr/lib/rustlib/src/rust/library/std ] || [ -z "${RUSTC:-}" ]; then
	echo "build-exe.sh: needs the cross toolchain (Debian rustc-web + rust-web-src): run cross/setup.sh" >&2
	exit 1
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS="-Clink-self-contained=no"
export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc
export AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
nice -n 19 cargo build --release --locked -p flor --bin flor \
	--target x86_64-pc-windows-gnu -Z build-std=std,panic_abort --target-dir target/win >&2
echo "$repo/target/win/x86_64-pc-windows-gnu/release/flor.exe"
