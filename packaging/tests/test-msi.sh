#!/usr/bin/env bash
# Checks flor's Windows MSI with msitools: summary (x64, English), product name and
# version, the upgrade rows, the 64-bit component holding flor.exe under
# ProgramFiles64Folder\Florete, the PATH entry and the actions that write and remove
# it, and that the embedded cabinet extracts to the very flor.exe it was built from.
# Then, under Wine (Debian's wine64) in a throwaway prefix: msiexec /i installs it and
# starts the Florete service, `flor --version` runs from a new shell through the PATH
# entry, the service is started again when Wine boots, the installed flor.exe serves as
# a node of a real rete (packaging/tests/windows-node.sh), and msiexec /x removes the
# file, the PATH entry and the service again.
#
# usage: packaging/tests/test-msi.sh MSI FLOR_EXE VERSION FLOR RETECTL
#   FLOR, RETECTL: Linux builds, for the rete's other nodes and its operator
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/tests/lib.sh
source "$here/lib.sh"
msi=${1:?usage: test-msi.sh MSI FLOR_EXE VERSION}
exe=${2:?FLOR_EXE}
version=${3:?VERSION}
flor_linux=${4:?FLOR (a Linux build of flor)}
retectl=${5:?RETECTL}

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# row TABLE KEY: the exported row whose first column is KEY (tab-separated).
# msiinfo writes IDT text with CRLF line ends.
export_() { msiinfo export "$msi" "$1" | tr -d '\r'; }
row() { export_ "$1" | awk -F'\t' -v k="$2" '$1 == k'; }

echo "== $(basename "$msi")"
sum=$(msiinfo suminfo "$msi")
check "summary template is x64;1033 (64-bit package, English)" grep -qx 'Template: x64;1033' <<<"$sum"
check "ProductName is 'Florete flor'" [ "$(row Property ProductName | cut -f2)" = "Florete flor" ]
check "ProductVersion is $version" [ "$(row Property ProductVersion | cut -f2)" = "$version" ]
check "Manufacturer is set" [ -n "$(row Property Manufacturer | cut -f2)" ]
code=$(row Property UpgradeCode | cut -f2 | tr a-f A-F)
check "UpgradeCode is the fixed one from flor.wxs ($code)" [ "$code" = "{7054A8F5-FE9D-4182-9241-A081055F4C1E}" ]
check "MajorUpgrade: older versions are removed, newer ones block a downgrade" \
	bash -c "msiinfo export '$msi' Upgrade | grep -q WIX_UPGRADE_DETECTED && msiinfo export '$msi' Upgrade | grep -q WIX_DOWNGRADE_DETECTED"

echo "== files and folders"
check "File table: flor.exe in component FlorExe" [ "$(row File flor.exe | cut -f2,3)" = "$(printf 'FlorExe\tflor.exe')" ]
check "FlorExe is a 64-bit component (attribute 256) in INSTALLDIR" [ "$(row Component FlorExe | cut -f3,4)" = "$(printf 'INSTALLDIR\t256')" ]
check "INSTALLDIR is 'Florete' under ProgramFiles64Folder" [ "$(row Directory INSTALLDIR | cut -f2,3)" = "$(printf 'ProgramFiles64Folder\tFlorete')" ]
mkdir -p "$T/x"
msiextract -C "$T/x" "$msi" >/dev/null
# msiextract lays files out below ProgramFiles64Folder, which it maps to ".".
got=$(cd "$T/x" && find . -type f | sort)
check "the cabinet holds exactly Florete/flor.exe ($got)" [ "$got" = "./Florete/flor.exe" ]
check "and it is flor.exe byte for byte" cmp -s "$exe" "$T/x/Florete/flor.exe"
desc=$(file -b "$T/x/Florete/flor.exe" 2>&1 || true)
echo "     file: $desc"
check "flor.exe is a PE32+ x86-64 console program" grep -qF 'PE32+ executable (console) x86-64' <<<"$desc"

echo "== service"
check "ServiceInstall: Florete runs 'flor service run' as LocalSystem, auto-start, own process" \
	[ "$(row ServiceInstall FloreteService | cut -f2,4,5,9,11,12)" = "$(printf 'Florete\t16\t2\tLocalSystem\tservice run --log "[CommonAppDataFolder]Florete\\service.log"\tFlorExe')" ]
check "ServiceControl: started on install, stopped on install and uninstall, removed on uninstall (163)" \
	[ "$(row ServiceControl FloreteService | cut -f2,3,5)" = "$(printf 'Florete\t163\t1')" ]

echo "== PATH"
check "Environment appends [INSTALLDIR] to the system PATH and removes it on uninstall" \
	[ "$(row Environment FlorPath | cut -f2-4)" = "$(printf '=-*PATH\t[~];[INSTALLDIR]\tFlorPath')" ]
seq=$(export_ InstallExecuteSequence)
n() { awk -F'\t' -v a="$1" '$1 == a {print $3}' <<<"$seq"; }
check "WriteEnvironmentStrings runs after InstallFiles, before InstallFinalize" \
	test "$(n InstallFiles)" -lt "$(n WriteEnvironmentStrings)" -a "$(n WriteEnvironmentStrings)" -lt "$(n InstallFinalize)"
check "RemoveEnvironmentStrings runs after InstallInitialize, before RemoveFiles" \
	test "$(n InstallInitialize)" -lt "$(n RemoveEnvironmentStrings)" -a "$(n RemoveEnvironmentStrings)" -lt "$(n RemoveFiles)"

echo "== install, run and uninstall under Wine"
wine=/usr/lib/wine/wine64
if [ ! -x "$wine" ]; then
	bad "wine64 is not installed (apt-get install --no-install-recommends wine64)"
	summary
	exit
fi
export WINEPREFIX=$T/wine WINEDEBUG=-all
# Every wine process of this prefix goes when the test ends.
trap '/usr/lib/wine/wineserver64 -k 2>/dev/null || true; rm -rf "$T"' EXIT
"$wine" wineboot -i >/dev/null 2>&1
# Wait until the new prefix's first-boot setup has finished writing the registry:
# a service created while it still runs is lost again.
/usr/lib/wine/wineserver64 -w
x86_64-w64-mingw32-gcc -O2 -shared -s -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
	"$here/wine/bcryptprimitives.c" -ladvapi32 -lws2_32
env_key='HKLM\System\CurrentControlSet\Control\Session Manager\Environment'
wpath() { "$wine" reg query "$env_key" /v PATH 2>/dev/null | tr -d '\r' | sed -n 's/.*REG_EXPAND_SZ *//p'; }
check "msiexec /i installs it (quiet)" "$wine" msiexec /i "$msi" /qn
svc_state() { "$wine" sc query Florete 2>/dev/null | tr -d '\r' | sed -n 's/.*STATE *: *[0-9]* *//p'; }
# svc_running: the service reaches RUNNING within 20 s (each query boots Wine's
# service manager, which starts automatic services, when nothing else runs).
svc_running() {
	for _ in $(seq 40); do
		[ "$(svc_state)" = RUNNING ] && return 0
		sleep 0.5
	done
	return 1
}
check "the Florete service is running after the install" svc_running
installed="$WINEPREFIX/drive_c/Program Files/Florete/flor.exe"
check "C:\\Program Files\\Florete\\flor.exe is there, byte for byte" cmp -s "$exe" "$installed"
check "the system PATH ends with C:\\Program Files\\Florete\\ ($(wpath))" bash -c "[[ '$(wpath)' == *';C:\Program Files\Florete\' ]]"
/usr/lib/wine/wineserver64 -k 2>/dev/null || true
ver=$("$wine" cmd /c "flor --version" 2>/dev/null | tr -d '\r')
check "a new shell finds flor on the PATH: '$ver' = 'flor $version'" [ "$ver" = "flor $version" ]
check "Wine booted again and started the (automatic) service by itself" svc_running
# Its closing line is indented so that it is not read as this script's own.
{ "$here/windows-node.sh" "$flor_linux" "$retectl" || true; } 2>&1 \
	| sed 's/^\([0-9]* passed, [0-9]* failed\)$/     windows-node.sh: \1/' | tee "$T/node.out"
node=$(tail -n1 "$T/node.out")
check "the installed flor.exe is a working node of a rete ($node)" grep -q "passed, 0 failed" <<<"$node"
check "msiexec /x uninstalls it (quiet)" "$wine" msiexec /x "$msi" /qn
check "flor.exe is gone" [ ! -e "$installed" ]
check "the PATH entry is gone ($(wpath))" bash -c "[[ '$(wpath)' != *Florete* ]]"
check "the Florete service is removed" bash -c "! '$wine' sc query Florete >/dev/null 2>&1"

summary
