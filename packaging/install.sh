#!/bin/sh
# Installs Florete's node binary `flor` and its service unit on Linux or macOS.
#
# What it puts where (system install, the default; run as root):
#   Linux  <prefix>/bin/flor                               (0755, prefix default /usr/local)
#          /etc/systemd/system/flor-agent@.service          (0644) one templated unit; instance = rete scope
#          /etc/systemd/system/multi-user.target.wants/flor-agent@<scope>.service  (per --scope)
#          /etc/flor/retes/                                 (0700) where `flor enroll` puts each scope
#          <prefix>/share/{bash-completion,zsh,fish,man}/... flor's completions and man page
#                                                           (packaging/extras.sh, when it is beside this script)
#   macOS  <prefix>/bin/flor                               (0755)
#          /Library/LaunchDaemons/org.florete.flor-agent.<scope>.plist  (0644) one per --scope
#          /etc/flor/retes/                                 (0700)
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
# every agent that is running (systemd try-restart, launchd kickstart -k) so the new
# binary takes over; the restarted agent starts its vertex from the new binary too.
# Agents that are stopped stay stopped; --no-start restarts nothing.
set -eu

LABEL_PREFIX=org.florete.flor-agent
UNIT_NAME=flor-agent@.service

usage() {
	cat <<'EOF'
usage: install.sh [options]
  --binary FILE   install this flor binary (default: ./flor-<os>-<arch> next to this script)
  --scope NAME    enable and start the agent for rete scope NAME (repeatable)
  --prefix DIR    install prefix (default /usr/local; ~/.local with --user)
  --root DIR      write everything under DIR instead of / (also: DESTDIR=DIR); no service manager calls
  --user          install for the current user only (no root needed)
  --uninstall     remove flor, its units and the scopes' service registrations
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

for s in $scopes; do
	# The same rule as flor's scope names (agent/src/scope.rs): a-z 0-9 . - _, no leading dot.
	case "$s" in
	.* | *[!a-z0-9._-]*) die "scope name '$s' may hold only a-z, 0-9, '.', '-', '_' and may not start with '.'" ;;
	esac
done

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

systemd_unit() {
	if [ "$user_mode" = 1 ]; then
		cat <<EOF
# Florete agent for one rete scope (user install): flor-agent@<scope>.service.
# Installed by install.sh; the agent supervises its vertex child (flor vertex run).
[Unit]
Description=Florete agent for rete scope %i
ConditionPathExists=%h/.flor/retes/%i/scope.json

[Service]
Type=simple
ExecStart=$flor_bin agent run --rete %i
Restart=on-failure
RestartSec=5s

[Install]
WantedBy=$wants_target
EOF
		return
	fi
	cat <<EOF
# Florete agent for one rete scope: flor-agent@<scope>.service (systemctl enable --now
# flor-agent@demo.flor). Installed by install.sh; the agent supervises its vertex child
# (flor vertex run), so one unit per scope carries both.
[Unit]
Description=Florete agent for rete scope %i
Wants=network-online.target
After=network-online.target
# Enrolled with: sudo env FLOR_HOME=$flor_home flor enroll <bundle>
ConditionPathExists=$flor_home/retes/%i/scope.json
# A router-style node keeps trying: no start-rate limit.
StartLimitIntervalSec=0

[Service]
Type=simple
# flor's own default is ~/.flor; a system service has no home, so name it.
Environment=FLOR_HOME=$flor_home
Environment=FLOR_RUNTIME_DIR=/run/flor
ExecStart=$flor_bin agent run --rete %i
Restart=on-failure
RestartSec=5s
# /run/flor/<scope>: vertex status files; removed when the unit stops.
RuntimeDirectory=flor/%i
RuntimeDirectoryMode=0750
# The agent writes only its own scope (artifacts, staged versions, control socket).
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=$flor_home/retes/%i
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
LimitNOFILE=8192

[Install]
WantedBy=$wants_target
EOF
}

plist_label() { echo "$LABEL_PREFIX.$1"; }

launchd_plist() {
	scope=$1
	if [ "$user_mode" = 1 ]; then
		log="$HOME/Library/Logs/flor-agent.$scope.log"
		env_xml=""
	else
		log="/var/log/flor-agent.$scope.log"
		env_xml="	<key>EnvironmentVariables</key>
	<dict>
		<key>FLOR_HOME</key>
		<string>$flor_home</string>
		<key>FLOR_RUNTIME_DIR</key>
		<string>/var/run/flor</string>
	</dict>
"
	fi
	cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Florete agent for rete scope $scope. Installed by install.sh. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>$(plist_label "$scope")</string>
	<key>ProgramArguments</key>
	<array>
		<string>$flor_bin</string>
		<string>agent</string>
		<string>run</string>
		<string>--rete</string>
		<string>$scope</string>
	</array>
$env_xml	<key>RunAtLoad</key>
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
sysctl_cmd() { if [ "$user_mode" = 1 ]; then echo "systemctl --user"; else echo systemctl; fi; }
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

# --- uninstall -------------------------------------------------------------------
if [ "$uninstall" = 1 ]; then
	if [ "$os" = linux ]; then
		for link in "$root$unit_dir"/*.wants/flor-agent@*.service; do
			[ -L "$link" ] || continue
			inst=$(basename "$link")
			if [ "$live" = 1 ] && have_systemd; then systemctl_ disable --now "$inst" || true; fi
			rm -f "$link"
			say "disabled $inst"
		done
		rm -f "$root$unit_dir/$UNIT_NAME"
		if [ "$live" = 1 ] && have_systemd; then systemctl_ daemon-reload || true; fi
	else
		for plist in "$root$unit_dir/$LABEL_PREFIX".*.plist; do
			[ -f "$plist" ] || continue
			if [ "$live" = 1 ]; then launchctl bootout "$(launchd_domain)" "$plist" 2>/dev/null || true; fi
			rm -f "$plist"
			say "removed $(basename "$plist")"
		done
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

# The binary: copy beside the old one, then rename over it, so a running agent keeps
# its open file and the next start gets the new one. An upgrade is a different binary
# where one was installed: running agents are restarted below so it takes over.
upgraded=0
if [ -f "$root$flor_bin" ] && ! cmp -s "$binary" "$root$flor_bin"; then upgraded=1; fi
put_file "$root$flor_bin" 0755 <"$binary"
say "installed $flor_bin ($got)"
install_extras

mkdir -p "$root$flor_home/retes"
chmod 0700 "$root$flor_home/retes"

if [ "$os" = linux ]; then
	systemd_unit | put_file "$root$unit_dir/$UNIT_NAME" 0644
	say "installed $unit_dir/$UNIT_NAME"
	for s in $scopes; do
		wants="$root$unit_dir/$wants_target.wants"
		mkdir -p "$wants"
		# What `systemctl enable flor-agent@<scope>` makes, made by hand so it works in a
		# scratch root too.
		ln -sfn "$unit_dir/$UNIT_NAME" "$wants/flor-agent@$s.service"
		say "enabled flor-agent@$s.service"
	done
	if [ "$live" = 1 ] && have_systemd; then
		systemctl_ daemon-reload
		if [ "$start" = 1 ] && [ "$upgraded" = 1 ]; then
			# Every running instance, --scope or not; try-restart leaves stopped ones alone.
			systemctl_ try-restart 'flor-agent@*.service'
			say "restarted the running flor agents on the new binary"
		fi
		if [ "$start" = 1 ]; then
			for s in $scopes; do
				if [ -f "$flor_home/retes/$s/scope.json" ]; then
					# After an upgrade the running ones were just restarted: start the rest.
					if [ "$upgraded" = 1 ]; then systemctl_ start "flor-agent@$s.service"
					else systemctl_ restart "flor-agent@$s.service"; fi
					say "started flor-agent@$s.service"
				else
					say "scope $s is not enrolled yet: after flor enroll, run: $(sysctl_cmd) start flor-agent@$s"
				fi
			done
		fi
	elif [ "$live" = 1 ]; then
		say "systemd is not running here; start the agent yourself: FLOR_HOME=$flor_home $flor_bin agent run --rete <scope>"
		[ "$upgraded" = 0 ] || say "flor was upgraded: restart any running 'flor agent run' so the new binary takes over"
	fi
else
	if [ "$live" = 1 ] && [ "$start" = 1 ] && [ "$upgraded" = 1 ]; then
		# Every loaded agent not reloaded below (--scope) restarts on the new binary;
		# kickstart -k kills and restarts a running job, and one that is not loaded is skipped.
		for plist in "$unit_dir/$LABEL_PREFIX".*.plist; do
			[ -f "$plist" ] || continue
			label=$(basename "$plist" .plist)
			case " $scopes " in *" ${label#"$LABEL_PREFIX".} "*) continue ;; esac
			if launchctl print "$(launchd_domain)/$label" >/dev/null 2>&1; then
				launchctl kickstart -k "$(launchd_domain)/$label"
				say "restarted $label on the new binary"
			fi
		done
	fi
	for s in $scopes; do
		plist="$unit_dir/$(plist_label "$s").plist"
		launchd_plist "$s" | put_file "$root$plist" 0644
		say "installed $plist"
		if [ "$live" = 1 ] && [ "$start" = 1 ]; then
			launchctl bootout "$(launchd_domain)" "$plist" 2>/dev/null || true
			launchctl bootstrap "$(launchd_domain)" "$plist"
			say "loaded $(plist_label "$s")"
		fi
	done
	[ -n "$scopes" ] || say "no --scope given: install.sh --scope <rete> adds a LaunchDaemon per enrolled scope"
fi
say "done"
