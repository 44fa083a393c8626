#!/usr/bin/env python3
"""Runs docs/playbook.md step by step on the e2e hosts, so the playbook and
the end-to-end test cannot drift: the test *is* the document's code blocks.

A fenced block whose info string is `sh on=<host>` runs on that host
(`ip netns exec flor<run id>-<host>`, named by ci/e2e.sh), in `$E2E/<host>`, with
`set -euo pipefail`.
A fenced `copy` block holds lines `<host>:<path> -> <host>:<dir>`: what a
person does with scp or a USB stick, the harness does with cp. Every other
block is illustration and is not run. Each step prints the heading it is under.
"""
import os
import re
import shutil
import subprocess
import sys
import time

FENCE = re.compile(r"^```(.*)$")


def blocks(path):
    heading = ""
    info = None
    body = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if info is None:
                if line.startswith("#"):
                    heading = line.lstrip("#").strip()
                m = FENCE.match(line)
                if m:
                    info, body, start = m.group(1).strip(), [], lineno
            elif line.startswith("```"):
                yield heading, info, "\n".join(body), start
                info = None
            else:
                body.append(line)


def run_sh(e2e, host, script, env):
    cwd = os.path.join(e2e, host)
    os.makedirs(cwd, exist_ok=True)
    full = "set -euo pipefail\n" + script + "\n"
    # ci/e2e.sh names its namespaces flor<run id>-<host>.
    ns = f"{os.environ.get('E2E_NETNS_PREFIX', 'flor')}-{host}"
    cmd = ["ip", "netns", "exec", ns, "bash", "-c", full]
    return subprocess.run(cmd, cwd=cwd, env=env, timeout=300)


def run_copy(e2e, body):
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        src, dst = [p.strip() for p in line.split("->")]
        sh, sp = src.split(":", 1)
        dh, dp = dst.split(":", 1)
        s = os.path.join(e2e, sh, sp)
        d = os.path.join(e2e, dh, dp)
        if os.path.isdir(s):
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            os.makedirs(d if dp.endswith("/") or dp == "" else os.path.dirname(d), exist_ok=True)
            shutil.copy2(s, d)
        print(f"   copied {sh}:{sp} -> {dh}:{dp or '.'}")


def main():
    doc, e2e, hosts = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    steps = 0
    for heading, info, body, lineno in blocks(doc):
        words = info.split()
        if not words:
            continue
        if words[0] == "copy":
            print(f"\n-- {heading} (playbook line {lineno}): copy between hosts")
            run_copy(e2e, body)
            steps += 1
            continue
        on = [w[3:] for w in words[1:] if w.startswith("on=")]
        if words[0] != "sh" or not on:
            continue
        host = on[0]
        if host not in hosts:
            sys.exit(f"playbook line {lineno}: unknown host {host}")
        print(f"\n-- {heading} (playbook line {lineno}) on {host}")
        for l in body.splitlines():
            print(f"   $ {l}")
        env = dict(os.environ)
        env["FLOR_HOME"] = os.path.join(e2e, host, ".flor")
        env["FLOR_RUNTIME_DIR"] = os.path.join(e2e, host, ".run")
        env["HOME"] = os.path.join(e2e, host)
        env["FLORETE_SRC"] = src
        started = time.time()
        r = run_sh(e2e, host, body, env)
        if r.returncode != 0:
            print(f"FAILED: playbook line {lineno} on {host} exited {r.returncode}", file=sys.stderr)
            sys.exit(1)
        print(f"   ok ({time.time() - started:.1f} s)")
        steps += 1
    print(f"\nplaybook: {steps} steps passed, 0 failed")


if __name__ == "__main__":
    main()
