#!/usr/bin/env bash
# Builds flor's Windows installer (.msi) with wixl and msibuild (Debian: wixl, msitools).
#
# usage: packaging/windows/build-msi.sh --exe FILE [--version X.Y.Z] [--out DIR]
#   FILE   flor.exe for x86_64-pc-windows-gnu (see packaging/windows/build-exe.sh)
#   X.Y.Z  product version (default: the workspace version from Cargo.toml)
#   DIR    output directory (default: target/packages)
# Prints the path of the MSI it wrote: flor-<version>-x64.msi.
#
# The MSI installs C:\Program Files\Florete\flor.exe and appends that folder to the
# system PATH (removed again on uninstall). wixl 0.101 reads flor.wxs but has no
# <Environment> element, so the PATH row and its standard actions
# (WriteEnvironmentStrings, RemoveEnvironmentStrings) are added with msibuild.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

exe=""
version=""
out="$repo/target/packages"
while [ $# -gt 0 ]; do
	case "$1" in
	--exe) exe=${2:?--exe needs a file}; shift ;;
	--version) version=${2:?--version needs X.Y.Z}; shift ;;
	--out) out=${2:?--out needs a directory}; shift ;;
	*) echo "build-msi.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
	esac
	shift
done
die() { echo "build-msi.sh: $*" >&2; exit 1; }
[ -n "$exe" ] || die "--exe FILE is required"
[ -f "$exe" ] || die "$exe: no such file"
for tool in wixl msibuild msiinfo; do
	command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install wixl msitools)"
done
[ -n "$version" ] || version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$' <<<"$version" || die "version '$version' is not X.Y.Z (MSI versions are numeric)"
desc=$(file -b "$exe")
case "$desc" in
*"PE32+ executable"*"x86-64"*) ;;
*) die "$exe is not an x86-64 Windows executable: file says '$desc'" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# wixl resolves File/@Source relative to where it runs: stage the exe beside the source.
cp "$here/flor.wxs" "$work/flor.wxs"
cp "$exe" "$work/flor.exe"
mkdir -p "$out"
out=$(cd "$out" && pwd)
msi="$out/flor-$version-x64.msi"
rm -f "$msi"
(cd "$work" && wixl --arch x64 -D "Version=$version" -o "$msi" flor.wxs)

# Environment: '=' set at install, '-' remove at uninstall, '*' system-wide;
# "[~];" appends to the existing PATH instead of replacing it.
printf 'Environment\tName\tValue\tComponent_\ns72\tl255\tL255\ts72\nEnvironment\tEnvironment\nFlorPath\t=-*PATH\t[~];[INSTALLDIR]\tFlorPath\n' \
	>"$work/Environment.idt"
msiinfo export "$msi" InstallExecuteSequence >"$work/InstallExecuteSequence.idt"
# Where WiX's own sequence puts them: after UnpublishFeatures, before RegisterUser.
printf 'RemoveEnvironmentStrings\t\t3300\nWriteEnvironmentStrings\t\t5200\n' >>"$work/InstallExecuteSequence.idt"
msibuild "$msi" -i "$work/Environment.idt"
msibuild "$msi" -i "$work/InstallExecuteSequence.idt"
echo "$msi"
