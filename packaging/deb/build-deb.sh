#!/usr/bin/env bash
# Builds flor's Debian package (.deb) for Debian and Raspberry Pi OS with dpkg-deb.
#
#   amd64   the native x86_64 build (target/release/flor)
#   arm64   board rpi-aarch64: Raspberry Pi 3/4/5 with a 64-bit OS
#   armhf   board rpi-armv7: Raspberry Pi 2 and later with a 32-bit OS (ARMv7; the
#           Pi 1 and Zero are ARMv6 and cannot run it)
#
# What it installs (the one list below, FILES, says it for every file):
#   /usr/bin/flor                      the binary
#   /lib/systemd/system/flor.service   packaging/systemd/flor.service as it is: one
#                                      `flor service run` for every enrolled rete
#   /usr/share/{bash-completion,zsh,fish,man}/...  completions and flor.1 (packaging/extras.sh)
# and the maintainer scripts in packaging/deb/ make /etc/flor/retes (0700), enable
# and start the service on install, restart it on upgrade, stop it on removal.
# Enrolled scopes (/etc/flor, keys included) stay even on purge.
#
# usage: packaging/deb/build-deb.sh --binary FILE --arch amd64|arm64|armhf [--version V] [--out DIR]
#   FILE  a flor built for that architecture (checked with `file`)
#   V     package version (default: the workspace version from Cargo.toml, "-1")
#   DIR   output directory (default: target/packages)
#   --maintainer  the Maintainer field
# Depends: is read from the binary (its NEEDED libraries and newest GLIBC_ symbol
# version). Every entry is owned by root and dated SOURCE_DATE_EPOCH, so the same
# inputs give the same bytes. Prints the path of the package it wrote.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

binary=""
arch=""
version=""
maintainer="Florete project <noreply@florete.invalid>"
out="$repo/target/packages"
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary=${2:?--binary needs a file}; shift ;;
	--arch) arch=${2:?--arch needs amd64, arm64 or armhf}; shift ;;
	--version) version=${2:?--version needs a value}; shift ;;
	--maintainer) maintainer=${2:?--maintainer needs a value}; shift ;;
	--out) out=${2:?--out needs a directory}; shift ;;
	*) echo "build-deb.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
	esac
	shift
done
die() { echo "build-deb.sh: $*" >&2; exit 1; }
[ -n "$binary" ] || die "--binary FILE is required"
[ -f "$binary" ] || die "$binary: no such file"
if [ -z "$version" ]; then
	# The first `version = "..."` in the root Cargo.toml is [workspace.package]'s.
	v=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
	[ -n "$v" ] || die "no version in $repo/Cargo.toml; pass --version"
	version="$v-1"
fi

# What `file` must say for each Debian architecture.
case "$arch" in
amd64) want=("ELF 64-bit LSB" "x86-64") ;;
arm64) want=("ELF 64-bit LSB" "ARM aarch64") ;;
armhf) want=("ELF 32-bit LSB" "ARM, EABI5") ;;
*) die "--arch must be amd64, arm64 or armhf, not '$arch'" ;;
esac
desc=$(file -b "$binary")
for w in "${want[@]}"; do
	case "$desc" in *"$w"*) ;; *) die "$binary is not an $arch binary: file says '$desc' (missing '$w')" ;; esac
done

# Every installed file: mode, path in the package, source. The one list to extend.
FILES=(
	"0755 /usr/bin/flor $binary"
	"0644 /lib/systemd/system/flor.service $repo/packaging/systemd/flor.service"
)

# Depends, from the binary's dynamic section: glibc's libraries are libc6 (at least
# the newest GLIBC_x.y it references), libgcc_s is libgcc-s1. A static binary needs none.
depends=()
needed=$(readelf -dW "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
glibc_min=$(readelf -VW "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1 || true)
for lib in $needed; do
	case "$lib" in
	libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*.so.*) dep="libc6${glibc_min:+ (>= $glibc_min)}" ;;
	libgcc_s.so.1) dep=libgcc-s1 ;;
	*) die "$binary needs $lib, which this script does not know the Debian package of" ;;
	esac
	case " ${depends[*]:-} " in *" $dep "*) ;; *) depends+=("$dep") ;; esac
done
depends_line=""
if [ "${#depends[@]}" -gt 0 ]; then
	depends_line="Depends: $(printf '%s, ' "${depends[@]}" | sed 's/, $//')"
fi

epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/pkg
for row in "${FILES[@]}"; do
	read -r mode dest src <<<"$row"
	[ -f "$src" ] || die "$src: no such file (for $dest)"
	install -D -m "$mode" "$src" "$pkg$dest"
done
# Shell completions (bash, zsh, fish) and the man page: packaging/extras.sh, the
# same installer install.sh uses, into the package root.
sh "$repo/packaging/extras.sh" --prefix /usr --version "${version%-*}" "$pkg" >/dev/null
find "$pkg" -type d -exec chmod 0755 {} +

install -d -m 0755 "$pkg/DEBIAN"
# Installed-Size: the files' bytes in KiB, rounded up (what dpkg -s and apt show).
installed_kib=$(find "$pkg" -type f -printf '%s\n' | awk '{s += $1} END {print int((s + 1023) / 1024)}')
{
	cat <<CONTROL
Package: flor
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_kib
CONTROL
	[ -z "$depends_line" ] || echo "$depends_line"
	cat <<'CONTROL'
Section: net
Priority: optional
Description: Florete node: agent and vertex (QUIC mTLS service overlay)
 One binary, flor, that pulls this host's signed configuration from its rete,
 verifies it, and runs the vertex that forwards TCP over QUIC with mTLS, SPIFFE
 identities and RBAC. The flor service (systemd) runs an agent for every rete
 enrolled under /etc/flor: `sudo flor enroll <bundle>` is all a new rete takes.
CONTROL
} >"$pkg/DEBIAN/control"
for script in postinst prerm postrm; do
	install -m 0755 "$here/$script" "$pkg/DEBIAN/$script"
done
find "$pkg" -exec touch -h -d "@$epoch" {} +

mkdir -p "$out"
out=$(cd "$out" && pwd)
deb="$out/flor_${version}_${arch}.deb"
rm -f "$deb"
# --root-owner-group: every entry 0:0 whoever builds; xz as Debian's own packages.
SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
