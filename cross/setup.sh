#!/usr/bin/env bash
# Installs Florete's cross toolchain from Debian packages and PyPI, idempotently.
#
# The one place the cross toolchain is defined: CI runs this script natively
# (ci/cross.sh calls it), and every cross/Dockerfile.* runs it at image build
# time, so what CI tests is what the images contain.
#
# What it installs and why:
#   rustc-web, cargo-web, rust-web-src  Debian's Rust 1.96 (bookworm-security) with the
#                                       matching library source, so `-Z build-std` can
#                                       build std for any target (MIPS is tier 3 upstream
#                                       and ships no std; rustup here has no other targets)
#   gcc-{aarch64,arm}-linux-gnu* + libc6-dev-*-cross
#                                       linkers and C compilers (ring) for the glibc boards
#   ziglang, cargo-zigbuild (pip)       linker and C compiler for the musl (OpenWrt) boards
#   qemu-user-static                    runs every board's binary on the build host
#   file, binutils-multiarch            linkage checks and symbol sizes for size-report
#   llvm                                the same for Mach-O (macOS boards), which binutils
#                                       cannot read on arm64
#
# Result: $FLOR_CROSS_HOME/bin (default /opt/florete-cross/bin) holds cargo, rustc,
# rustdoc (Debian's), zig and cargo-zigbuild; `source cross/env.sh` puts it first
# on PATH. Nothing else on the host is changed besides the Debian packages.
#
# Usage: cross/setup.sh            (as root, or with sudo available)
set -euo pipefail

FLOR_CROSS_HOME=${FLOR_CROSS_HOME:-/opt/florete-cross}
# Pinned so a rebuilt image gives the same linker; bump deliberately.
ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.15.2}
CARGO_ZIGBUILD_VERSION=${CARGO_ZIGBUILD_VERSION:-0.24.0}

PKGS=(
  rustc-web cargo-web rust-web-src
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
  qemu-user-static file binutils-multiarch
  llvm # llvm-nm and llvm-size: size-report reads the macOS boards' Mach-O with them
  ca-certificates python3 python3-venv
  curl # the real SOCKS5 client of ci/cross.sh's smoke test
)

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "cross/setup.sh: installing ${missing[*]}"
  # rustc-web 1.96 is published in bookworm-security; a debootstrap'd rootfs
  # lists only bookworm itself.
  if ! grep -rqs 'bookworm-security' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo 'deb http://deb.debian.org/debian-security bookworm-security main' \
      | sudo_ tee /etc/apt/sources.list.d/florete-bookworm-security.list >/dev/null
  fi
  sudo_ apt-get update -qq
  # rustc-web 1.96 lives in bookworm-security; apt picks the highest candidate.
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's rustc-web must be new enough for the -Z options the boards use.
rustc_minor=$(/usr/bin/rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "$rustc_minor" -lt 96 ]; then
  echo "cross/setup.sh: /usr/bin/rustc is 1.$rustc_minor; need rustc-web >= 1.96 from bookworm-security" >&2
  exit 1
fi
[ -d /usr/lib/rustlib/src/rust/library/std ] || { echo "cross/setup.sh: rust-web-src missing" >&2; exit 1; }

venv=$FLOR_CROSS_HOME/venv
if [ ! -x "$venv/bin/cargo-zigbuild" ] || [ ! -x "$venv/bin/python3" ] \
  || ! "$venv/bin/python3" -m ziglang version >/dev/null 2>&1; then
  sudo_ mkdir -p "$FLOR_CROSS_HOME"
  sudo_ chown "$(id -u):$(id -g)" "$FLOR_CROSS_HOME"
  # pip trusts its own certifi bundle, not the system store; where a network
  # intercepts TLS (its CA installed into /usr/local/share/ca-certificates, as
  # cross/Dockerfile does), the system bundle is the one that works.
  if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
  fi
  # Debian's python3: a venv keeps pip away from the system site-packages (PEP 668).
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
fi

# One bin dir with exactly the tools cross builds use, so a rustup proxy earlier
# on PATH cannot silently swap in another compiler.
bin=$FLOR_CROSS_HOME/bin
mkdir -p "$bin"
for t in cargo rustc rustdoc; do ln -sf "/usr/bin/$t" "$bin/$t"; done
ln -sf "$venv/bin/cargo-zigbuild" "$bin/cargo-zigbuild"
cat > "$bin/zig" <<ZIG
#!/bin/sh
exec "$venv/bin/python3" -m ziglang "\$@"
ZIG
chmod +x "$bin/zig"
cat > "$bin/zigar" <<ZIGAR
#!/bin/sh
exec "$venv/bin/python3" -m ziglang ar "\$@"
ZIGAR
chmod +x "$bin/zigar"

# Debian's toolchain in the shape rustup expects of a linked toolchain (bin/
# and lib/), for cross-rs on the host: ci/cross.sh --docker runs `rustup
# toolchain link florete-debian` on it. Symlinks, so the same directory names
# the image's identical Debian toolchain when cross-rs mounts it there.
tc=$FLOR_CROSS_HOME/toolchain
mkdir -p "$tc/bin"
for t in cargo rustc rustdoc; do ln -sf "/usr/bin/$t" "$tc/bin/$t"; done
ln -sfn /usr/lib "$tc/lib"

# Stable linker/C-compiler names for the musl boards, so plain `cargo build`
# (natively, in the images, and under cross-rs) links the same way. Each is the
# exact command cargo-zigbuild's own per-build wrapper runs: its `zig cc`
# front end filters the arguments zig does not take. The zig target names the
# ABI the board's rustc target uses (musleabi = soft float on MIPS).
zig_wrapper() { # <rust target> <zig target> [extra zig args]
  local rust_target=$1 zig_target=$2; shift 2
  cat > "$bin/zigcc-$rust_target" <<ZCC
#!/bin/sh
export CARGO_ZIGBUILD_ZIG_COMMAND="$bin/zig"
exec "$venv/bin/cargo-zigbuild" zig cc -- -g -fno-sanitize=all -target $zig_target $* "\$@"
ZCC
  chmod +x "$bin/zigcc-$rust_target"
}
zig_wrapper mipsel-unknown-linux-musl mipsel-linux-musleabi
zig_wrapper mips-unknown-linux-musl mips-linux-musleabi
zig_wrapper armv7-unknown-linux-musleabihf arm-linux-musleabihf -mcpu=generic+v7a+vfp3d16+thumb2
zig_wrapper aarch64-unknown-linux-musl aarch64-linux-musl
zig_wrapper x86_64-unknown-linux-musl x86_64-linux-musl
# macOS (boards macos-*): zig brings libSystem's stubs; no Apple SDK needed.
zig_wrapper aarch64-apple-darwin aarch64-macos-none
zig_wrapper x86_64-apple-darwin x86_64-macos-none

echo "cross/setup.sh: ok: $("$bin/rustc" --version), zig $("$bin/zig" version), $("$bin/cargo-zigbuild" --version)"
