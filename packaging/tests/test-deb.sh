#!/usr/bin/env bash
# Checks a Debian package of flor (packaging/deb/build-deb.sh): the control fields
# and Depends read from the binary, the files and their modes, the unit (equal to
# packaging/systemd/flor.service), the binary (`file`), the maintainer scripts, and
# that a rebuild gives the same bytes. With FLOR and RETECTL given, it is then installed in a Debian bookworm container made from a debootstrap
# base (no registry; ci/debian-image.sh; the image is kept for the next run):
#
#   dpkg -i; flor --version; systemd-analyze verify /lib/systemd/system/flor.service
#   the unit's ExecStart run as root with systemd's bare environment (PATH only, no
#     FLOR_HOME) after making /run/flor (its RuntimeDirectory=): `flor service run`
#   a rete on the host's loopback (packaging/tests/rete.sh); the container shares it
#     (--network host); `flor enroll <bundle>` as root, nothing else: it says traffic
#     flows, curl on the host gets the wiki through the node's SOCKS5 port, and
#     `flor agent status` as root finds the scope in /etc/flor
#   dpkg -r stops nothing it should not and removes the binary and the unit, keeping /etc/flor
#
# The arm64 and armhf packages go the same way in the same Debian with the Pi's
# architecture added (libc6:arm64 / libc6:armhf), their flor run by qemu-user through
# the host's binfmt_misc: every step above, with the packaged binary emulated.
#
# usage: packaging/tests/test-deb.sh DEB ARCH BINARY [FLOR RETECTL]
#   DEB     the package; ARCH: amd64, arm64 or armhf; BINARY: the flor it was built from
#   FLOR, RETECTL: host builds for the rete's other nodes and its operator
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/tests/lib.sh
source "$here/lib.sh"
# shellcheck source=packaging/tests/rete.sh
source "$here/rete.sh"
# shellcheck source=ci/debian-image.sh
source "$repo/ci/debian-image.sh"
deb=${1:?usage: test-deb.sh DEB ARCH BINARY [FLOR RETECTL]}
arch=${2:?ARCH}
binary=${3:?BINARY}
flor=${4:-}
retectl=${5:-}
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
deb=$(abs "$deb")
binary=$(abs "$binary")

T=$(mktemp -d)
container=""
cleanup() {
	[ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
	rete_down
	rm -rf "$T"
}
trap cleanup EXIT

echo "== $(basename "$deb"): control"
field() { dpkg-deb --field "$deb" "$1"; }
check "Package: flor" [ "$(field Package)" = flor ]
check "Version is <upstream>-<revision> ($(field Version))" grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+-[0-9]+$' <<<"$(field Version)"
check "Architecture: $arch" [ "$(field Architecture)" = "$arch" ]
check "Maintainer is 'Name <address>'" grep -Eq '^.+ <[^ ]+@[^ ]+>$' <<<"$(field Maintainer)"
check "Section: net, Priority: optional" [ "$(field Section) $(field Priority)" = "net optional" ]
check "Description has a summary and a long text" bash -c "[ \$(dpkg-deb --field '$deb' Description | wc -l) -gt 2 ]"
glibc=$(readelf -VW "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1 || true)
if [ -n "$glibc" ]; then
	check "Depends: libc6 (>= $glibc), the newest GLIBC_ version the binary needs ($(field Depends))" \
		grep -q "libc6 (>= $glibc)" <<<"$(field Depends)"
else
	check "a static binary depends on nothing" [ -z "$(field Depends)" ]
fi
mkdir -p "$T/x"
dpkg-deb --raw-extract "$deb" "$T/x"
size=$(cd "$T/x" && find . -path ./DEBIAN -prune -o -type f -printf '%s\n' | awk '{s += $1} END {print int((s + 1023) / 1024)}')
check "Installed-Size is the files' KiB ($size)" [ "$(field Installed-Size)" = "$size" ]
check "control holds control, postinst, prerm, postrm" \
	[ "$(find "$T/x/DEBIAN" -type f -printf '%f\n' | sort | tr '\n' ' ')" = "control postinst postrm prerm " ]

echo "== files"
listing=$(dpkg-deb --contents "$deb" | awk '$1 !~ /^d/ {print $1, $2, $6}' | sort -k3)
expected="-rw-r--r-- root/root ./lib/systemd/system/flor.service
-rwxr-xr-x root/root ./usr/bin/flor
-rw-r--r-- root/root ./usr/share/bash-completion/completions/flor
-rw-r--r-- root/root ./usr/share/fish/vendor_completions.d/flor.fish
-rw-r--r-- root/root ./usr/share/man/man1/flor.1
-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_flor"
check "flor, its unit, completions and man page, root-owned, right modes" [ "$listing" = "$expected" ]
[ "$listing" = "$expected" ] || printf '     got:\n%s\n' "$listing"
check "every entry is owned by root/root" bash -c "! dpkg-deb --contents '$deb' | awk '{print \$2}' | grep -v '^root/root$'"
check "/usr/bin/flor is the given binary, byte for byte" cmp -s "$binary" "$T/x/usr/bin/flor"
check "the unit is packaging/systemd/flor.service, byte for byte" cmp -s "$repo/packaging/systemd/flor.service" "$T/x/lib/systemd/system/flor.service"
desc=$(file -b "$T/x/usr/bin/flor")
echo "     file: $desc"
case "$arch" in
amd64) fam=("ELF 64-bit LSB" "x86-64") ;;
arm64) fam=("ELF 64-bit LSB" "ARM aarch64") ;;
armhf) fam=("ELF 32-bit LSB" "ARM, EABI5") ;;
*) fam=("unknown architecture $arch") ;;
esac
for e in "${fam[@]}"; do check "file says '$e'" grep -qF "$e" <<<"$desc"; done
if command -v shellcheck >/dev/null; then
	check "shellcheck: postinst, prerm, postrm" shellcheck "$T/x/DEBIAN/postinst" "$T/x/DEBIAN/prerm" "$T/x/DEBIAN/postrm"
fi

echo "== reproducible"
again=$("$repo/packaging/deb/build-deb.sh" --binary "$binary" --arch "$arch" --version "$(field Version)" --out "$T/again")
check "a rebuild from the same inputs gives the same bytes" cmp -s "$deb" "$again"

# The Raspberry Pi packages: the packaged binary runs under qemu-user against
# Debian bookworm's cross glibc (2.36, Raspberry Pi OS bookworm's), which also
# checks that the Depends: read from it is satisfiable there.
case "$arch" in
arm64) qemu=(qemu-aarch64-static -cpu cortex-a72) ld=/usr/aarch64-linux-gnu ;;
armhf) qemu=(qemu-arm-static -cpu cortex-a7) ld=/usr/arm-linux-gnueabihf ;;
*) qemu=() ;;
esac
if [ "${#qemu[@]}" -gt 0 ] && command -v "${qemu[0]}" >/dev/null && [ -d "$ld" ]; then
	echo "== the packaged binary under ${qemu[0]}"
	want="flor $(field Version | sed 's/-[^-]*$//')"
	got=$(QEMU_LD_PREFIX=$ld "${qemu[@]}" "$T/x/usr/bin/flor" --version 2>&1 || true)
	check "flor --version runs and prints '$want' (got '$got')" [ "$got" = "$want" ]
	help_rc=0
	QEMU_LD_PREFIX=$ld "${qemu[@]}" "$T/x/usr/bin/flor" --help >/dev/null 2>&1 || help_rc=$?
	check "flor --help runs (exit $help_rc)" [ "$help_rc" = 0 ]
elif [ "${#qemu[@]}" -gt 0 ]; then
	echo "  note: no ${qemu[0]} or $ld here (cross/setup.sh installs both): the $arch binary was not run"
fi

if [ -z "$flor" ] || [ -z "$retectl" ]; then
	echo "  note: no FLOR and RETECTL given: contents checked, not installed"
	summary
	exit
fi
if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
	bad "docker is not available to install the package in a Debian container"
	summary
	exit
fi

# A Raspberry Pi package is installed in the same Debian bookworm with the Pi's
# architecture added (dpkg multiarch: libc6:arm64 or libc6:armhf from Debian's
# archive, as on Raspberry Pi OS), and its binary runs through the host kernel's
# binfmt_misc: qemu-user-static's own registration (/usr/lib/binfmt.d), whose F
# flag opens the emulator once on the host so it works inside containers too.
# The userland around flor (dpkg, systemd-analyze, sh) stays amd64.
foreign=""
case "$arch" in
arm64) foreign=aarch64 ;;
armhf) foreign=arm ;;
esac
binfmt_ready() { # <qemu name>: registers qemu-<name> in binfmt_misc unless it is there
	local d=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-$1.conf
	[ -e "$d/register" ] || mount -t binfmt_misc binfmt_misc "$d" 2>/dev/null || return 1
	if [ ! -e "$d/qemu-$1" ]; then
		[ -f "$conf" ] || return 1
		grep -v '^#' "$conf" >"$d/register" || return 1
	fi
	grep -q '^flags: .*F' "$d/qemu-$1"
}
if [ -n "$foreign" ]; then
	if binfmt_ready "$foreign"; then
		ok "binfmt_misc runs $arch binaries through $(sed -n 's/^interpreter //p' "/proc/sys/fs/binfmt_misc/qemu-$foreign") (flags $(sed -n 's/^flags: //p' "/proc/sys/fs/binfmt_misc/qemu-$foreign"))"
	else
		bad "binfmt_misc: no qemu-$foreign entry with the F flag (registering needs root and qemu-user-static, which cross/setup.sh installs; an entry without F, from another package, must be removed first: echo -1 > /proc/sys/fs/binfmt_misc/qemu-$foreign)"
		summary
		exit
	fi
fi

echo "== a Debian bookworm container (debootstrap base + systemd${foreign:+ + libc6:$arch})"
image=florete/deb-test:bookworm${foreign:+-$arch}
t0=$(date +%s)
debian_base_image
mkdir -p "$T/ctx"
check "image $image builds from $DEBIAN_BASE_IMAGE (reused when nothing changed)" \
	bash -c "docker build -q --build-arg FOREIGN_ARCH='${foreign:+$arch}' -t '$image' -f '$here/deb-test.Dockerfile' '$T/ctx' >/dev/null"
echo "     time: image $(($(date +%s) - t0))s"
container=flor-deb-test-$$
docker run -d --name "$container" --network host "$image" sleep infinity >/dev/null
cx() { docker exec "$container" "$@"; }
docker cp "$deb" "$container:/tmp/flor.deb"
out=$(cx dpkg -i /tmp/flor.deb 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/     /'
check "dpkg -i installs it" [ "$rc" = 0 ]
# shellcheck disable=SC2016 # ${...} is dpkg-query's format, not the shell's
pkg_state=$(cx dpkg-query -W -f='${Architecture} ${Status}' flor 2>&1 || true)
check "dpkg has flor:$arch installed ($pkg_state)" [ "$pkg_state" = "$arch install ok installed" ]
upstream=$(field Version)
upstream=${upstream%-*}
check "flor --version says 'flor $upstream'" [ "$(cx flor --version 2>&1)" = "flor $upstream" ]
check "postinst made /etc/flor/retes, mode 700" [ "$(cx stat -c %a /etc/flor/retes)" = 700 ]
check "postinst enabled the service (multi-user.target.wants/flor.service)" \
	[ "$(cx readlink /etc/systemd/system/multi-user.target.wants/flor.service)" = /lib/systemd/system/flor.service ]
vout=$(cx systemd-analyze verify /lib/systemd/system/flor.service 2>&1) && vrc=0 || vrc=$?
[ -z "$vout" ] || printf '%s\n' "$vout" | sed 's/^/     /'
check "systemd-analyze verify flor.service in the container: no warnings, exit 0" test "$vrc" = 0 -a -z "$vout"

echo "== the service picks up a rete that flor enroll adds"
if rete_up "$T/rete" "$flor" "$retectl"; then
	ok "a rete runs on the host's loopback (mgmt01 with the config-server, alpha with the wiki)"
else
	bad "a rete runs on the host's loopback"
	summary
	exit
fi
exec_start=$(cx sed -n 's/^ExecStart=//p' /lib/systemd/system/flor.service)
echo "     ExecStart: $exec_start"
# What systemd does for this unit: make RuntimeDirectory=flor (/run/flor, 0750), then
# run ExecStart as root with only PATH set (no HOME, no FLOR_HOME).
cx mkdir -p -m 0750 /run/flor
docker exec -d "$container" sh -c "exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin $exec_start >/var/log/flor-service.log 2>&1"
check "the service holds its lock in /etc/flor" rete_wait 10 cx test -f /etc/flor/service.lock
docker cp "$RETE_BUNDLE" "$container:/root/laptop.bundle.json"
t0=$(date +%s%N)
enrolled=$(cx flor enroll /root/laptop.bundle.json 2>&1) && erc=0 || erc=$?
took=$((($(date +%s%N) - t0) / 1000000))
printf '%s\n' "$enrolled" | sed 's/^/     /'
# shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
check "flor enroll <bundle> as root, alone, exits 0 and says traffic flows (${took} ms)" \
	bash -c '[ "$1" = 0 ] && grep -q "runs its vertex: traffic flows" <<<"$2"' _ "$erc" "$enrolled"
check "the scope is in /etc/flor/retes/demo.flor" cx test -f /etc/flor/retes/demo.flor/scope.json
status=$(cx flor agent status 2>&1 || true)
printf '%s\n' "$status" | sed 's/^/     /'
check "flor agent status as root finds the scope in /etc/flor" grep -q '^home: *\/etc\/flor\/retes\/demo.flor$' <<<"$status"
bob=$(socks_port_of "$(cx flor agent status --json 2>/dev/null || true)" bob 2>/dev/null || echo 0)
page=$(curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$bob" http://wiki.demo.flor.rete/ 2>&1 || true)
check "curl on the host gets the wiki through the container's SOCKS5 port $bob (bob): '$page'" [ "$page" = "$RETE_WIKI" ]
carol=$(socks_port_of "$(cx flor agent status --json 2>/dev/null || true)" carol 2>/dev/null || echo 0)
refused=$(curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$carol" http://wiki.demo.flor.rete/ 2>&1 || true)
check "carol (no role) is refused through port $carol" grep -q "(2)" <<<"$refused"
if [ "$erc" != 0 ] || [ "$page" != "$RETE_WIKI" ]; then
	echo "     service log:"
	cx cat /var/log/flor-service.log 2>&1 | sed 's/^/     /' || true
	echo "     agent log:"
	cx cat /etc/flor/retes/demo.flor/agent.log 2>&1 | tail -n 20 | sed 's/^/     /' || true
fi

echo "== dpkg -r"
out=$(cx dpkg -r flor 2>&1) && rc=0 || rc=$?
check "dpkg -r removes it" [ "$rc" = 0 ]
check "the binary, the unit and the enable link are gone" \
	cx sh -c '! test -e /usr/bin/flor && ! test -e /lib/systemd/system/flor.service && ! test -L /etc/systemd/system/multi-user.target.wants/flor.service'
check "the enrolled scope stays in /etc/flor" cx test -f /etc/flor/retes/demo.flor/scope.json

summary
