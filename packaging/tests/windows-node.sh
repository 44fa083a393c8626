#!/usr/bin/env bash
# A Windows node in a real rete, under Wine: the flor.exe that the MSI installed, run by
# the Florete service it registered, is the demo rete's laptop, and real HTTP traffic goes
# through its SOCKS5 port to a Linux node.
#
#   operator, mgmt01, alpha (Linux)  packaging/tests/rete.sh: CA, signer, version 1
#                     published, mgmt01's agent with its config-server, alpha's wiki
#   laptop   (Wine)   `flor enroll` in a console, fetching over Florete from mgmt01; the
#                     service starts its agent within seconds; the agent starts the
#                     vertex; users bob and carol
#
# Checks: enroll writes C:\ProgramData\Florete\retes\demo.flor; the service starts the
# agent with no further command; `flor agent status` reaches it (the loopback port and
# cookie of agent.port); bob fetches the page through the Windows vertex; carol is
# refused; `net stop Florete` ends the agent and the vertex (the SOCKS5 port closes).
#
# Wine ends a prefix's services when its last ordinary program exits, so a console
# waiting for input is kept open while the node runs (on Windows a service simply runs).
#
# usage: packaging/tests/windows-node.sh FLOR RETECTL
#   with WINEPREFIX set to a prefix in which the MSI is installed.
#   FLOR, RETECTL: Linux builds of flor and retectl for the other nodes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/tests/lib.sh
source "$here/lib.sh"
# shellcheck source=packaging/tests/rete.sh
source "$here/rete.sh"
flor=$(realpath "${1:?usage: windows-node.sh FLOR RETECTL}")
retectl=$(realpath "${2:?RETECTL}")
: "${WINEPREFIX:?set WINEPREFIX to the prefix the MSI is installed in}"
wine=/usr/lib/wine/wine64
exe='C:\Program Files\Florete\flor.exe'
programdata="$WINEPREFIX/drive_c/ProgramData/Florete"

W=$(mktemp -d /tmp/florete-win.XXXXXX)
cleanup() {
	exec 9>&- 2>/dev/null || true
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	rete_down
	wait 2>/dev/null || true
	rm -rf "$W"
}
PIDS=()
trap cleanup EXIT

indent() { sed 's/^/     /'; }
# win ARGS...: flor.exe under Wine, CRs dropped.
win() { "$wine" "$exe" "$@" 2>&1 | tr -d '\r'; }
# until_ok SECONDS CMD...: retries CMD every half second.
until_ok() { rete_wait "$@"; }
healthy_win() { win agent status | grep -q "flor pid .* healthy"; }
socks_port() { # socks_port USER: the Windows laptop's actual SOCKS5 port for that user
	socks_port_of "$(win agent status --json)" "$1"
}
port_closed() { ! python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1"; }
no_node_processes() { ! pgrep -f 'flor.exe (agent|vertex) run' >/dev/null; }

echo "== the Linux nodes: operator, mgmt01 (config-server), alpha (the wiki) (packaging/tests/rete.sh)"
if rete_up "$W/rete" "$flor" "$retectl"; then
	ok "CA, signer, version 1 published; mgmt01 and alpha run (ports rewritten to free ones)"
else
	bad "the rete came up (see above)"
	summary
	exit
fi

echo "== laptop (Windows, Wine): enroll in a console; the service does the rest"
mkfifo "$W/keepalive"
"$wine" cmd /c "set /p keepalive=" <"$W/keepalive" >/dev/null 2>&1 &
PIDS+=("$!")
exec 9>"$W/keepalive" # closed by cleanup: the console then reads EOF and exits
check "the Florete service runs" until_ok 30 bash -c "'$wine' sc query Florete | grep -q RUNNING"
enrolled=$(win enroll "Z:$RETE_BUNDLE" || true)
indent <<<"$enrolled"
check "flor enroll succeeded: '$(head -n1 <<<"$enrolled")'" grep -q "enrolled node laptop in rete demo.flor" <<<"$enrolled"
check "the scope is in C:\\ProgramData\\Florete\\retes\\demo.flor" test -f "$programdata/retes/demo.flor/scope.json"
check "the keys are there (and never in the bundle's folder)" test -f "$programdata/retes/demo.flor/keys/user/bob.key"
check "the live generation is named by mgmt.live (no symlink on Windows)" \
	bash -c "[ \"\$(tr -d '\r\n' <'$programdata/retes/demo.flor/mgmt.live')\" = 1 ] && [ ! -L '$programdata/retes/demo.flor/mgmt' ]"
if until_ok 60 healthy_win; then
	ok "the service started the agent, whose vertex is healthy (flor agent status over agent.port)"
	win agent status | indent || true
else
	bad "the service started the agent, whose vertex is healthy (flor agent status over agent.port)"
	echo "     service.log:"
	indent <"$programdata/service.log" || true
	echo "     agent.log:"
	indent <"$programdata/retes/demo.flor/agent.log" || true
fi
check "the agent's log goes to its scope (agent.log)" grep -q "running v1" "$programdata/retes/demo.flor/agent.log"

echo "== operator publishes as olga with the certificate and key the Windows laptop holds"
check "retectl publish succeeds (the same version 1 again)" bash -c "set -o pipefail; cd '$RETE_DIR/operator/my-rete' && HOME='$RETE_DIR/operator' '$retectl' publish ../out \
	--as '$programdata/retes/demo.flor/certs/user/olga.crt' --key '$programdata/retes/demo.flor/keys/user/olga.key' 2>&1 | sed 's/^/     /'"

echo "== traffic through the Windows vertex"
bob=$(socks_port bob || echo 0)
carol=$(socks_port carol || echo 0)
page=$(curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$bob" http://wiki.demo.flor.rete/ 2>&1 || true)
check "bob (wiki-reader) gets the page through 127.0.0.1:$bob: '$page'" grep -qF "$RETE_WIKI" <<<"$page"
refused=$(curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$carol" http://wiki.demo.flor.rete/ 2>&1 || true)
check "carol (no role) is refused by the ACL (SOCKS5 reply 2) through 127.0.0.1:$carol: '$refused'" grep -q "connection to wiki.demo.flor.rete. (2)" <<<"$refused"
check "alpha's vertex logged carol's refusal" \
	bash -c "grep -rqs 'refused spiffe://demo.flor/user/carol' '$RETE_DIR/alpha/agent.log' '$RETE_DIR/alpha/.run'"

echo "== net stop Florete"
check "the service stops" bash -c "'$wine' net stop Florete 2>&1 | tr -d '\r' | grep -qi 'stopped'"
check "the agent and the vertex went with it (port $bob closed)" until_ok 20 port_closed "$bob"
check "no flor.exe agent or vertex process is left" until_ok 20 no_node_processes
check "the agent's control endpoint file is gone or stale" bash -c "! '$wine' '$exe' agent status >/dev/null 2>&1"

summary
