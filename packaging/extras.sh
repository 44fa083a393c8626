#!/bin/sh
# Installs what the packages ship besides the binary: flor's shell completions
# (bash, zsh, fish) and man page, generated from packaging/cli/flor.commands
# (packaging/cli/generate.sh) — and retectl's, from its own parser, when
# --retectl names a retectl binary that runs here. install.sh, the .deb and the
# .ipk call this; it needs only sh and awk.
#
# usage: packaging/extras.sh [options] <destdir>
#   --prefix DIR     install prefix (default /usr/local; the .deb and .ipk pass /usr)
#   --shells LIST    which completions, e.g. "bash" (default "bash zsh fish")
#   --no-man         no man pages (OpenWrt: no man there)
#   --retectl FILE   also retectl's completions and man pages (retectl completions/man)
#   --version V      the version the man page names
#   --list           print the paths it installs (under <destdir>), one a line; write nothing
#   --uninstall      remove them from <destdir>
#
# What goes where, under <destdir><prefix>/share:
#   bash-completion/completions/flor
#   zsh/vendor-completions/_flor       (prefix /usr: Debian's; else zsh/site-functions/_flor)
#   fish/vendor_completions.d/flor.fish
#   man/man1/flor.1
#   and retectl, _retectl, retectl.fish, man1/retectl*.1 with --retectl
set -eu

prefix=/usr/local
shells="bash zsh fish"
man=1
retectl=""
version=""
mode=install
dest=""
while [ $# -gt 0 ]; do
	case "$1" in
	--prefix) [ $# -ge 2 ] || { echo "extras.sh: --prefix needs a directory" >&2; exit 1; }; prefix=$2; shift ;;
	--shells) [ $# -ge 2 ] || { echo "extras.sh: --shells needs a list" >&2; exit 1; }; shells=$2; shift ;;
	--no-man) man=0 ;;
	--retectl) [ $# -ge 2 ] || { echo "extras.sh: --retectl needs a file" >&2; exit 1; }; retectl=$2; shift ;;
	--version) [ $# -ge 2 ] || { echo "extras.sh: --version needs a value" >&2; exit 1; }; version=$2; shift ;;
	--list) mode=list ;;
	--uninstall) mode=uninstall ;;
	-*) echo "extras.sh: unknown option $1 (see the header of this script)" >&2; exit 1 ;;
	*) dest=$1 ;;
	esac
	shift
done
[ "$mode" = list ] || [ -n "$dest" ] || { echo "usage: extras.sh [options] <destdir>" >&2; exit 1; }
case "$prefix" in /*) ;; *) echo "extras.sh: --prefix must be an absolute path" >&2; exit 1 ;; esac

share=$prefix/share
if [ "$prefix" = /usr ]; then zsh_dir=$share/zsh/vendor-completions; else zsh_dir=$share/zsh/site-functions; fi

# "<generated file> <installed path>" per line, for flor (and retectl).
plan() {
	for sh in $shells; do
		case "$sh" in
		bash) echo "flor.bash $share/bash-completion/completions/flor" ;;
		zsh) echo "_flor $zsh_dir/_flor" ;;
		fish) echo "flor.fish $share/fish/vendor_completions.d/flor.fish" ;;
		*) echo "extras.sh: unknown shell $sh (bash, zsh, fish)" >&2; exit 1 ;;
		esac
		if [ -n "$retectl" ]; then
			case "$sh" in
			bash) echo "retectl.bash $share/bash-completion/completions/retectl" ;;
			zsh) echo "_retectl $zsh_dir/_retectl" ;;
			fish) echo "retectl.fish $share/fish/vendor_completions.d/retectl.fish" ;;
			esac
		fi
	done
	if [ "$man" = 1 ]; then
		echo "flor.1 $share/man/man1/flor.1"
		if [ -n "$retectl" ]; then
			"$retectl" man --out "$work/man" >/dev/null
			for page in "$work/man"/*.1; do
				echo "man/$(basename "$page") $share/man/man1/$(basename "$page")"
			done
		fi
	fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

if [ "$mode" != install ]; then
	plan | while read -r _ path; do
		if [ "$mode" = list ]; then echo "$path"; else rm -f "$dest$path"; fi
	done
	exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "$version" ]; then
	sh "$here/cli/generate.sh" --version "$version" "$work"
else
	sh "$here/cli/generate.sh" "$work"
fi
if [ -n "$retectl" ]; then
	for sh in $shells; do
		case "$sh" in
		bash) "$retectl" completions bash >"$work/retectl.bash" ;;
		zsh) "$retectl" completions zsh >"$work/_retectl" ;;
		fish) "$retectl" completions fish >"$work/retectl.fish" ;;
		esac
	done
fi
plan >"$work/plan"
while read -r from path; do
	mkdir -p "$(dirname "$dest$path")"
	# A temp file and a rename, as install.sh writes files: never half a file.
	tmp="$dest$path.tmp.$$"
	cp "$work/$from" "$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$dest$path"
done <"$work/plan"
