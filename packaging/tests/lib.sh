# Sourced by the packaging checks: counts checks and says what failed, in plain words.
# shellcheck shell=bash
passed=0
failed=0
ok() { passed=$((passed + 1)); printf '  ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL %s\n' "$*"; }
# check "what" command...: runs the command, counts it as a pass when it succeeds.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}
# mode FILE: the permission bits as octal (GNU stat).
mode() { stat -c '%a' "$1"; }
# summary: the closing line CI reads; exits non-zero when a check failed.
summary() {
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}
