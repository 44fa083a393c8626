#!/bin/sh
# Installs Florete's node binary `flor` and its service unit on Linux or macOS.
#
# What it puts where (system install, the default; run as root):
#   Linux  <prefix>/bin/flor                               (0755, prefix default /usr/local)
#          /etc/systemd/system/flor.service                 (0644) the one unit: `flor service run`
#          /etc/systemd/system/multi-user.target.wants/flor.service  (what `systemctl enable` makes)
#          /etc/flor/retes/                                 (0700) where `flor enroll` puts each scope
#          <prefix>/share/{bash-completion,zsh,fish,man}/... flor's completions and man page
#                                                           (packaging/extras.sh, when it is beside this script)
#   macOS  <prefix>/bin/flor                               (0755)
#          /Library/LaunchDaemons/org.florete.flor.plist    (0644) the one daemon: `flor service run`
#          /etc/flor/retes/                                 (0700)
# One service per host: `flor service run` runs an agent for every enrolled scope and
# starts a newly enrolled one within 2 s, so `sudo flor enroll <bundle>` is all a new
# rete takes. The Linux unit is packaging/systemd/flor.service, embedded below (the
# .deb installs the same file; packaging/tests/test-install.sh keeps them equal).
# With --user (no root): ~/.local/bin/flor, a systemd user unit in ~/.config/systemd/user
# or a LaunchAgent in ~/Library/LaunchAgents; scopes live in ~/.flor (flor's default).
#
# Where the binary comes from: --binary FILE, or else a release directory next to this
# script holding one build per platform, named flor-<os>-<arch> (flor-linux-x86_64,
# flor-linux-aarch64, flor-linux-armv7, flor-linux-mipsel, flor-linux-mips,
# flor-darwin-x86_64, flor-darwin-aarch64). The script never downloads anything.
#
# Scratch roots: --root DIR (or DESTDIR=DIR) writes every file under DIR and touches
# nothing on the running system (no systemctl, no launchctl), so it can be tested.
# Running it twice gives the same files; --uninstall removes what it installed and
# keeps /etc/flor (enrolled keys and certificates) unless --purge is given too.
#
# Upgrades: re-running it with a new binary writes the binary by rename, then restarts
# the service if it runs (systemd try-restart, launchd kickstart -k) so the new binary
# takes over; its agents start their vertices from the new binary too. A stopped
# service stays stopped; --no-start restarts nothing. A host with the per-scope units
# of earlier releases (flor-agent@<scope>.service, org.florete.flor-agent.<scope>) has
# them stopped, disabled and removed, and the one service enabled and started instead.
set -eu

UNIT_NAME=flor.service
LABEL=org.florete.flor
# The per-scope units of earlier releases, replaced by the one service.
OLD_UNIT_NAME=flor-agent@.service
OLD_LABEL_PREFIX=org.florete.flor-agent

usage() {
	cat <<'EOF'
usage: install.sh [options]
  --binary FILE   install this flor binary (default: ./flor-<os>-<arch> next to this script)
  --scope NAME    accepted for old install lines; ignored (the service runs every enrolled scope)
  --prefix DIR    install prefix (default /usr/local; ~/.local with --user)
  --root DIR      write everything under DIR instead of / (also: DESTDIR=DIR); no service manager calls
  --user          install for the current user only (no root needed)
  --uninstall     remove flor and its service
  --purge         with --uninstall: also delete the enrolled scopes (keys!) under the flor home
  --no-start      install and enable, but do not start or restart anything
  --os OS         linux or darwin (default: uname -s; only with --root)
  --arch ARCH     x86_64, aarch64, armv7, mipsel or mips (default: from uname -m)
  --print-arch    print the detected <os>-<arch> and exit
EOF
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}
say() { echo "install.sh: $*"; }

# --- arguments ---------------------------------------------------------------
binary=""
scopes=""
prefix=""
root="${DESTDIR:-}"
user_mode=0
uninstall=0
purge=0
start=1
os=""
arch=""
print_arch=0
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) [ $# -ge 2 ] || die "--binary needs a file"; binary=$2; shift ;;
	--scope) [ $# -ge 2 ] || die "--scope needs a name"; scopes="$scopes $2"; shift ;;
	--prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift ;;
	--root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift ;;
	--user) user_mode=1 ;;
	--uninstall) uninstall=1 ;;
	--purge) purge=1 ;;
	--no-start) start=0 ;;
	--os) [ $# -ge 2 ] || die "--os needs linux or darwin"; os=$2; shift ;;
	--arch) [ $# -ge 2 ] || die "--arch needs a name"; arch=$2; shift ;;
	--print-arch) print_arch=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
	shift
done
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge goes with --uninstall"
# A root of "/" is the live system; strip a trailing slash so paths join cleanly.
root=${root%/}

# --- platform ----------------------------------------------------------------
# Byte order of this machine, read from the ELF header of /bin/sh (EI_DATA: 1 = little,
# 2 = big endian): uname -m says "mips" on both mips and mipsel kernels.
host_endian() {
	case "$(od -An -tu1 -j5 -N1 /bin/sh 2>/dev/null | tr -d ' ')" in
	1) echo little ;;
	2) echo big ;;
	*) echo unknown ;;
	esac
}

# Maps `uname -s` / `uname -m` to the release names; FLOR_UNAME_S/FLOR_UNAME_M and
# FLOR_ENDIAN stand in for them in tests.
detect_os() {
	case "${FLOR_UNAME_S:-$(uname -s)}" in
	Linux) echo linux ;;
	Darwin) echo darwin ;;
	*) die "unsupported operating system $(uname -s): Linux and macOS only (Windows: use the MSI; OpenWrt: the .ipk)" ;;
	esac
}
detect_arch() {
	m=${FLOR_UNAME_M:-$(uname -m)}
	case "$m" in
	x86_64 | amd64) echo x86_64 ;;
	aarch64 | arm64) echo aarch64 ;;
	armv7l | armv7 | armv8l) echo armv7 ;;
	mips | mipsel | mips64el | mips64)
		# A 32-bit userland is what flor is built for on these routers.
		case "${FLOR_ENDIAN:-$(host_endian)}" in
		little) echo mipsel ;;
		big) echo mips ;;
		*) die "cannot tell the byte order of this $m machine; pass --arch mipsel or --arch mips" ;;
		esac
		;;
	*) die "no flor build for machine type $m (builds: x86_64, aarch64, armv7, mipsel, mips)" ;;
	esac
}

# Reads a binary's header and prints <os>-<arch>, so a wrong file is refused before it
# replaces a working one. ELF: EI_CLASS at 4, EI_DATA at 5, e_machine at 18 (2 bytes,
# in the file's byte order). Mach-O 64: magic cf fa ed fe, cputype at 4.
binary_platform() {
	# shellcheck disable=SC2046 # split od's numbers into $1..$20 on purpose
	set -- $(od -An -tu1 -N20 "$1" 2>/dev/null)
	[ $# -ge 20 ] || { echo unknown; return; }
	if [ "$1" = 127 ] && [ "$2" = 69 ] && [ "$3" = 76 ] && [ "$4" = 70 ]; then
		if [ "$6" = 1 ]; then mach=$((${19} + 256 * ${20})); else mach=$((${20} + 256 * ${19})); fi
		case "$mach:$5:$6" in
		62:2:1) echo linux-x86_64 ;;
		183:2:1) echo linux-aarch64 ;;
		40:1:1) echo linux-armv7 ;;
		8:1:1) echo linux-mipsel ;;
		8:1:2) echo linux-mips ;;
		*) echo "linux-unknown(e_machine=$mach)" ;;
		esac
	elif [ "$1" = 207 ] && [ "$2" = 250 ] && [ "$3" = 237 ] && [ "$4" = 254 ]; then
		case "$5:$8" in
		7:1) echo darwin-x86_64 ;;
		12:1) echo darwin-aarch64 ;;
		*) echo darwin-unknown ;;
		esac
	elif [ "$1" = 202 ] && [ "$2" = 254 ] && [ "$3" = 186 ] && [ "$4" = 190 ]; then
		echo darwin-universal
	else
		echo unknown
	fi
}

if [ -z "$os" ]; then
	os=$(detect_os)
else
	case "$os" in linux | darwin) ;; *) die "--os must be linux or darwin, not $os" ;; esac
	[ -n "$root" ] || [ "$os" = "$(detect_os)" ] || die "--os $os differs from this machine; use it only with --root"
fi
[ -n "$arch" ] || arch=$(detect_arch)
case "$arch" in x86_64 | aarch64 | armv7 | mipsel | mips) ;; *) die "unknown --arch $arch" ;; esac
platform="$os-$arch"
if [ "$print_arch" = 1 ]; then
	echo "$platform"
	exit 0
fi

# --- layout ------------------------------------------------------------------
if [ "$user_mode" = 1 ]; then
	[ -n "${HOME:-}" ] || die "--user needs HOME"
	[ -n "$prefix" ] || prefix="$HOME/.local"
	flor_home="$HOME/.flor"
	if [ "$os" = linux ]; then unit_dir="$HOME/.config/systemd/user"; wants_target=default.target
	else unit_dir="$HOME/Library/LaunchAgents"; fi
else
	[ -n "$prefix" ] || prefix=/usr/local
	flor_home=/etc/flor
	if [ "$os" = linux ]; then unit_dir=/etc/systemd/system; wants_target=multi-user.target
	else unit_dir=/Library/LaunchDaemons; fi
	if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
		die "a system install needs root (sudo sh install.sh ...), or use --user, or --root DIR"
	fi
fi
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
bindir="$prefix/bin"
flor_bin="$bindir/flor"
# The service manager is driven only on the live system.
live=0
[ -n "$root" ] || live=1

[ -z "$scopes" ] || say "--scope is no longer needed and is ignored: the flor service runs every enrolled scope"

# --- file helpers --------------------------------------------------------------
# Writes stdin to $1 with mode $2 through a temp file in the same directory and a
# rename, so a crash leaves the old file or the new one, never half of each.
put_file() {
	dest=$1
	mode=$2
	mkdir -p "$(dirname "$dest")"
	tmp="$dest.tmp.$$"
	cat >"$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$dest"
}

# packaging/systemd/flor.service, byte for byte (test-install.sh compares them); the
# .deb installs that file as it is, here only ExecStart gets this install's binary.
system_unit_file() {
	cat <<'FLOR_SERVICE_UNIT'
# Florete node service: one `flor service run` for the host. It runs
# `flor agent run --rete <scope>` for every rete enrolled under /etc/flor/retes,
# starts a newly enrolled one within 2 s (`flor enroll <bundle>` as root is all it
# takes), restarts a dead agent, and each agent supervises its vertex.
# Installed by the .deb (packaging/deb) and install.sh, which embeds this file and
# writes its own binary path into ExecStart (packaging/tests/test-install.sh keeps
# the two equal).
[Unit]
Description=Florete node (an agent for every enrolled rete)
Wants=network-online.target
After=network-online.target
# A router-style node keeps trying: no start-rate limit.
StartLimitIntervalSec=0

[Service]
Type=simple
# No FLOR_HOME: as root, flor uses /etc/flor when it exists (the packages create
# it), the same home `flor enroll` and `flor agent status` find when run as root.
ExecStart=/usr/bin/flor service run
Restart=on-failure
RestartSec=5s
# SIGTERM to the service only: it stops each agent, and each agent its vertex.
KillMode=mixed
TimeoutStopSec=30s
# /run/flor/<scope>: the vertices' status files; removed when the service stops.
RuntimeDirectory=flor
RuntimeDirectoryMode=0750
# The service writes only the flor home (scopes, artifacts, control sockets, logs).
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/etc/flor
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
LimitNOFILE=8192

[Install]
WantedBy=multi-user.target
FLOR_SERVICE_UNIT
}

systemd_unit() {
	if [ "$user_mode" = 1 ]; then
		cat <<EOF
# Florete node service for one user (install.sh --user): one \`flor service run\`
# that runs an agent for every rete enrolled under ~/.flor and starts a newly
# enrolled one within 2 s.
[Unit]
Description=Florete node for this user (an agent for every enrolled rete)

[Service]
Type=simple
ExecStart=$flor_bin service run
Restart=on-failure
RestartSec=5s
KillMode=mixed
TimeoutStopSec=30s

[Install]
WantedBy=$wants_target
EOF
		return
	fi
	system_unit_file | sed "s#^ExecStart=/usr/bin/flor #ExecStart=$flor_bin #"
}

launchd_plist() {
	if [ "$user_mode" = 1 ]; then log="$HOME/Library/Logs/flor.log"; else log=/var/log/flor.log; fi
	cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Florete node: one flor service run for every enrolled rete. Installed by install.sh. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>$LABEL</string>
	<key>ProgramArguments</key>
	<array>
		<string>$flor_bin</string>
		<string>service</string>
		<string>run</string>
	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>5</integer>
	<key>StandardOutPath</key>
	<string>$log</string>
	<key>StandardErrorPath</key>
	<string>$log</string>
</dict>
</plist>
EOF
}

# --- service manager (live system only) ----------------------------------------
systemctl_() {
	if [ "$user_mode" = 1 ]; then systemctl --user "$@"; else systemctl "$@"; fi
}
# FLOR_SYSTEMD_RUNDIR stands in for /run/systemd/system in tests (with a fake systemctl).
have_systemd() { command -v systemctl >/dev/null 2>&1 && [ -d "${FLOR_SYSTEMD_RUNDIR:-/run/systemd/system}" ]; }
launchd_domain() {
	if [ "$user_mode" = 1 ]; then echo "gui/$(id -u)"; else echo system; fi
}

# --- completions and man pages (packaging/extras.sh) ------------------------------
# Beside this script in the repo and in a release directory; skipped where absent.
extras="$(cd "$(dirname "$0")" && pwd)/extras.sh"
install_extras() {
	if [ -r "$extras" ]; then
		sh "$extras" --prefix "$prefix" "${root:-/}"
		say "installed flor's shell completions and man page under $prefix/share"
	fi
}
remove_extras() {
	[ -r "$extras" ] || return 0
	sh "$extras" --prefix "$prefix" --uninstall "${root:-/}"
	# In a scratch root, leave no empty directories behind.
	[ "$live" = 1 ] || find "$root$prefix/share" -depth -type d -empty -delete 2>/dev/null || true
}

# Stops, disables and removes the per-scope units of earlier releases. Prints how
# many it removed.
remove_old_units() {
	n=0
	if [ "$os" = linux ]; then
		for link in "$root$unit_dir"/*.wants/flor-agent@*.service; do
			[ -L "$link" ] || continue
			inst=$(basename "$link")
			if [ "$live" = 1 ] && have_systemd; then systemctl_ disable --now "$inst" >/dev/null 2>&1 || true; fi
			rm -f "$link"
			say "stopped and disabled $inst (replaced by $UNIT_NAME)" >&2
			n=$((n + 1))
		done
		if [ -f "$root$unit_dir/$OLD_UNIT_NAME" ]; then
			rm -f "$root$unit_dir/$OLD_UNIT_NAME"
			say "removed $unit_dir/$OLD_UNIT_NAME" >&2
			n=$((n + 1))
		fi
	else
		for plist in "$root$unit_dir/$OLD_LABEL_PREFIX".*.plist; do
			[ -f "$plist" ] || continue
			if [ "$live" = 1 ]; then launchctl bootout "$(launchd_domain)" "$plist" 2>/dev/null || true; fi
			rm -f "$plist"
			say "unloaded and removed $(basename "$plist") (replaced by $LABEL)" >&2
			n=$((n + 1))
		done
	fi
	echo "$n"
}

# --- uninstall -------------------------------------------------------------------
if [ "$uninstall" = 1 ]; then
	if [ "$os" = linux ]; then
		if [ "$live" = 1 ] && have_systemd && [ -f "$unit_dir/$UNIT_NAME" ]; then
			systemctl_ disable --now "$UNIT_NAME" || true
		fi
		rm -f "$root$unit_dir/$wants_target.wants/$UNIT_NAME" "$root$unit_dir/$UNIT_NAME"
		remove_old_units >/dev/null
		if [ "$live" = 1 ] && have_systemd; then systemctl_ daemon-reload || true; fi
		say "removed $UNIT_NAME"
	else
		plist="$unit_dir/$LABEL.plist"
		if [ "$live" = 1 ] && [ -f "$plist" ]; then launchctl bootout "$(launchd_domain)" "$plist" 2>/dev/null || true; fi
		rm -f "$root$plist"
		remove_old_units >/dev/null
		say "removed $LABEL.plist"
	fi
	rm -f "$root$flor_bin"
	remove_extras
	# In a scratch root, leave no empty directories behind.
	[ "$live" = 1 ] || rmdir "$root$unit_dir"/*.wants "$root$unit_dir" 2>/dev/null || true
	if [ "$purge" = 1 ]; then
		rm -rf "$root$flor_home"
		say "purged $flor_home"
	else
		[ -d "$root$flor_home" ] && say "kept $flor_home (enrolled scopes); --purge deletes it"
	fi
	say "removed flor from $root$prefix"
	exit 0
fi

# --- install ---------------------------------------------------------------------
if [ -z "$binary" ]; then
	here=$(cd "$(dirname "$0")" && pwd)
	binary="$here/flor-$platform"
	[ -f "$binary" ] || die "no --binary given and no $binary next to this script (a release directory holds flor-<os>-<arch> files)"
fi
[ -f "$binary" ] || die "$binary: no such file"
got=$(binary_platform "$binary")
if [ "$got" != "$platform" ] && ! { [ "$got" = darwin-universal ] && [ "$os" = darwin ]; }; then
	die "$binary is a $got build, but this is $platform (wrong file, or pass --arch/--os for a scratch root)"
fi

# The binary: copy beside the old one, then rename over it, so a running service keeps
# its open file and the next start gets the new one. An upgrade is a different binary
# where one was installed: a running service is restarted below so it takes over.
upgraded=0
if [ -f "$root$flor_bin" ] && ! cmp -s "$binary" "$root$flor_bin"; then upgraded=1; fi
put_file "$root$flor_bin" 0755 <"$binary"
say "installed $flor_bin ($got)"
install_extras

mkdir -p "$root$flor_home/retes"
chmod 0700 "$root$flor_home/retes"

# The service: written, registered (first install or replacing the per-scope units:
# start it) or changed (an upgrade: restart it if it runs).
replaced=$(remove_old_units)
if [ "$os" = linux ]; then
	unit="$root$unit_dir/$UNIT_NAME"
	fresh=0
	[ -f "$unit" ] || fresh=1
	if [ "$fresh" = 0 ] && ! systemd_unit | cmp -s - "$unit"; then upgraded=1; fi
	systemd_unit | put_file "$unit" 0644
	say "installed $unit_dir/$UNIT_NAME"
	# What `systemctl enable flor` makes, made by hand so it works in a scratch root too.
	mkdir -p "$root$unit_dir/$wants_target.wants"
	ln -sfn "$unit_dir/$UNIT_NAME" "$root$unit_dir/$wants_target.wants/$UNIT_NAME"
	say "enabled $UNIT_NAME"
	if [ "$live" = 1 ] && have_systemd; then
		systemctl_ daemon-reload
		if [ "$start" = 1 ] && { [ "$fresh" = 1 ] || [ "$replaced" != 0 ]; }; then
			systemctl_ restart "$UNIT_NAME"
			say "started $UNIT_NAME: it runs every scope enrolled under $flor_home"
		elif [ "$start" = 1 ] && [ "$upgraded" = 1 ]; then
			# try-restart leaves a service that was stopped on purpose stopped.
			systemctl_ try-restart "$UNIT_NAME"
			say "restarted $UNIT_NAME (if it was running) on the new binary"
		fi
	elif [ "$live" = 1 ]; then
		say "systemd is not running here; start the service yourself: $flor_bin service run"
		[ "$upgraded" = 0 ] || say "flor was upgraded: restart a running 'flor service run' so the new binary takes over"
	fi
else
	plist="$unit_dir/$LABEL.plist"
	fresh=0
	[ -f "$root$plist" ] || fresh=1
	if [ "$fresh" = 0 ] && ! launchd_plist | cmp -s - "$root$plist"; then upgraded=1; fi
	launchd_plist | put_file "$root$plist" 0644
	say "installed $plist"
	if [ "$live" = 1 ] && [ "$start" = 1 ]; then
		if [ "$fresh" = 1 ] || [ "$replaced" != 0 ]; then
			launchctl bootout "$(launchd_domain)" "$plist" 2>/dev/null || true
			launchctl bootstrap "$(launchd_domain)" "$plist"
			say "loaded $LABEL: it runs every scope enrolled under $flor_home"
		elif [ "$upgraded" = 1 ] && launchctl print "$(launchd_domain)/$LABEL" >/dev/null 2>&1; then
			# kickstart -k kills and restarts the running job on the new binary.
			launchctl kickstart -k "$(launchd_domain)/$LABEL"
			say "restarted $LABEL on the new binary"
		fi
	fi
fi
if [ "$user_mode" = 1 ]; then
	say "done; enroll with: $flor_bin enroll <bundle>"
else
	say "done; enroll with: sudo $flor_bin enroll <bundle>"
fi
