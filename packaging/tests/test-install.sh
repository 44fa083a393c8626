#!/usr/bin/env bash
# Checks packaging/install.sh in scratch roots: architecture detection, the files it
# writes and their modes, the one systemd unit (the embedded copy equals
# packaging/systemd/flor.service; systemd-analyze verify) and launchd plist, and then
# the must-show: the installed unit's `flor service run` picks up a rete that
# `flor enroll <bundle>` adds, and traffic flows through the new node. Also
# idempotence, the move from an earlier release's per-scope units, refusal of a binary
# for another architecture, and --uninstall/--purge.
#
# usage: packaging/tests/test-install.sh FLOR_BINARY [RETECTL]
#   FLOR_BINARY: a flor built for this machine (e.g. target/debug/flor); the rete's
#   other nodes run it too. RETECTL: the operator's (default: beside FLOR_BINARY).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/tests/lib.sh
source "$here/lib.sh"
# shellcheck source=packaging/tests/rete.sh
source "$here/rete.sh"
install_sh="$here/../install.sh"
bin=${1:?usage: test-install.sh FLOR_BINARY [RETECTL]}
[ -f "$bin" ] || { echo "test-install.sh: $bin: no such file" >&2; echo "0 passed, 1 failed"; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
retectl=${2:-$(dirname "$bin")/retectl}
[ ! -f "$retectl" ] || retectl=$(cd "$(dirname "$retectl")" && pwd)/$(basename "$retectl")

T=$(mktemp -d)
trap 'rete_down; rm -rf "$T"' EXIT

# listing ROOT: every path with its type, mode and link target, plus file checksums,
# so two installs can be compared byte for byte.
listing() {
	(cd "$1" && find . -printf '%y %m %p %l\n' | sort && find . -type f -exec sha256sum {} + | sort -k2)
}

echo "== install.sh: architecture detection"
arch_of() { env FLOR_UNAME_S="$1" FLOR_UNAME_M="$2" FLOR_ENDIAN="${3:-little}" "$install_sh" --print-arch 2>&1; }
for row in "Linux x86_64 little linux-x86_64" "Linux amd64 little linux-x86_64" \
	"Linux aarch64 little linux-aarch64" "Linux armv7l little linux-armv7" \
	"Linux mips little linux-mipsel" "Linux mips big linux-mips" \
	"Darwin arm64 little darwin-aarch64" "Darwin x86_64 little darwin-x86_64"; do
	# shellcheck disable=SC2086 # split the row into its four words
	set -- $row
	got=$(arch_of "$1" "$2" "$3")
	check "uname $1/$2 ($3 endian) -> $4 (got $got)" [ "$got" = "$4" ]
done
if out=$(arch_of Linux i686); then bad "uname i686 was accepted as $out"; else
	check "uname i686 is refused, naming the machine type" grep -q 'no flor build for machine type i686' <<<"$out"
fi
host=$("$install_sh" --print-arch)
host_arch=${host#*-}
echo "   host platform: $host"

echo "== install.sh: the embedded unit is packaging/systemd/flor.service"
# install.sh is piped from curl, so it carries the unit; the .deb installs the file.
embedded=$(sed -n "/^\tcat <<'FLOR_SERVICE_UNIT'\$/,/^FLOR_SERVICE_UNIT\$/p" "$install_sh" | sed '1d;$d')
check "install.sh's embedded unit equals packaging/systemd/flor.service byte for byte" \
	[ "$embedded" = "$(cat "$repo/packaging/systemd/flor.service")" ]

echo "== install.sh: Linux system install in a scratch root"
R=$T/root
if out=$("$install_sh" --root "$R" --binary "$bin" 2>&1); then
	ok "install exits 0"
else
	bad "install failed: $out"
fi
unit=$R/etc/systemd/system/flor.service
check "flor at /usr/local/bin/flor, mode 755" [ "$(mode "$R/usr/local/bin/flor")" = 755 ]
check "flor is the given binary, byte for byte" cmp -s "$bin" "$R/usr/local/bin/flor"
check "one unit flor.service, mode 644" [ "$(mode "$unit")" = 644 ]
check "/etc/flor/retes exists with mode 700 (holds keys)" [ "$(mode "$R/etc/flor/retes")" = 700 ]
check "enabled: multi-user.target.wants/flor.service -> the unit" \
	[ "$(readlink "$R/etc/systemd/system/multi-user.target.wants/flor.service")" = /etc/systemd/system/flor.service ]
check "nothing else was written" [ "$(cd "$R" && find . -type f -o -type l | sort | tr '\n' ' ')" = \
	"./etc/systemd/system/flor.service ./etc/systemd/system/multi-user.target.wants/flor.service ./usr/local/bin/flor ./usr/local/share/bash-completion/completions/flor ./usr/local/share/fish/vendor_completions.d/flor.fish ./usr/local/share/man/man1/flor.1 ./usr/local/share/zsh/site-functions/_flor " ]
check "completions and man page (packaging/extras.sh) are readable, mode 644" \
	bash -c "[ \"\$(stat -c %a '$R/usr/local/share/man/man1/flor.1')\" = 644 ] && bash -n '$R/usr/local/share/bash-completion/completions/flor'"
check "the unit is packaging/systemd/flor.service with this install's binary in ExecStart" \
	[ "$(cat "$unit")" = "$(sed 's#^ExecStart=/usr/bin/flor #ExecStart=/usr/local/bin/flor #' "$repo/packaging/systemd/flor.service")" ]
check "unit runs 'flor service run'" grep -qx 'ExecStart=/usr/local/bin/flor service run' "$unit"
check "unit sets no FLOR_HOME (root finds /etc/flor, as flor enroll does)" bash -c "! grep -q '^Environment=.*FLOR_HOME' '$unit'"
check "unit makes /run/flor (RuntimeDirectory=flor)" grep -qx 'RuntimeDirectory=flor' "$unit"
check "unit restarts on failure" grep -qx 'Restart=on-failure' "$unit"
check "unit may write only the flor home" bash -c "grep -qx 'ProtectSystem=strict' '$unit' && grep -qx 'ReadWritePaths=/etc/flor' '$unit'"
check "unit is wanted by multi-user.target" grep -qx 'WantedBy=multi-user.target' "$unit"

if command -v systemd-analyze >/dev/null; then
	# verify resolves ExecStart on this machine's filesystem: point it at the scratch
	# copy of flor (the only change), and require a silent, successful verify.
	V=$T/verify
	mkdir -p "$V"
	sed "s#^ExecStart=/usr/local/bin/flor #ExecStart=$R/usr/local/bin/flor #" "$unit" >"$V/flor.service"
	vout=$(systemd-analyze verify "$V/flor.service" 2>&1) && vrc=0 || vrc=$?
	[ -z "$vout" ] || printf '%s\n' "$vout" | sed 's/^/     /'
	check "systemd-analyze verify flor.service: no warnings, exit 0" test "$vrc" = 0 -a -z "$vout"
else
	echo "  note: systemd-analyze is not installed here; unit checked by content only"
fi

# The unit's command line is one the binary accepts (argh exits 0 for --help on a
# known subcommand and 1 on an unknown one).
cmdline=$(sed -n 's/^ExecStart=//p' "$unit" | sed "s#^/usr/local/bin/flor#$R/usr/local/bin/flor#")
# shellcheck disable=SC2086 # the unit's command line, split into words as systemd does
check "the binary accepts the unit's command line ($cmdline --help)" $cmdline --help

echo "== install.sh: the service picks up a newly enrolled rete (scratch root)"
# The unit's command line, run as systemd would run it but with the scratch root's
# /etc/flor named by FLOR_HOME (on a live system root finds /etc/flor by itself; the
# .deb test shows that in a container) and FLOR_RUNTIME_DIR for RuntimeDirectory.
if [ -x "$retectl" ] && rete_up "$T/rete" "$bin" "$retectl"; then
	ok "a rete runs on loopback (mgmt01 with the config-server, alpha with the wiki)"
	svc_env=(env FLOR_HOME="$R/etc/flor" FLOR_RUNTIME_DIR="$T/run")
	# shellcheck disable=SC2086 # the unit's command line, split into words as systemd does
	"${svc_env[@]}" $cmdline >"$T/service.log" 2>&1 &
	svc=$!
	mkdir -p "$T/node"
	t0=$(date +%s%N)
	enrolled=$(cd "$T/node" && "${svc_env[@]}" "$R/usr/local/bin/flor" enroll "$RETE_BUNDLE" 2>&1) && erc=0 || erc=$?
	took=$((($(date +%s%N) - t0) / 1000000))
	printf '%s\n' "$enrolled" | sed 's/^/     /'
	# shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
	check "flor enroll <bundle> alone exits 0 and says traffic flows (${took} ms)" \
		bash -c '[ "$1" = 0 ] && grep -q "runs its vertex: traffic flows" <<<"$2"' _ "$erc" "$enrolled"
	status=$("${svc_env[@]}" "$R/usr/local/bin/flor" agent status --json 2>&1 || true)
	check "flor agent status finds the scope in the install's home" \
		grep -q "\"install\":\"$R/etc/flor/retes/demo.flor\"" <<<"$status"
	bob=$(socks_port_of "$status" bob 2>/dev/null || echo 0)
	page=$(curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$bob" http://wiki.demo.flor.rete/ 2>&1 || true)
	check "bob's request goes through the new node's SOCKS5 port $bob to the wiki: '$page'" [ "$page" = "$RETE_WIKI" ]
	check "the service started the agent (its log is in the scope)" grep -q "running v" "$R/etc/flor/retes/demo.flor/agent.log"
	kill "$svc" 2>/dev/null || true
	wait "$svc" 2>/dev/null || true
	check "the service stopped its agent and vertex with it (port $bob closed)" \
		rete_wait 20 python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $bob)) == 0)"
	rete_down
	rm -rf "$R/etc/flor/retes/demo.flor" "$R/etc/flor/service.lock"
else
	bad "a rete runs on loopback (retectl: $retectl)"
	rete_down
fi

echo "== install.sh: replaces the per-scope units of earlier releases"
RO=$T/old-root
mkdir -p "$RO/etc/systemd/system/multi-user.target.wants"
echo "[Service]" >"$RO/etc/systemd/system/flor-agent@.service"
for s in demo.flor home; do
	ln -s /etc/systemd/system/flor-agent@.service "$RO/etc/systemd/system/multi-user.target.wants/flor-agent@$s.service"
done
out=$("$install_sh" --root "$RO" --binary "$bin" 2>&1)
check "flor-agent@*.service links and template are gone, flor.service is enabled" \
	[ "$(cd "$RO" && find . -type f -o -type l | sort | tr '\n' ' ')" = \
	"./etc/systemd/system/flor.service ./etc/systemd/system/multi-user.target.wants/flor.service ./usr/local/bin/flor ./usr/local/share/bash-completion/completions/flor ./usr/local/share/fish/vendor_completions.d/flor.fish ./usr/local/share/man/man1/flor.1 ./usr/local/share/zsh/site-functions/_flor " ]
check "and it says so" grep -q "stopped and disabled flor-agent@demo.flor.service (replaced by flor.service)" <<<"$out"

echo "== install.sh: idempotent"
before=$(listing "$R")
"$install_sh" --root "$R" --binary "$bin" >/dev/null
check "a second identical install changes nothing" [ "$before" = "$(listing "$R")" ]

echo "== install.sh: refuses a binary for another architecture"
other=aarch64
[ "$host_arch" != aarch64 ] || other=x86_64
R2=$T/wrong
if out=$("$install_sh" --root "$R2" --binary "$bin" --arch "$other" 2>&1); then
	bad "installing a $host binary as $other was accepted"
else
	check "installing a $host binary as linux-$other is refused, saying why" grep -q "is a $host build, but this is linux-$other" <<<"$out"
fi
check "and nothing was written" [ ! -e "$R2/usr/local/bin/flor" ]

echo "== install.sh: uninstall keeps enrolled scopes, purge removes them"
mkdir -p "$R/etc/flor/retes/demo.flor"
echo '{}' >"$R/etc/flor/retes/demo.flor/scope.json"
"$install_sh" --root "$R" --uninstall >/dev/null
check "uninstall removed flor, the unit and the wants link" \
	[ "$(cd "$R" && find . -type f -o -type l | sort | tr '\n' ' ')" = "./etc/flor/retes/demo.flor/scope.json " ]
"$install_sh" --root "$R" --uninstall >/dev/null
check "uninstall twice is fine" [ -f "$R/etc/flor/retes/demo.flor/scope.json" ]
"$install_sh" --root "$R" --uninstall --purge >/dev/null
check "uninstall --purge removed /etc/flor" [ ! -e "$R/etc/flor" ]

echo "== install.sh: from a release directory next to the script, custom prefix"
REL=$T/release
mkdir -p "$REL"
cp "$install_sh" "$REL/install.sh"
cp "$bin" "$REL/flor-$host"
R3=$T/rel-root
"$REL/install.sh" --root "$R3" --prefix /opt/flor >/dev/null
check "picked flor-$host from the release directory into /opt/flor/bin" cmp -s "$bin" "$R3/opt/flor/bin/flor"
check "the unit runs /opt/flor/bin/flor" grep -qx 'ExecStart=/opt/flor/bin/flor service run' "$R3/etc/systemd/system/flor.service"
rm "$REL/flor-$host"
if out=$("$REL/install.sh" --root "$T/none" 2>&1); then bad "install without a binary succeeded"; else
	check "without a binary it says which file it looked for" grep -q "no --binary given and no $REL/flor-$host" <<<"$out"
fi

echo "== install.sh: Linux user install"
R4=$T/user-root
HOME=/home/ada "$install_sh" --user --root "$R4" --binary "$bin" >/dev/null
uunit=$R4/home/ada/.config/systemd/user/flor.service
check "user install: flor in ~/.local/bin" cmp -s "$bin" "$R4/home/ada/.local/bin/flor"
check "user unit runs '~/.local/bin/flor service run' and sets no FLOR_HOME (flor's ~/.flor default)" \
	bash -c "grep -qx 'ExecStart=/home/ada/.local/bin/flor service run' '$uunit' && ! grep -q FLOR_HOME '$uunit'"
check "user unit wanted by default.target" [ -L "$R4/home/ada/.config/systemd/user/default.target.wants/flor.service" ]
check "\$HOME/.flor/retes mode 700" [ "$(mode "$R4/home/ada/.flor/retes")" = 700 ]
if command -v systemd-analyze >/dev/null; then
	V=$T/verify-user
	mkdir -p "$V"
	sed "s#^ExecStart=/home/ada/.local/bin/flor #ExecStart=$R4/home/ada/.local/bin/flor #" "$uunit" >"$V/flor.service"
	vout=$(systemd-analyze verify "$V/flor.service" 2>&1) && vrc=0 || vrc=$?
	check "systemd-analyze verify (user unit): no warnings, exit 0" test "$vrc" = 0 -a -z "$vout"
fi

echo "== install.sh: macOS layout (launchd), in a scratch root"
# The release directory holds the macOS boards' builds (boards/macos-*.toml), which
# ci/cross.sh (run by ci/test.sh before this) leaves in target/boards. No macOS host
# here: they are installed, never run. Run alone without them, a header-only Mach-O
# fixture (64-bit x86_64 magic and cputype) stands in for the installer's detection.
MAC=$T/mac
mkdir -p "$MAC"
cp "$install_sh" "$MAC/install.sh"
boards_dir=$repo/target/boards
mac_real=0
if [ -f "$boards_dir/macos-x86_64/release/flor" ] && [ -f "$boards_dir/macos-aarch64/release/flor" ]; then
	mac_real=1
	cp "$boards_dir/macos-x86_64/release/flor" "$MAC/flor-darwin-x86_64"
	cp "$boards_dir/macos-aarch64/release/flor" "$MAC/flor-darwin-aarch64"
	echo "     release dir: the macos-x86_64 and macos-aarch64 board builds ($(file -b "$MAC/flor-darwin-aarch64" | cut -d, -f1))"
else
	echo "     note: no macOS board builds in $boards_dir (ci/cross.sh macos-x86_64 macos-aarch64): a header-only fixture"
	printf '\xcf\xfa\xed\xfe\x07\x00\x00\x01\x03\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00' >"$MAC/flor-darwin-x86_64"
fi
R5=$T/mac-root
mkdir -p "$R5/Library/LaunchDaemons"
echo '<plist/>' >"$R5/Library/LaunchDaemons/org.florete.flor-agent.demo.flor.plist"
"$MAC/install.sh" --root "$R5" --os darwin --arch x86_64 >/dev/null
plist=$R5/Library/LaunchDaemons/org.florete.flor.plist
check "flor at /usr/local/bin/flor, mode 755" [ "$(mode "$R5/usr/local/bin/flor")" = 755 ]
if [ "$mac_real" = 1 ]; then
	check "--arch x86_64 installed the macos-x86_64 build, byte for byte" cmp -s "$MAC/flor-darwin-x86_64" "$R5/usr/local/bin/flor"
	R6=$T/mac-arm-root
	"$MAC/install.sh" --root "$R6" --os darwin --arch aarch64 >/dev/null
	check "--arch aarch64 installed the macos-aarch64 build (Mach-O arm64), with the same LaunchDaemon" \
		bash -c "cmp -s '$MAC/flor-darwin-aarch64' '$R6/usr/local/bin/flor' && file -b '$R6/usr/local/bin/flor' | grep -q 'Mach-O 64-bit arm64' && test -f '$R6/Library/LaunchDaemons/org.florete.flor.plist'"
	if refusal=$("$install_sh" --root "$T/mac3" --os darwin --arch x86_64 --binary "$MAC/flor-darwin-aarch64" 2>&1); then
		refusal="exit 0: $refusal"
	fi
	check "a Mac binary of the other architecture is refused: '$refusal'" \
		grep -q "is a darwin-aarch64 build, but this is darwin-x86_64" <<<"$refusal"
fi
check "one LaunchDaemon org.florete.flor.plist, mode 644" [ "$(mode "$plist")" = 644 ]
check "the per-scope plist of an earlier release is gone" [ ! -e "$R5/Library/LaunchDaemons/org.florete.flor-agent.demo.flor.plist" ]
if command -v xmllint >/dev/null; then
	check "plist is well-formed XML" xmllint --noout "$plist"
fi
check "plist parses (plistlib) with label, 'flor service run', keep-alive, log" python3 - "$plist" <<'PLIST'
import plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
assert p["Label"] == "org.florete.flor", p["Label"]
assert p["ProgramArguments"] == ["/usr/local/bin/flor", "service", "run"], p["ProgramArguments"]
assert "EnvironmentVariables" not in p, "root finds /etc/flor by itself"
assert p["RunAtLoad"] is True and p["KeepAlive"] == {"SuccessfulExit": False}
assert p["StandardErrorPath"] == "/var/log/flor.log"
PLIST
check "an ELF binary is refused for macOS" bash -c "! '$install_sh' --root '$T/mac2' --os darwin --arch x86_64 --binary '$bin' >/dev/null 2>&1"
"$MAC/install.sh" --root "$R5" --os darwin --arch x86_64 --uninstall >/dev/null
check "macOS uninstall removes flor and the plist" test ! -e "$plist" -a ! -e "$R5/usr/local/bin/flor"

echo "== install.sh: the service manager, live (fake systemctl and launchctl)"
# A live --user install (no root, no scratch root) with fake systemctl/launchctl first on
# PATH: each logs its arguments and whether the installed flor is already the new binary.
# launchctl print answers "loaded" for every job, as if the service were running.
FAKE=$T/fake-bin
mkdir -p "$FAKE" "$T/systemd-run"
for tool in systemctl launchctl; do
	cat >"$FAKE/$tool" <<FAKE_EOF
#!/bin/sh
if cmp -s "\$NEW_FLOR" "\$INSTALLED_FLOR"; then state=new; else state=old; fi
echo "$tool \$* [\$state]" >>"$T/calls"
exit 0
FAKE_EOF
	chmod +x "$FAKE/$tool"
done
live_install() { # live_install HOME BINARY [args...]: a live --user install with the fakes
	local h=$1 b=$2
	shift 2
	: >"$T/calls"
	env HOME="$h" PATH="$FAKE:$PATH" FLOR_SYSTEMD_RUNDIR="$T/systemd-run" NEW_FLOR="$b" \
		INSTALLED_FLOR="$h/.local/bin/flor" "$install_sh" --user --binary "$b" "$@" >/dev/null 2>&1
}
# A different build of the same platform: the same ELF with one byte more at the end.
NEWBIN=$T/flor-new
cp "$bin" "$NEWBIN"
printf '\0' >>"$NEWBIN"
H=$T/live-home
# An earlier release's layout: a per-scope user unit, enabled.
mkdir -p "$H/.config/systemd/user/default.target.wants"
echo "[Service]" >"$H/.config/systemd/user/flor-agent@.service"
ln -s "$H/.config/systemd/user/flor-agent@.service" "$H/.config/systemd/user/default.target.wants/flor-agent@demo.flor.service"
live_install "$H" "$bin" --scope demo.flor
check "from per-scope units: flor-agent@demo.flor is disabled and stopped first" \
	[ "$(head -1 "$T/calls")" = 'systemctl --user disable --now flor-agent@demo.flor.service [new]' ]
check "then the one service starts: daemon-reload, restart flor.service" \
	[ "$(tail -n 2 "$T/calls" | tr '\n' ' ')" = 'systemctl --user daemon-reload [new] systemctl --user restart flor.service [new] ' ]
check "no per-scope unit is left" [ -z "$(find "$H/.config/systemd/user" -name 'flor-agent@*')" ]
live_install "$H" "$NEWBIN"
check "upgrade: systemctl --user try-restart flor.service, after the new binary is in place" \
	grep -qxF 'systemctl --user try-restart flor.service [new]' "$T/calls"
check "upgrade: the unit is reloaded before the restart" \
	[ "$(head -1 "$T/calls")" = 'systemctl --user daemon-reload [new]' ]
check "upgrade: the installed flor is the new binary" cmp -s "$NEWBIN" "$H/.local/bin/flor"
live_install "$H" "$NEWBIN"
check "the same binary again restarts nothing" bash -c "! grep -q restart '$T/calls'"
live_install "$H" "$bin" --no-start
check "--no-start: an upgrade restarts nothing" bash -c "! grep -q restart '$T/calls'"
MH=$T/mac-live-home
mkdir -p "$MH"
cp "$MAC/flor-darwin-x86_64" "$T/mac-old"
cp "$MAC/flor-darwin-x86_64" "$T/mac-new"
printf '\0' >>"$T/mac-new"
mac_live() { FLOR_UNAME_S=Darwin FLOR_UNAME_M=x86_64 live_install "$@"; }
mac_live "$MH" "$T/mac-old"
uid=$(id -u)
check "macOS first install: the LaunchAgent is loaded (bootstrap)" \
	grep -q "bootstrap gui/$uid .*org.florete.flor.plist" "$T/calls"
mac_live "$MH" "$T/mac-new"
check "macOS upgrade: launchctl kickstart -k the loaded service, after the new binary is in place" \
	grep -qxF "launchctl kickstart -k gui/$uid/org.florete.flor [new]" "$T/calls"

echo "== install.sh: bad input"
check "an unknown option is refused" bash -c "! '$install_sh' --frobnicate >/dev/null 2>&1"

summary
