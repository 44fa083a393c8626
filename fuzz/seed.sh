#!/usr/bin/env bash
# Regenerates the seed half of fuzz/corpus/ from the example rete: real
# envelopes, their payloads, a bundle, a publish body, SOCKS5 messages,
# control lines and HTTP heads. Run by hand when a format changes; the output
# is committed (ci/fuzz.sh reads it, never writes it). Named regression inputs
# (fuzz/corpus/<target>/regress-*) are kept as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked -p retectl
RETECTL="$PWD/target/debug/retectl"
C="$PWD/fuzz/corpus"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME="$work/home"
mkdir -p "$HOME"
cp -r examples/my-rete "$work/rete"
(
  cd "$work/rete"
  "$RETECTL" ca init . >/dev/null
  "$RETECTL" ca sign . --kind management-plane --name primary >/dev/null
  "$RETECTL" compile . --all --out "$work/out" >/dev/null
  "$RETECTL" issue-bundle . --node alpha --out "$work/alpha.bundle.json" >/dev/null
)
for t in envelope_open artifact_parse bundle_parse publish_tree socks5_parse names control_request http_head validity callers_request; do
  mkdir -p "$C/$t"
  find "$C/$t" -type f -name 'seed-*' -delete
done
python3 - "$work" "$C" <<'PY'
import json, os, sys, hashlib
work, C = sys.argv[1], sys.argv[2]
def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    name = "seed-" + hashlib.sha256(data).hexdigest()[:16]
    open(os.path.join(C, target, name), "wb").write(data)
body = bytearray()
for root, _, files in sorted(os.walk(os.path.join(work, "out"))):
    for f in sorted(files):
        p = os.path.join(root, f)
        raw = open(p, "rb").read()
        rel = os.path.relpath(p, os.path.join(work, "out"))
        if not f.endswith(".json"):
            continue
        put("envelope_open", raw)
        signed = raw[: raw.index(b',"signature":"')]
        payload = json.loads(raw)["payload"]
        # The payload exactly as the device parses it: compact, key order kept.
        put("artifact_parse", json.dumps(payload, separators=(",", ":")))
        # florete-tree/1 as retectl publish sends it (flor_vertex::http::tree::push_file).
        body += b"file %d %s\n" % (len(raw), rel.encode()) + raw
put("publish_tree", b"florete-tree/1\n" + bytes(body) + b"end\n")
put("bundle_parse", open(os.path.join(work, "alpha.bundle.json"), "rb").read())
for h in ["wiki.svc.demo.flor.rete", "bob.user.demo.flor.rete", "spiffe://demo.flor/user/bob",
          "spiffe://demo.flor/node/alpha/service/wiki", "WIKI.demo.flor.rete."]:
    put("names", h)
put("socks5_parse", b"\x05\x01\x00")
put("socks5_parse", b"\x05\x01\x00\x03\x17wiki.svc.demo.flor.rete\x00\x50")
put("socks5_parse", b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90")
for line in ["status", "status json", "sync", "sync dry-run", "sync confirm timeout=120",
             "reload", "90s", "2m", "1h"]:
    put("control_request", line)
# callers_request: side-channel questions (docs/wire.md) and answers.
for line in ["127.0.0.1:40000 127.0.0.1:7080\n", "[::1]:40000 [::1]:8080\n",
             "[::ffff:127.0.0.1]:5 127.0.0.2:8080\r\n", "unknown\n",
             "spiffe://demo.flor/node/alpha spiffe://demo.flor/service/config 1764268800\n"]:
    put("callers_request", line)
put("http_head", b"GET /artifact/alpha/mgmt/agent.json HTTP/1.1\r\nHost: config\r\nConnection: close\r\n\r\n")
put("http_head", b"POST /publish HTTP/1.1\r\nHost: config-publish\r\nContent-Length: 42\r\nExpect: 100-continue\r\n\r\n")
put("http_head", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
# validity: the DER of the CA and of every certificate in the bundle.
import base64
def ders(pem):
    for block in pem.split("-----BEGIN CERTIFICATE-----")[1:]:
        yield base64.b64decode(block.split("-----END CERTIFICATE-----")[0])
bundle = json.load(open(os.path.join(work, "alpha.bundle.json")))
for der in ders(open(os.path.join(work, "rete", "certs", "ca.crt")).read()):
    put("validity", der)
for p in bundle["principals"]:
    for der in ders(p["cert_pem"]):
        put("validity", der)
PY
for t in "$C"/*/; do echo "$(basename "$t"): $(ls "$t" | wc -l) inputs"; done
