#!/usr/bin/env bash
# Builds flor's OpenWrt package (.ipk) with standard tools, without the OpenWrt SDK.
#
# An .ipk is an ar archive of three members, in this order (as dpkg-deb writes them):
#   debian-binary     "2.0\n"
#   control.tar.gz    ./control, ./conffiles, ./postinst, ./prerm
#   data.tar.gz       ./usr/bin/flor, ./etc/init.d/flor, ./etc/config/flor,
#                     ./usr/share/bash-completion/completions/flor (packaging/extras.sh)
# Every tar entry is owned by root (0:0), dated SOURCE_DATE_EPOCH and sorted, and gzip
# stores no name or time, so the same inputs give the same bytes.
#
# usage: packaging/openwrt/build-ipk.sh --binary FILE --arch OPENWRT_ARCH [--version V] [--out DIR]
#   FILE          a static musl flor for that architecture (checked with `file`)
#   OPENWRT_ARCH  the package architecture opkg matches against the router's, e.g.
#                 mipsel_24kc (ramips/mt7621), mips_24kc (ath79),
#                 arm_cortex-a7_neon-vfpv4 (ipq40xx), aarch64_cortex-a53, x86_64
#   V             package version (default: the workspace version from Cargo.toml, "-1")
#   DIR           output directory (default: target/packages)
#   --maintainer  the Maintainer field (default: "Florete project")
# Prints the path of the package it wrote.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

binary=""
arch=""
version=""
maintainer="Florete project"
out="$repo/target/packages"
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary=${2:?--binary needs a file}; shift ;;
	--arch) arch=${2:?--arch needs an OpenWrt package architecture}; shift ;;
	--version) version=${2:?--version needs a value}; shift ;;
	--maintainer) maintainer=${2:?--maintainer needs a value}; shift ;;
	--out) out=${2:?--out needs a directory}; shift ;;
	*) echo "build-ipk.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
	esac
	shift
done
die() { echo "build-ipk.sh: $*" >&2; exit 1; }
[ -n "$binary" ] || die "--binary FILE is required"
[ -n "$arch" ] || die "--arch OPENWRT_ARCH is required (e.g. mipsel_24kc)"
[ -f "$binary" ] || die "$binary: no such file"
if [ -z "$version" ]; then
	# The first `version = "..."` in the root Cargo.toml is [workspace.package]'s.
	v=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
	[ -n "$v" ] || die "no version in $repo/Cargo.toml; pass --version"
	version="$v-1"
fi

# What `file` must say for each OpenWrt architecture family. OpenWrt's userland is
# musl and flor ships static, so the package needs no library from the router.
case "$arch" in
mipsel_*) want=("ELF 32-bit LSB executable" "MIPS") ;;
mips_*) want=("ELF 32-bit MSB executable" "MIPS") ;;
arm_*) want=("ELF 32-bit LSB executable" "ARM, EABI5") ;;
aarch64_*) want=("ELF 64-bit LSB executable" "ARM aarch64") ;;
x86_64) want=("ELF 64-bit LSB executable" "x86-64") ;;
*) die "unknown OpenWrt architecture $arch (mipsel_*, mips_*, arm_*, aarch64_*, x86_64)" ;;
esac
want+=("statically linked")
desc=$(file -b "$binary")
for w in "${want[@]}"; do
	case "$desc" in *"$w"*) ;; *) die "$binary is not a static $arch binary: file says '$desc' (missing '$w')" ;; esac
done

epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- data ---------------------------------------------------------------------
data=$work/data
install -d -m 0755 "$data/usr/bin" "$data/etc/init.d" "$data/etc/config"
install -m 0755 "$binary" "$data/usr/bin/flor"
install -m 0755 "$here/files/flor.init" "$data/etc/init.d/flor"
install -m 0644 "$here/files/flor.config" "$data/etc/config/flor"
# bash's completion (opkg install bash); ash, OpenWrt's shell, completes no
# arguments, and a router has no man: no man page, no zsh/fish files.
sh "$repo/packaging/extras.sh" --prefix /usr --shells bash --no-man "$data"

# --- control --------------------------------------------------------------------
ctl=$work/control
install -d -m 0755 "$ctl"
installed_size=$(find "$data" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
cat >"$ctl/control" <<EOF
Package: flor
Version: $version
Depends: procd
Source: packaging/openwrt
SourceName: flor
License: Apache-2.0
Section: net
Category: Network
Maintainer: $maintainer
Architecture: $arch
Installed-Size: $installed_size
Description: Florete node: agent and vertex (QUIC mTLS service overlay)
 One static binary, flor, that pulls this router's signed configuration from its
 rete, verifies it, and runs the vertex that forwards TCP over QUIC with mTLS,
 SPIFFE identities and RBAC. procd runs one flor service for every enrolled rete.
EOF
# opkg keeps a locally edited conffile on upgrade (writing the new one as -opkg).
echo /etc/config/flor >"$ctl/conffiles"
install -m 0755 "$here/control/postinst" "$ctl/postinst"
install -m 0755 "$here/control/prerm" "$ctl/prerm"

# --- archive --------------------------------------------------------------------
tarball() { # tarball DIR OUT: ./-relative, root-owned, sorted, dated, no gzip name/time
	tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
		-C "$1" -cf - . | gzip -n -9 >"$2"
}
pkg=$work/pkg
mkdir -p "$pkg"
printf '2.0\n' >"$pkg/debian-binary"
tarball "$ctl" "$pkg/control.tar.gz"
tarball "$data" "$pkg/data.tar.gz"
touch -d "@$epoch" "$pkg"/*
mkdir -p "$out"
out=$(cd "$out" && pwd)
ipk="$out/flor_${version}_${arch}.ipk"
rm -f "$ipk"
# D: zero uid/gid/mtime in the ar headers (deterministic), whatever this ar's default.
(cd "$pkg" && ar rcD "$ipk" debian-binary control.tar.gz data.tar.gz)
echo "$ipk"
