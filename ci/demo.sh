#!/usr/bin/env bash
# The main job: build everything, create the demo rete (examples/my-rete) in a
# temporary directory, and run it on this machine's loopback: mgmt01, whose
# agent runs the config-server and the metrics collector, alpha with a real HTTP server behind the `wiki` service, and
# a laptop holding users bob (may read the wiki) and carol (may not). Publish,
# sync, fetch the page through SOCKS5 as bob, show carol's refusal, shut down.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$PWD"
# shellcheck source=ci/setup.sh
source ci/setup.sh

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
WORK="$(mktemp -d /tmp/florete-demo.XXXXXX)"
PIDS=()
cleanup() {
  say "Shutting down"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${DEMO_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  echo "done."
}
trap cleanup EXIT

on() { # on <node> <command...>: run as that node (its own FLOR_HOME)
  local node="$1"; shift
  (cd "$WORK/$node" && FLOR_HOME="$WORK/$node/.flor" FLOR_RUNTIME_DIR="$WORK/$node/.run" "$@")
}
bg() { # bg <node> <log> <command...>
  local node="$1" log="$2"; shift 2
  (cd "$WORK/$node" && FLOR_HOME="$WORK/$node/.flor" FLOR_RUNTIME_DIR="$WORK/$node/.run" exec "$@" >"$log" 2>&1) &
  PIDS+=("$!")
}
healthy() { # healthy <node>: wait until the node's agent runs a healthy vertex
  for _ in $(seq 150); do
    if on "$1" flor agent status 2>/dev/null | grep -q "flor pid .* healthy"; then return 0; fi
    sleep 0.2
  done
  echo "agent on $1 did not become healthy; its log:" >&2
  cat "$WORK/$1/agent.log" >&2
  return 1
}
role_running() { # role_running <node> <role>: wait until the node's agent runs that management role
  for _ in $(seq 150); do
    if on "$1" flor agent status 2>/dev/null | grep -q "^role: *$2 pid [0-9]* running"; then return 0; fi
    sleep 0.2
  done
  echo "the agent on $1 does not run $2; its log:" >&2
  cat "$WORK/$1/agent.log" >&2
  return 1
}
socks_port() { # socks_port <user>: the laptop's actual SOCKS5 port for that user
  on laptop flor agent status --json | python3 -c "import json,sys; print(next(l['actual'] for l in json.load(sys.stdin)['listeners'] if l.get('principal','').endswith('/user/$1')))"
}

say "Building flor and retectl"
cargo build --locked -p flor -p retectl
export PATH="$SRC/target/debug:$PATH"
mkdir -p "$WORK"/{operator,mgmt01,alpha,laptop}
export HOME="$WORK/operator" # retectl keeps the CA keys under ~/.config/retectl/

say "Operator: a rete repo from examples/my-rete, its CA and management signer"
cp -r "$SRC/examples/my-rete" "$WORK/operator/my-rete"
cd "$WORK/operator/my-rete"
git init -q && git config user.email op@demo.flor && git config user.name operator
retectl ca init .
retectl ca sign . --kind management-plane --name primary
retectl validate .
retectl compile . --all --out ../out
git add -A && git commit -qm "demo.flor version 1"
for n in mgmt01 alpha laptop; do
  retectl issue-bundle . --node "$n" --out "$WORK/$n/$n.bundle.json"
done
cp -r ../out "$WORK/mgmt01/out"
cp -r ../out "$WORK/laptop/out"
cd "$SRC"

say "mgmt01: enroll from the compiled tree, start the agent (it runs the config-server and the metrics collector its artifact publishes)"
on mgmt01 flor enroll mgmt01.bundle.json --from out
bg mgmt01 agent.log flor agent run --rete demo.flor
healthy mgmt01
role_running mgmt01 config-server
role_running mgmt01 metrics-server
on mgmt01 flor agent status | grep '^role:'

say "laptop (the operator's machine and the users' device): enroll, start, publish version 1 as olga"
on laptop flor enroll laptop.bundle.json --from out
bg laptop agent.log flor agent run --rete demo.flor
healthy laptop
(cd "$WORK/operator/my-rete" && FLOR_HOME="$WORK/laptop/.flor" retectl publish ../out --as olga)

say "alpha: a real HTTP server on 127.0.0.2:8080, enrolled from the config-server over Florete"
mkdir -p "$WORK/alpha/www" && echo "hello from the demo.flor wiki on alpha" >"$WORK/alpha/www/index.html"
bg alpha http.log python3 -m http.server --bind 127.0.0.2 8080 --directory www
on alpha flor enroll alpha.bundle.json
bg alpha agent.log flor agent run --rete demo.flor
healthy alpha

say "laptop: the agent's view"
on laptop flor agent status

BOB=$(socks_port bob)
CAROL=$(socks_port carol)
say "bob (role wiki-reader) fetches http://wiki.demo.flor.rete/ through SOCKS5 127.0.0.1:$BOB"
curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$BOB" http://wiki.demo.flor.rete/ | tee "$WORK/bob.out"
grep -q "hello from the demo.flor wiki" "$WORK/bob.out"

say "carol (no role grants the wiki) tries the same through 127.0.0.1:$CAROL"
if curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$CAROL" http://wiki.demo.flor.rete/; then
  echo "carol was let in: that is a bug" >&2
  exit 1
fi
echo "refused, as the rete says. alpha's vertex logged:"
grep "refused spiffe://demo.flor/user/carol" "$WORK/alpha/.run/demo.flor/"*.log "$WORK/alpha/agent.log" 2>/dev/null | tail -1 || true

say "flor ping from the laptop: bob is allowed, carol denied"
on laptop flor ping wiki.demo.flor.rete --as bob
if on laptop flor ping wiki.demo.flor.rete --as carol; then
  echo "flor ping says carol is allowed: that is a bug" >&2
  exit 1
fi

say "flor doctor on alpha: clock, certificates, artifact, vertex, config service, routes"
on alpha flor doctor

say "The demo rete carried real traffic: bob in, carol refused."
