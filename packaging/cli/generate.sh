#!/bin/sh
# Generates flor's shell completions and man page from the one table of its
# commands and flags (packaging/cli/flor.commands):
#
#   <outdir>/flor.bash   bash  (bash-completion: .../bash-completion/completions/flor)
#   <outdir>/_flor       zsh   (a directory on $fpath, e.g. .../zsh/vendor-completions)
#   <outdir>/flor.fish   fish  (.../fish/vendor_completions.d/flor.fish)
#   <outdir>/flor.1      man   (.../man/man1/flor.1)
#
# usage: generate.sh [--version V] <outdir>
#
# POSIX sh and awk only, so it runs where flor is installed (Debian, OpenWrt's
# busybox, macOS) as well as where packages are built. packaging/extras.sh
# installs the results; agent/tests/cli.rs checks the table against the real
# binary's --help and runs the generated scripts in bash, zsh and fish.
set -eu

version=""
if [ "${1:-}" = "--version" ]; then
	[ $# -ge 2 ] || { echo "generate.sh: --version needs a value" >&2; exit 1; }
	version=$2
	shift 2
fi
[ $# -eq 1 ] || { echo "usage: generate.sh [--version V] <outdir>" >&2; exit 1; }
out=$1
table="$(dirname "$0")/flor.commands"
[ -r "$table" ] || { echo "generate.sh: cannot read $table" >&2; exit 1; }
mkdir -p "$out"

awk -F'|' -v out="$out" -v version="$version" -v Q="'" '
# Plain string replacement: gsub would read "\\" and "&" in the replacement.
function repl(s, a, b,   r, i) {
	r = ""
	while ((i = index(s, a)) > 0) { r = r substr(s, 1, i - 1) b; s = substr(s, i + length(a)) }
	return r s
}
function sq_bash(s) { return Q repl(s, Q, Q "\\" Q Q) Q }
function sq_fish(s) { return Q repl(repl(s, "\\", "\\\\"), Q, "\\" Q) Q }
function roff(s) {
	s = repl(repl(s, "\\", "\\e"), "-", "\\-")
	s = repl(s, Q, "\\(aq")
	if (s ~ /^[.]/) s = "\\&" s
	return s
}
function parent(p,   i) { i = match(p, / [^ ]+$/); return i ? substr(p, 1, i - 1) : "" }
function last(p,   n, w) { n = split(p, w, " "); return w[n] }
/^#/ || /^[ \t]*$/ { next }
{
	split($1, head, " ")
	kind = head[1]
	path = substr($1, length(kind) + 2)
	if (kind == "cmd") {
		paths[++np] = path
		desc[path] = $2
		if (parent(path) != "") {
			kids[parent(path)] = kids[parent(path)] (kids[parent(path)] == "" ? "" : " ") last(path)
		}
	} else if (kind == "flag") {
		n = ++nflag[path]
		fname[path, n] = $2; fval[path, n] = $3; fdesc[path, n] = $4
	} else if (kind == "arg") {
		n = ++narg[path]
		aname[path, n] = $2; aval[path, n] = $3; adesc[path, n] = $4
	} else {
		printf "flor.commands:%d: unknown line kind %s\n", NR, kind > "/dev/stderr"
		bad = 1
	}
}
END {
	if (bad) exit 1
	gen = "generated from packaging/cli/flor.commands by packaging/cli/generate.sh; do not edit"

	# ---- bash ------------------------------------------------------------
	f = out "/flor.bash"
	print "# bash completion for flor: " gen > f
	print "_flor_scopes() {" > f
	print "\tlocal h" > f
	print "\tfor h in ${FLOR_HOME:+\"$FLOR_HOME\"} /etc/flor \"$HOME/.flor\"; do" > f
	print "\t\t[ -d \"$h/retes\" ] && command ls -1 \"$h/retes\" 2>/dev/null" > f
	print "\tdone" > f
	print "}" > f
	print "_flor() {" > f
	print "\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} p=flor i" > f
	print "\tfor ((i = 1; i < COMP_CWORD; i++)); do" > f
	print "\t\tcase \"$p ${COMP_WORDS[i]}\" in" > f
	sep = "\t\t"
	for (i = 2; i <= np; i++) { printf "%s%s", sep, sq_bash(paths[i]) > f; sep = " | " }
	print ") p=\"$p ${COMP_WORDS[i]}\" ;;" > f
	print "\t\tesac" > f
	print "\tdone" > f
	print "\tcase \"$p|$prev\" in" > f
	for (i = 1; i <= np; i++) {
		p = paths[i]
		for (j = 1; j <= nflag[p]; j++) {
			v = fval[p, j]
			if (v == "-") continue
			if (v == "file") act = "COMPREPLY=($(compgen -f -- \"$cur\"))"
			else if (v == "dir") act = "COMPREPLY=($(compgen -d -- \"$cur\"))"
			else if (v == "scope") act = "COMPREPLY=($(compgen -W \"$(_flor_scopes)\" -- \"$cur\"))"
			else act = "COMPREPLY=()"
			print "\t" sq_bash(p "|" fname[p, j]) ") " act "; return ;;" > f
		}
	}
	print "\tesac" > f
	print "\tlocal words= files=" > f
	print "\tcase \"$p\" in" > f
	for (i = 1; i <= np; i++) {
		p = paths[i]
		w = kids[p]
		for (j = 1; j <= nflag[p]; j++) w = w (w == "" ? "" : " ") fname[p, j]
		w = w (w == "" ? "" : " ") "--help"
		line = "\t" sq_bash(p) ") words=" sq_bash(w)
		if (narg[p] && aval[p, 1] == "file") line = line "; files=1"
		print line " ;;" > f
	}
	print "\tesac" > f
	print "\tCOMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))" > f
	print "\tif [ -n \"$files\" ] && [[ $cur != -* ]]; then" > f
	print "\t\tCOMPREPLY+=($(compgen -f -- \"$cur\"))" > f
	print "\tfi" > f
	print "}" > f
	print "complete -F _flor flor" > f
	close(f)

	# ---- zsh -------------------------------------------------------------
	f = out "/_flor"
	print "#compdef flor" > f
	print "# zsh completion for flor: " gen > f
	print "_flor_scopes() {" > f
	print "\tlocal -a s" > f
	print "\tlocal h" > f
	print "\tfor h in ${FLOR_HOME:-} /etc/flor ~/.flor; do" > f
	print "\t\t[[ -n $h && -d $h/retes ]] && s+=($h/retes/*(N:t))" > f
	print "\tdone" > f
	print "\tcompadd -a s" > f
	print "}" > f
	print "_flor() {" > f
	print "\tlocal p=flor i" > f
	print "\tfor (( i = 2; i < CURRENT; i++ )); do" > f
	print "\t\tcase \"$p ${words[i]}\" in" > f
	sep = "\t\t("
	for (i = 2; i <= np; i++) { printf "%s%s", sep, sq_bash(paths[i]) > f; sep = "|" }
	print ") p=\"$p ${words[i]}\" ;;" > f
	print "\t\tesac" > f
	print "\tdone" > f
	print "\tcase \"$p|${words[CURRENT-1]}\" in" > f
	for (i = 1; i <= np; i++) {
		p = paths[i]
		for (j = 1; j <= nflag[p]; j++) {
			v = fval[p, j]
			if (v == "-") continue
			if (v == "file") act = "_files"
			else if (v == "dir") act = "_files -/"
			else if (v == "scope") act = "_flor_scopes"
			else act = "_message " sq_bash(fdesc[p, j])
			print "\t(" sq_bash(p "|" fname[p, j]) ") " act "; return ;;" > f
		}
	}
	print "\tesac" > f
	print "\tlocal -a cmds opts" > f
	print "\tlocal files=" > f
	print "\tcase \"$p\" in" > f
	for (i = 1; i <= np; i++) {
		p = paths[i]
		print "\t(" sq_bash(p) ")" > f
		c = ""
		nk = split(kids[p], k, " ")
		for (j = 1; j <= nk; j++) c = c " " sq_bash(k[j] ":" desc[p " " k[j]])
		if (c != "") print "\t\tcmds=(" substr(c, 2) ")" > f
		o = ""
		for (j = 1; j <= nflag[p]; j++) o = o " " sq_bash(fname[p, j] ":" fdesc[p, j])
		if (o != "") print "\t\topts=(" substr(o, 2) ")" > f
		if (narg[p] && aval[p, 1] == "file") print "\t\tfiles=1" > f
		print "\t\t;;" > f
	}
	print "\tesac" > f
	print "\topts+=(\047--help:display usage information\047)" > f
	print "\tif [[ ${words[CURRENT]} == -* ]]; then" > f
	print "\t\t_describe -t options option opts" > f
	print "\telse" > f
	print "\t\t(( $#cmds )) && _describe -t commands command cmds" > f
	print "\t\t[[ -n $files ]] && _files" > f
	print "\t\t(( $#cmds )) || [[ -n $files ]] || _describe -t options option opts" > f
	print "\tfi" > f
	print "}" > f
	print "_flor \"$@\"" > f
	close(f)

	# ---- fish ------------------------------------------------------------
	f = out "/flor.fish"
	print "# fish completion for flor: " gen > f
	print "function __flor_path" > f
	print "    set -l p flor" > f
	print "    for w in (commandline -opc)[2..-1]" > f
	print "        switch \"$p $w\"" > f
	printf "            case" > f
	for (i = 2; i <= np; i++) printf " %s", sq_fish(paths[i]) > f
	print "" > f
	print "                set p \"$p $w\"" > f
	print "        end" > f
	print "    end" > f
	print "    echo $p" > f
	print "end" > f
	print "function __flor_at" > f
	print "    test (__flor_path) = \"$argv\"" > f
	print "end" > f
	print "function __flor_scopes" > f
	print "    for h in $FLOR_HOME /etc/flor ~/.flor" > f
	print "        test -d $h/retes; and command ls -1 $h/retes 2>/dev/null" > f
	print "    end" > f
	print "end" > f
	print "complete -c flor -f" > f
	for (i = 1; i <= np; i++) {
		p = paths[i]
		cond = "-n " sq_fish("__flor_at " p)
		nk = split(kids[p], k, " ")
		for (j = 1; j <= nk; j++)
			print "complete -c flor " cond " -a " sq_fish(k[j]) " -d " sq_fish(desc[p " " k[j]]) > f
		for (j = 1; j <= nflag[p]; j++) {
			v = fval[p, j]
			if (v == "-") act = ""
			else if (v == "file") act = " -r -F"
			else if (v == "dir") act = " -x -a " sq_fish("(__fish_complete_directories)")
			else if (v == "scope") act = " -x -a " sq_fish("(__flor_scopes)")
			else act = " -x"
			print "complete -c flor " cond " -l " substr(fname[p, j], 3) act " -d " sq_fish(fdesc[p, j]) > f
		}
		if (narg[p] && aval[p, 1] == "file") print "complete -c flor " cond " -F" > f
	}
	close(f)

	# ---- man page --------------------------------------------------------
	f = out "/flor.1"
	print ".\\\" " gen > f
	print ".TH FLOR 1 \"\" \"flor" (version == "" ? "" : " " version) "\" \"Florete\"" > f
	print ".SH NAME" > f
	print "flor \\- " roff(desc["flor"]) > f
	print ".SH SYNOPSIS" > f
	print ".B flor" > f
	print ".I command" > f
	print "[\\fIoptions\\fR]" > f
	print ".br" > f
	print ".B flor \\-\\-version" > f
	print ".SH DESCRIPTION" > f
	print "The one binary on every Florete node: the agent pulls the node\\(aqs signed" > f
	print "artifacts from the rete\\(aqs config\\-server, verifies them and supervises the" > f
	print "vertex, which carries the traffic. Run without a command, it prints its" > f
	print "help and exits with status 2." > f
	print ".SH COMMANDS" > f
	for (i = 2; i <= np; i++) {
		p = paths[i]
		if (kids[p] != "") continue
		syn = ""
		for (j = 1; j <= narg[p]; j++) syn = syn " \\fI" aname[p, j] "\\fR"
		for (j = 1; j <= nflag[p]; j++) {
			syn = syn " [\\fB" roff(fname[p, j]) "\\fR"
			if (fval[p, j] != "-") syn = syn " \\fI" fval[p, j] "\\fR"
			syn = syn "]"
		}
		print ".SS \"" roff(p) "\"" > f
		print "\\fB" roff(p) "\\fR" syn > f
		print ".PP" > f
		print roff(desc[p]) > f
		for (j = 1; j <= narg[p]; j++) {
			print ".TP" > f
			print ".I " aname[p, j] > f
			print roff(adesc[p, j]) > f
		}
		for (j = 1; j <= nflag[p]; j++) {
			print ".TP" > f
			print "\\fB" roff(fname[p, j]) "\\fR" (fval[p, j] == "-" ? "" : " \\fI" fval[p, j] "\\fR") > f
			print roff(fdesc[p, j]) > f
		}
	}
	print ".SH OPTIONS" > f
	for (j = 1; j <= nflag["flor"]; j++) {
		print ".TP" > f
		print ".B " roff(fname["flor", j]) > f
		print roff(fdesc["flor", j]) > f
	}
	print ".TP" > f
	print ".B \\-\\-help" > f
	print "after any command: print its usage and exit" > f
	print ".SH ENVIRONMENT" > f
	print ".TP" > f
	print ".B FLOR_HOME" > f
	print "where enrolled scopes live; default /etc/flor when it exists and may be written, else ~/.flor" > f
	print ".TP" > f
	print ".B RUST_LOG" > f
	print "log level (error, warn, info, debug)" > f
	print ".SH FILES" > f
	print ".TP" > f
	print ".I /etc/flor/retes/<scope>/" > f
	print "a rete scope of a system install: scope.json, ca.crt, certs/, keys/, mgmt/ (the live artifacts), config\\-store/ (the config\\-server\\(aqs store on the management node)" > f
	print ".SH SEE ALSO" > f
	print ".BR retectl (1)" > f
	close(f)
}
' "$table"
