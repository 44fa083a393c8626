# Sourced by the package tests: a running rete on loopback for a packaged flor to join.
#
#   operator  retectl: CA, signer, compile examples/my-rete, bundles
#   mgmt01    flor agent, which runs the config-server its artifact publishes
#   alpha     flor agent; a python3 http.server behind the `wiki` service
#   laptop    left for the node under test: $RETE_DIR/laptop.bundle.json (users bob,
#             carol, olga); its plain `flor enroll` fetches from mgmt01 over Florete
#
# examples/my-rete's fixed addresses (UDP 7443, TCP 7080, 8080, ...) are rewritten to
# free ports on 127.0.0.1, and the users' preferred SOCKS5 ports to 1160-1162 (taken
# ones fall back to free ports), so the test runs beside the demo and other tests. A copy of
# the laptop bundle enrolled into the operator's own flor home gives olga's
# certificate for `retectl publish --as olga` (as on the operator's laptop).
# shellcheck shell=bash

RETE_PIDS=()

# rete_on NODE CMD...: CMD as that node (its own flor home and runtime directory).
rete_on() {
	local node=$1
	shift
	(cd "$RETE_DIR/$node" && FLOR_HOME="$RETE_DIR/$node/.flor" FLOR_RUNTIME_DIR="$RETE_DIR/$node/.run" "$@")
}
rete_bg() { # rete_bg NODE LOG CMD...
	local node=$1 log=$2
	shift 2
	(cd "$RETE_DIR/$node" && FLOR_HOME="$RETE_DIR/$node/.flor" FLOR_RUNTIME_DIR="$RETE_DIR/$node/.run" exec "$@" >"$log" 2>&1) &
	RETE_PIDS+=("$!")
}
# rete_wait SECONDS CMD...: retries CMD every half second.
rete_wait() {
	local n=$(($1 * 2))
	shift
	for _ in $(seq "$n"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	return 1
}
rete_healthy() { rete_on "$1" "$RETE_FLOR" agent status 2>/dev/null | grep -q "flor pid .* healthy"; }

# rete_up DIR FLOR RETECTL: the rete above, running; fails (and says where) if a node
# does not come up. Sets RETE_DIR, RETE_BUNDLE and RETE_WIKI (the page bob gets).
rete_up() {
	RETE_DIR=$(mkdir -p "$1" && cd "$1" && pwd)
	RETE_FLOR=$(realpath "$2")
	local retectl repo ports n
	retectl=$(realpath "$3")
	repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	mkdir -p "$RETE_DIR"/{operator,mgmt01,alpha}
	cp -r "$repo/examples/my-rete" "$RETE_DIR/operator/my-rete"
	# Every 127.0.0.N:PORT in nodes.yaml and services.yaml becomes 127.0.0.1:<free port>
	# (free for TCP and UDP both); prints service=port for the ones the test starts.
	ports=$(python3 - "$RETE_DIR/operator/my-rete" <<'PY'
import re, socket, sys
def free():
    while True:
        t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p)); return p
        except OSError:
            pass
        finally:
            t.close(); u.close()
for name in ("nodes.yaml", "services.yaml"):
    path = f"{sys.argv[1]}/{name}"
    out, current = [], None
    for line in open(path):
        m = re.match(r"\s*- name: (\S+)", line)
        if m:
            current = m.group(1)
        if re.search(r"127\.0\.0\.\d+:\d+", line):
            p = free()
            line = re.sub(r"127\.0\.0\.\d+:\d+", f"127.0.0.1:{p}", line)
            if name == "services.yaml":
                print(f"{current.replace('-', '_')}={p}")
        out.append(line)
    open(path, "w").write("".join(out))
PY
	)
	local wiki
	# The users' SOCKS5 ports, preferences only, move away from the demo's 1080-1082.
	sed -i 's/socks_port: 108\([0-9]\)/socks_port: 116\1/' "$RETE_DIR/operator/my-rete/users.yaml"
	wiki=$(sed -n 's/^wiki=//p' <<<"$ports")
	(
		cd "$RETE_DIR/operator/my-rete"
		export HOME="$RETE_DIR/operator"
		"$retectl" ca init . >/dev/null
		"$retectl" ca sign . --kind management-plane --name primary >/dev/null
		"$retectl" compile . --all --out ../out >/dev/null
		for n in mgmt01 alpha laptop; do
			"$retectl" issue-bundle . --node "$n" --out "$RETE_DIR/$n.bundle.json" >/dev/null
		done
	) || { echo "rete.sh: the operator's retectl steps failed" >&2; return 1; }
	mv "$RETE_DIR/mgmt01.bundle.json" "$RETE_DIR/mgmt01/"
	mv "$RETE_DIR/alpha.bundle.json" "$RETE_DIR/alpha/"
	RETE_BUNDLE=$RETE_DIR/laptop.bundle.json

	# The helper nodes' own SOCKS5 ports (1179) move out of the band the tested node uses.
	rete_on mgmt01 "$RETE_FLOR" enroll mgmt01.bundle.json --from ../operator/out --port-offset 3000 >/dev/null
	# The agent runs the config-server its artifact publishes (on the rewritten ports).
	rete_bg mgmt01 agent.log "$RETE_FLOR" agent run --rete demo.flor
	rete_wait 30 rete_healthy mgmt01 || { echo "rete.sh: mgmt01 did not come up:" >&2; cat "$RETE_DIR/mgmt01/agent.log" >&2; return 1; }

	# The operator publishes version 1 as olga, from the laptop bundle's copy of her keys.
	mkdir -p "$RETE_DIR/operator/node"
	(cd "$RETE_DIR/operator/node" && FLOR_HOME="$RETE_DIR/operator/.flor" "$RETE_FLOR" enroll "$RETE_BUNDLE" --from ../out >/dev/null) || return 1
	# Retried: the agent may still be starting its config-server.
	rete_publish() {
		(cd "$RETE_DIR/operator/my-rete" && HOME="$RETE_DIR/operator" FLOR_HOME="$RETE_DIR/operator/.flor" \
			"$retectl" publish ../out --as olga)
	}
	rete_wait 30 rete_publish || { echo "rete.sh: retectl publish failed:" >&2; rete_publish >&2; return 1; }

	mkdir -p "$RETE_DIR/alpha/www"
	RETE_WIKI="hello from the demo.flor wiki on alpha"
	echo "$RETE_WIKI" >"$RETE_DIR/alpha/www/index.html"
	rete_bg alpha http.log python3 -m http.server --bind 127.0.0.1 "$wiki" --directory www
	rete_on alpha "$RETE_FLOR" enroll alpha.bundle.json --port-offset 3100 >/dev/null || { echo "rete.sh: alpha's enroll failed" >&2; return 1; }
	rete_bg alpha agent.log "$RETE_FLOR" agent run --rete demo.flor
	rete_wait 30 rete_healthy alpha || { echo "rete.sh: alpha did not come up:" >&2; cat "$RETE_DIR/alpha/agent.log" >&2; return 1; }
}

# rete_down: stops every process rete_up started.
rete_down() {
	local p
	for p in "${RETE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${RETE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	RETE_PIDS=()
}

# socks_port_of STATUS_JSON USER: the actual SOCKS5 port of that user in `flor agent status --json`.
socks_port_of() {
	python3 -c "import json,sys; print(next(l['actual'] for l in json.load(sys.stdin)['listeners'] if l.get('principal','').endswith('/user/' + sys.argv[1])))" "$2" <<<"$1"
}
