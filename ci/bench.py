#!/usr/bin/env python3
"""Side-by-side data-plane bench (driven by ci/bench.sh, which builds first).

One invocation measures five paths to the same upstreams on loopback:

- direct TCP;
- a stunnel4 mTLS pair (TLS 1.3, P-256 certificates and key exchange);
- OpenSSH's dynamic forwarding (`ssh -D`): a SOCKS5 port on one end of a
  warm, encrypted SSH connection whose far end dials the upstream, the same
  shape as a flow through Florete, and what people use for it today;
- microsocks: a plain SOCKS5 relay on the client's host that dials the
  upstream directly, no encryption and no second hop, the least any SOCKS5
  ingress can cost a new flow;
- Florete on the example rete (examples/my-rete: mgmt01 with the
  config-server, alpha hosting the wiki, the laptop with bob's SOCKS5 port),
  every node a real `flor agent run` with its vertex.

Upstreams on alpha's address 127.0.0.2: iperf3 -s on the wiki's port 8080,
and the project's echo (agent/benches/dataplane.rs) on 9000, published as an
`echo` service bob may use (added to the copied rete only).

Rows: iperf3 bulk with 1 and 8 streams in both directions (through SOCKS5 with
proxychains4 for Florete, ssh -D and microsocks), bulk of the project's client through the echo,
new-flow latency (connect + 1-byte echo + close) median and p99, CPU cores of
the tunnel processes during bulk, and memory idle, after bulk and with 1,000
open flows. Each run also records the CPU used by everything else on the
machine (from /proc/stat); a run where that exceeds DISTURBED_CORES is marked
and left out of the spread.

BENCH_RTT_MS puts the client's host and the servers' host a network apart:
the hops between them get that round-trip time (delay_links), the hops that
stay on one host do not.

Writes the table to stdout and, with --section NAME, into docs/performance.md
between the markers of that section.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

DISTURBED_CORES = 0.5
TICK = os.sysconf("SC_CLK_TCK")
FLOWS = 1000
ALPHA_IP = "127.0.0.2"
IPERF_PORT = 8080  # the wiki's upstream in examples/my-rete
ECHO_PORT = 9000
# Direct TCP (and microsocks, a relay on the client's host that then dials
# directly) reach upstreams of their own: the same programs on the same
# address, other ports, so that BENCH_RTT_MS can delay that traffic without
# delaying a tunnel's last, server-local hop to its upstream.
DIRECT_IPERF_PORT = 8081
DIRECT_ECHO_PORT = 9001
QUIC_PORT = 7443  # the server nodes' UDP port in examples/my-rete
TD = "demo.flor"


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def machine_busy():
    """Ticks all CPUs spent running something since boot: user, nice,
    system, irq and softirq. Not idle or iowait, and not steal (the
    hypervisor's, which no process here is charged for); guest time is
    already inside user.

    Softirq stays in: with tick-based accounting (CONFIG_TICK_CPU_ACCOUNTING,
    no IRQ_TIME_ACCOUNTING, as here) a tick that lands in a softirq run in a
    process's context counts both as softirq here and in that process's
    stime, and loopback traffic is processed exactly so, in the sender's
    context. Leaving softirq out made our processes add up to more than the
    machine was busy ("other load" of -0.6 cores in round three). Softirq
    work deferred to ksoftirqd is charged to ksoftirqd: see softirq_threads."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = v
    return user + nice + system + irq + softirq


def softirq_threads():
    """The kernel's ksoftirqd threads: the network work they do during a
    run is mostly the traffic the bench makes, so their CPU is counted as
    ours. They serve the whole machine, though: softirq work of other
    traffic (another test's veths, say) that spills into them is counted as
    ours too, so "other load" under-reads a machine busy with network."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def private_kib(pid):
    """Private_Clean + Private_Dirty from smaps_rollup: what only this process pays."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def smaps_private(pid):
    """Private KiB per mapping (largest first), to see where memory went."""
    out, name = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                a, b = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else f"anon {(b - a) >> 10} KiB"
            elif head[0] in ("Private_Clean:", "Private_Dirty:"):
                out[name] = out.get(name, 0) + int(head[1])
    return sorted(((v, k) for k, v in out.items() if v), reverse=True)[:6]


def descendants(pid):
    """Every process below `pid` (sshd forks a session per connection)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def delay_links(rtt_ms, ports, work, procs):
    """BENCH_RTT_MS: put the client's host and the servers' host a network
    apart. Loopback packets to or from `ports` (the hops that cross between
    hosts: direct TCP to its upstream, stunnel4 client to server, ssh to sshd,
    Florete's QUIC) are held rtt/2 each by ci/delay.py (NFQUEUE: this kernel
    has no netem); the hops that stay on one host (an application to its
    local SOCKS5 or stunnel port, a tunnel's exit to its upstream) are not.
    Only in a network namespace of the bench's own (ci/bench.sh makes it): on
    the host's loopback it would delay everything else too. Returns the
    delay program's process, whose CPU is the bench's own."""
    if os.environ.get("BENCH_NETNS") != os.readlink("/proc/self/ns/net"):
        sys.exit("bench: BENCH_RTT_MS needs the bench's own network namespace "
                 "(run it through ci/bench.sh, as root)")
    delay = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "delay.py"),
                              "0", str(rtt_ms / 2)], stdout=subprocess.PIPE,
                             stderr=open(os.path.join(work, "delay.log"), "wb"),
                             start_new_session=True)
    procs.procs.append(delay)
    if delay.stdout.readline().strip() != b"ready":
        sys.exit(f"bench: ci/delay.py did not start; see {work}/delay.log")
    for port in ports:
        for proto in ("tcp", "udp"):
            for side in ("--dport", "--sport"):
                subprocess.run(["iptables", "-A", "OUTPUT", "-p", proto, side, str(port), "-j",
                                "NFQUEUE", "--queue-num", "0"], check=True)
    log(f"links between hosts: RTT {rtt_ms} ms on ports {sorted(ports)}")
    return delay


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


class Procs:
    """Background processes, each in its own process group, killed at exit."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path, **kw):
        out = open(log_path, "wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def wait_tcp(host, port, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench: {what} does not accept on {host}:{port}")


class Rete:
    """The example rete, built with retectl and run by real agents."""

    def __init__(self, args, work, procs):
        self.args, self.work, self.procs = args, work, procs
        self.env = dict(os.environ, HOME=os.path.join(work, "operator"))
        op = os.path.join(work, "operator", "my-rete")
        shutil.copytree(os.path.join(args.src, "examples", "my-rete"), op)
        with open(os.path.join(op, "services.yaml"), "a") as f:
            f.write(f"""
  # Added by ci/bench.py: the bench's echo upstream next to the wiki.
  - name: echo
    node: alpha
    upstream: {ALPHA_IP}:{ECHO_PORT}
    groups: [web]
""")
        for n in ("mgmt01", "alpha", "laptop"):
            os.makedirs(os.path.join(work, n), exist_ok=True)
        rt = args.retectl
        self.run([rt, "ca", "init", "."], cwd=op)
        self.run([rt, "ca", "sign", ".", "--kind", "management-plane", "--name", "primary"], cwd=op)
        self.run([rt, "compile", ".", "--all", "--out", "../out"], cwd=op)
        subprocess.run(["git", "init", "-q"], cwd=op, check=True)
        subprocess.run(["git", "-c", "user.email=b@bench", "-c", "user.name=bench", "add", "-A"],
                       cwd=op, check=True)
        subprocess.run(["git", "-c", "user.email=b@bench", "-c", "user.name=bench", "commit",
                        "-qm", "bench"], cwd=op, check=True)
        out = os.path.join(work, "operator", "out")
        for n in ("mgmt01", "alpha", "laptop"):
            self.run([rt, "issue-bundle", ".", "--node", n, "--out",
                      os.path.join(work, n, f"{n}.bundle.json")], cwd=op)
            self.on(n, [args.flor, "enroll", f"{n}.bundle.json", "--from", out])
        self.agents = {}
        self.agents["mgmt01"] = self.bg("mgmt01", [args.flor, "agent", "run", "--rete", TD])
        # mgmt01's agent runs the config-server and the metrics collector its
        # artifact publishes (docs/config-server.md); nodes enrolled from the tree.
        for n in ("alpha", "laptop"):
            self.agents[n] = self.bg(n, [args.node_flor or args.flor, "agent", "run", "--rete", TD])
        for n in ("mgmt01", "alpha", "laptop"):
            self.healthy(n)

    def node_env(self, n):
        d = os.path.join(self.work, n)
        return dict(os.environ, FLOR_HOME=os.path.join(d, ".flor"),
                    FLOR_RUNTIME_DIR=os.path.join(d, ".run"))

    def run(self, argv, cwd):
        r = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench: {' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def on(self, n, argv):
        r = subprocess.run(argv, cwd=os.path.join(self.work, n), env=self.node_env(n),
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench: on {n}: {' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def bg(self, n, argv):
        return self.procs.start(argv, os.path.join(self.work, n, "agent.log"),
                                cwd=os.path.join(self.work, n), env=self.node_env(n))

    def status(self, n):
        return json.loads(self.on(n, [self.args.flor, "agent", "status", "--json"]))

    def healthy(self, n):
        for _ in range(150):
            try:
                st = self.status(n)
                if st["vertex"]["health"] == "healthy" and st["vertex"]["pid"]:
                    return st
            except (SystemExit, ValueError, KeyError):
                pass
            time.sleep(0.2)
        sys.exit(f"bench: agent on {n} did not become healthy; see {self.work}/{n}/agent.log")

    def pids(self, n):
        """(agent pid, vertex pid) of a node."""
        return self.agents[n].pid, self.status(n)["vertex"]["pid"]

    def socks_port(self, user):
        for l in self.status("laptop")["listeners"]:
            if l.get("principal", "").endswith(f"/user/{user}"):
                return l["actual"]
        sys.exit(f"bench: no SOCKS5 listener for {user}")


class Stunnel:
    """A stunnel4 client/server pair with mutual TLS 1.3 and P-256, per upstream."""

    def __init__(self, work, procs):
        d = os.path.join(work, "stunnel")
        os.makedirs(d)
        ssl = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
        ssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
        ssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=bench-ca", "-days", "2",
            "-out", "ca.crt")
        for who in ("server", "client"):
            ssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{who}.key")
            ssl("req", "-new", "-key", f"{who}.key", "-subj", f"/CN={who}", "-out", f"{who}.csr")
            ssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{who}.crt")
        self.ports, self.server_ports = {}, []
        conf = {"server": [], "client": []}
        for name, upstream in (("iperf", f"{ALPHA_IP}:{IPERF_PORT}"),
                               ("echo", f"{ALPHA_IP}:{ECHO_PORT}")):
            s, c = free_port(), free_port()
            self.ports[name] = c
            self.server_ports.append(s)
            conf["server"].append(f"[{name}]\naccept = 127.0.0.1:{s}\nconnect = {upstream}\n")
            conf["client"].append(f"[{name}]\nclient = yes\naccept = 127.0.0.1:{c}\n"
                                  f"connect = 127.0.0.1:{s}\n")
        self.procs = {}
        for who in ("server", "client"):
            path = os.path.join(d, f"{who}.conf")
            with open(path, "w") as f:
                f.write(f"""foreground = yes
pid =
debug = 3
cert = {d}/{who}.crt
key = {d}/{who}.key
CAfile = {d}/ca.crt
verifyChain = yes
sslVersionMin = TLSv1.3
curves = prime256v1
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
""" + "\n".join(conf[who]))
            self.procs[who] = procs.start(["stunnel4", path], os.path.join(d, f"{who}.log"))
        wait_tcp("127.0.0.1", self.ports["echo"], "stunnel client")


class SshDynamic:
    """`ssh -D`: an OpenSSH client with a SOCKS5 port, connected (once, warm)
    to an sshd of its own on 127.0.0.3 whose session dials the upstreams.
    Default ciphers, as people run it; the keys are made here."""

    def __init__(self, work, procs):
        d = os.path.join(work, "ssh")
        os.makedirs(d)
        for k in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(d, k)], check=True)
        shutil.copy(os.path.join(d, "user.pub"), os.path.join(d, "authorized_keys"))
        self.sshd_port = port = free_port()
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(f"ListenAddress 127.0.0.3:{port}\nHostKey {d}/host\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                    "StrictModes no\nUsePAM no\nAllowTcpForwarding yes\nPidFile none\n")
        # sshd's privilege-separation directory (made by its service, not its package).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.sshd = procs.start(["/usr/sbin/sshd", "-D", "-e", "-f",
                                 os.path.join(d, "sshd_config")], os.path.join(d, "sshd.log"))
        wait_tcp("127.0.0.3", port, "sshd")
        self.port = free_port()
        self.client = procs.start(
            ["ssh", "-N", "-F", "none", "-i", os.path.join(d, "user"), "-p", str(port),
             "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={d}/known_hosts",
             "-o", "ExitOnForwardFailure=yes", "-D", f"127.0.0.1:{self.port}",
             f"{os.environ.get('USER') or 'root'}@127.0.0.3"], os.path.join(d, "ssh.log"))
        wait_tcp("127.0.0.1", self.port, "ssh -D")

    def pids(self):
        """The client, the listener and the sshd processes serving the connection."""
        return [self.client.pid, self.sshd.pid] + descendants(self.sshd.pid)


class Microsocks:
    """microsocks: a plain SOCKS5 server (a thread per connection)."""

    def __init__(self, work, procs):
        self.port = free_port()
        self.proc = procs.start(["microsocks", "-i", "127.0.0.1", "-p", str(self.port)],
                                os.path.join(work, "microsocks.log"))
        wait_tcp("127.0.0.1", self.port, "microsocks")


def proxychains_conf(work, name, port):
    path = os.path.join(work, f"proxychains-{name}.conf")
    with open(path, "w") as f:
        f.write(f"strict_chain\nproxy_dns\nremote_dns_subnet 224\ntcp_read_time_out 15000\n"
                f"tcp_connect_time_out 8000\n[ProxyList]\nsocks5 127.0.0.1 {port}\n")
    return path


def children_cpu():
    """CPU seconds of every waited-for child (the iperf3 and Rust clients)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def iperf(path_argv, host, port, seconds, streams, reverse):
    argv = path_argv + ["iperf3", "-J", "-c", host, "-p", str(port), "-t", str(seconds),
                        "-P", str(streams)] + (["-R"] if reverse else [])
    for _ in range(20):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        try:
            j = json.loads(r.stdout)
        except ValueError:
            sys.exit(f"bench: {' '.join(argv)}: {r.stdout[-2000:]}{r.stderr[-2000:]}")
        err = j.get("error", "")
        # iperf3 -s reopens its listener between tests and serves one at a time.
        if "unable to connect" in err or "busy" in err:
            time.sleep(0.5)
            continue
        if err:
            sys.exit(f"bench: {' '.join(argv)}: {err}")
        return j["end"]["sum_received"]["bits_per_second"] / 1e9
    sys.exit(f"bench: {' '.join(argv)}: iperf3 -s does not take a test")


class Measured:
    """Values per (row, path), each with a 'disturbed' flag."""

    def __init__(self):
        self.v = {}

    def add(self, row, path, value, disturbed=False):
        self.v.setdefault(row, {}).setdefault(path, []).append((value, disturbed))


def fmt_spread(vals, digits):
    good = [v for v, d in vals if not d]
    bad = len(vals) - len(good)
    if not good:
        # Every run was disturbed: show them, marked.
        good, bad = [v for v, _ in vals], 0
        mark = " †"
    else:
        mark = ""
    lo, hi = min(good), max(good)
    s = f"{lo:.{digits}f}" if lo == hi else f"{lo:.{digits}f}–{hi:.{digits}f}"
    if bad:
        s += f" (+{bad} disturbed)"
    return s + mark


def median_of(vals):
    good = [v for v, d in vals if not d] or [v for v, _ in vals]
    return statistics.median(good) if good else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--flor", required=True)
    ap.add_argument("--node-flor", default="",
                    help="the flor alpha's and laptop's agents (and so their vertices) run, "
                         "e.g. the openwrt-x86_64 board build as the router's proxy; "
                         "mgmt01 keeps --flor (it needs the mgmt roles)")
    ap.add_argument("--retectl", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--section", help="name of the docs/performance.md section to rewrite")
    ap.add_argument("--note", default="", help="one line under the table (what was measured)")
    ap.add_argument("--only", default="", help="comma list of row groups: bulk,rust,latency,memory")
    ap.add_argument("--paths", default="direct,stunnel4,ssh,microsocks,flor",
                    help="comma list of paths to measure (e.g. flor alone under perf)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    if os.environ.get("BENCH_RTT_MS") and only != {"latency"}:
        sys.exit("bench: BENCH_RTT_MS measures new flows only (--only latency): bulk through "
                 "the user-space delay of ci/delay.py would measure that program")
    want = lambda g: not only or g in only

    work = tempfile.mkdtemp(prefix="florete-bench.")
    procs = Procs()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    try:
        log("rete in", work)
        # The upstreams: the tunnels' (the ports examples/my-rete names) and
        # direct's own (DIRECT_*_PORT).
        ups = {}
        for iperf_port, echo_port in ((IPERF_PORT, ECHO_PORT),
                                      (DIRECT_IPERF_PORT, DIRECT_ECHO_PORT)):
            ups[iperf_port] = procs.start(["iperf3", "-s", "-B", ALPHA_IP, "-p", str(iperf_port)],
                                          os.path.join(work, f"iperf3-{iperf_port}.log")).pid
            ups[echo_port] = procs.start([args.client, "echo", f"{ALPHA_IP}:{echo_port}"],
                                         os.path.join(work, f"echo-{echo_port}.log")).pid
        rete = Rete(args, work, procs)
        stunnel = Stunnel(work, procs)
        ssh = SshDynamic(work, procs)
        micro = Microsocks(work, procs)
        for port in ups:
            wait_tcp(ALPHA_IP, port, "upstream")
        rtt = float(os.environ.get("BENCH_RTT_MS") or 0)
        # Processes whose CPU is ours but not a tunnel's: this script, the
        # kernel's softirq threads, the delay program.
        own = [os.getpid()] + softirq_threads()
        if rtt:
            own.append(delay_links(rtt, [DIRECT_IPERF_PORT, DIRECT_ECHO_PORT, QUIC_PORT,
                                          ssh.sshd_port] + stunnel.server_ports, work, procs).pid)
        bob = rete.socks_port("bob")
        pc = proxychains_conf(work, "flor", bob)

        def path(iperf, echo, upstreams, pids):
            """iperf: (argv prefix, host, port) of the iperf3 client; echo: the
            bench client's target; upstreams: the (iperf3, echo) ports served."""
            return dict(iperf=iperf, echo=echo, pids=pids,
                        upstreams=dict(iperf=ups[upstreams[0]], echo=ups[upstreams[1]]))

        def socks(port, upstreams, pids):
            return path((["proxychains4", "-q", "-f", proxychains_conf(work, str(port), port)],
                         ALPHA_IP, upstreams[0]), f"socks:{port}:{ALPHA_IP}:{upstreams[1]}",
                        upstreams, pids)

        tunnels = (IPERF_PORT, ECHO_PORT)
        direct = (DIRECT_IPERF_PORT, DIRECT_ECHO_PORT)
        nodes = {n: rete.pids(n) for n in ("alpha", "laptop")}
        paths = {
            "direct": path(([], ALPHA_IP, DIRECT_IPERF_PORT), f"tcp:{ALPHA_IP}:{DIRECT_ECHO_PORT}",
                           direct, []),
            "stunnel4": path(([], "127.0.0.1", stunnel.ports["iperf"]),
                             f"tcp:127.0.0.1:{stunnel.ports['echo']}", tunnels,
                             [p.pid for p in stunnel.procs.values()]),
            "ssh": socks(ssh.port, tunnels, ssh.pids()),
            # On the client's host: a local SOCKS5 port, then direct TCP.
            "microsocks": socks(micro.port, direct, [micro.proc.pid]),
            "flor": path((["proxychains4", "-q", "-f", pc], f"wiki.{TD}.rete", IPERF_PORT),
                         f"socks:{bob}:echo.{TD}.rete:{ECHO_PORT}", tunnels,
                         [p for n in nodes.values() for p in n]),
        }
        paths = {k: v for k, v in paths.items() if k in args.paths.split(",")}
        client = lambda *a: json.loads(subprocess.run(
            [args.client, *a], capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        # Warm every path (Florete's QUIC connection, page cache, ARP-free loopback).
        for p in paths.values():
            client("latency", p["echo"], "5")
        m = Measured()

        def memory(row, flor=True, stun=True):
            for n, (agent, vertex) in nodes.items() if flor else []:
                if os.environ.get("BENCH_SMAPS"):
                    log(f"{row}: {n} vertex private KiB by mapping:", smaps_private(vertex))
                a_rss, v_rss, v_priv = (status_kib(agent, "VmRSS"), status_kib(vertex, "VmRSS"),
                                        private_kib(vertex))
                m.add(f"{row}: {n} agent RSS + vertex private, KiB", "flor", a_rss + v_priv)
                m.add(f"{row}: {n} agent RSS / vertex RSS / vertex private, KiB", "flor",
                      (a_rss, v_rss, v_priv))
            for who, p in stunnel.procs.items() if stun else []:
                m.add(f"{row}: stunnel {who} RSS / private, KiB", "stunnel4",
                      (status_kib(p.pid, "VmRSS"), private_kib(p.pid)))

        time.sleep(1)
        if want("memory"):
            memory("memory idle")
        bulk_rows = [(1, False), (1, True), (8, False), (8, True)]

        def timed(p, extra, fn):
            """Runs fn(); returns (its result, tunnel cores, disturbed, other cores)."""
            watched = p["pids"] + extra + own
            c0 = {x: cpu_ticks(x) for x in watched}
            t0, b0, k0 = time.time(), machine_busy(), children_cpu()
            r = fn()
            wall = time.time() - t0
            d = {x: (cpu_ticks(x) - c0[x]) / TICK / wall for x in watched}
            tunnel = sum(d[x] for x in p["pids"])
            ours = sum(d.values()) + (children_cpu() - k0) / wall
            other = (machine_busy() - b0) / TICK / wall - ours
            return r, tunnel, other > DISTURBED_CORES, other

        for rep in range(args.reps):
            log(f"run {rep + 1}/{args.reps}, load {loadavg()}")
            for streams, reverse in bulk_rows if want("bulk") else []:
                label = f"{streams} stream{'s' if streams > 1 else ''} " \
                        f"{'down (-R)' if reverse else 'up'}"
                for name, p in paths.items():
                    pre, host, port = p["iperf"]
                    gbit, tunnel, disturbed, other = timed(p, [p["upstreams"]["iperf"]], lambda: iperf(
                        pre, host, port, args.seconds, streams, reverse))
                    m.add(f"bulk iperf3, {label}, Gbit/s", name, gbit, disturbed)
                    if p["pids"]:
                        m.add(f"CPU of the tunnel processes, iperf3 {label}, cores", name,
                              tunnel, disturbed)
                        m.add("tunnel CPU per GB moved (all iperf3 runs), core-seconds", name,
                              tunnel / gbit * 8, disturbed)
                    m.add("other load during iperf3 runs (not ours), cores", name, other)
            if want("rust"):
                # microsocks relays a connection with a blocking write between
                # polls, so with both directions full (the echo's) it stops:
                # its write to the echo waits on the echo's write back to it.
                for name, p in [(n, p) for n, p in paths.items() if n != "microsocks"]:
                    r, tunnel, disturbed, other = timed(
                        p, [p["upstreams"]["echo"]], lambda: client("bulk", p["echo"], str(1 << 30)))
                    m.add("bulk, project's Rust client via the echo, 1 GiB each way at once, "
                          "Gbit/s each way", name, r["gbit_s"], disturbed)
                    if p["pids"]:
                        m.add("CPU of the tunnel processes, Rust-client bulk, cores", name,
                              tunnel, disturbed)
            if want("latency"):
                for name, p in paths.items():
                    r, _, disturbed, _ = timed(p, [p["upstreams"]["echo"]], lambda: client(
                        "latency", p["echo"], str(args.samples)))
                    m.add(f"new flow (connect + 1-byte echo + close), median of {args.samples}, us",
                          name, r["median_us"], disturbed)
                    m.add(f"new flow, p99 of {args.samples}, us", name, r["p99_us"], disturbed)
        if want("bulk") or want("rust"):
            time.sleep(1)
            if want("memory"):
                memory("memory after bulk")
        if want("memory"):
            for name in [n for n in ("stunnel4", "flor") if n in paths]:
                flag = os.path.join(work, f"held-{name}")
                h = subprocess.Popen([args.client, "hold", paths[name]["echo"], str(FLOWS), flag],
                                     stdout=subprocess.PIPE, text=True)
                deadline = time.time() + 120
                while not os.path.exists(flag):
                    if h.poll() is not None or time.time() > deadline:
                        sys.exit(f"bench: holding {FLOWS} flows through {name} failed")
                    time.sleep(0.1)
                time.sleep(0.5)
                memory(f"memory with {FLOWS} open flows", flor=name == "flor",
                       stun=name == "stunnel4")
                os.remove(flag)
                if h.wait(timeout=60) != 0:
                    sys.exit(f"bench: a held flow through {name} broke")
        load_end = loadavg()
        pause = os.environ.get("BENCH_PAUSE")
        if pause:
            # For a look at the live processes (perf, heaptrack, gdb): the
            # rete stays up until the file BENCH_PAUSE names is removed.
            open(pause, "w").close()
            log("paused until", pause, "is removed; vertices:", nodes)
            if os.environ.get("BENCH_NETNS"):
                log(f"its network: nsenter --net=/proc/{os.getpid()}/ns/net <command>; "
                    f"bob's SOCKS5 port there is 127.0.0.1:{bob}, the echo service "
                    f"echo.{TD}.rete:{ECHO_PORT}")
            while os.path.exists(pause):
                time.sleep(0.5)
    finally:
        procs.stop()
        if os.environ.get("BENCH_KEEP"):
            log("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, m, started, load_start, load_end)


def peers():
    """The peers' versions, as their packages give them."""
    def version(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                           text=True)
        return r.stdout.strip() or "?"
    return (f"stunnel4 {version('stunnel4')}, OpenSSH {version('openssh-client')} "
            f"(default ciphers), microsocks {version('microsocks')}")


def report(args, m, started, load_start, load_end):
    paths = ["direct", "stunnel4", "ssh", "microsocks", "flor"]
    bases = ["stunnel4", "ssh", "microsocks", "direct"]
    lines = ["| | direct TCP | stunnel4 mTLS | ssh -D | microsocks | flor | flor / stunnel4 "
             "| flor / ssh -D | flor / microsocks | flor / direct |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row, per in m.v.items():
        cells = []
        for p in paths:
            vals = per.get(p, [])
            if vals and isinstance(vals[0][0], tuple):
                cells.append(", ".join(" / ".join(str(x) for x in v) for v, _ in vals))
            elif vals:
                digits = 2 if "Gbit" in row or "cores" in row or "core-s" in row else \
                    0 if "KiB" in row else 1
                cells.append(fmt_spread(vals, digits))
            else:
                cells.append("")
        ratios = []
        for base in bases:
            b, f = per.get(base), per.get("flor")
            r = ""
            if b and f and not isinstance(b[0][0], tuple) and "other load" not in row:
                mb, mf = median_of(b), median_of(f)
                if mb:
                    r = f"{mf / mb:.2f}×"
            ratios.append(r)
        lines.append(f"| {row} | " + " | ".join(cells + ratios) + " |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.src,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=args.src, capture_output=True, text=True).stdout.strip()
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    # From ip(8), not /sys: the bench may run in a network namespace of its
    # own (ci/bench.sh), which the host's /sys does not show.
    link = subprocess.run(["ip", "-o", "link", "show", "lo"], capture_output=True, text=True)
    lo_mtu = (re.search(r"\bmtu (\d+)", link.stdout) or [None, "?"])[1]
    def shown(path):
        return os.path.relpath(path, args.src) if path.startswith(args.src) else os.path.basename(path)

    rtt = float(os.environ.get("BENCH_RTT_MS") or 0)
    head = (f"{started:%Y-%m-%d %H:%M} UTC, bench at commit {commit}"
            f"{' (with uncommitted changes)' if dirty else ''}, flor measured: "
            f"{shown(args.flor)}"
            f" ({os.path.getsize(args.flor)} bytes), "
            + (f"alpha and laptop running {shown(args.node_flor)} "
               f"({os.path.getsize(args.node_flor)} bytes), " if args.node_flor else "")
            + f"{peers()}; "
            + f"{os.cpu_count()} × {cpu}, Linux {platform.release()}, loopback MTU {lo_mtu}; "
            + (f"**between the client's host and the servers' host a round-trip time of "
               f"{rtt} ms** (BENCH_RTT_MS: ci/delay.py holds the packets of the hops that "
               f"cross hosts, none of the hops within one); " if rtt else "")
            + f"load average (1 min) "
            f"{load_start} at the start, {load_end} at the end; {args.reps} runs, iperf3 "
            f"-t {args.seconds}; a run is *disturbed* when other processes used more than "
            f"{DISTURBED_CORES} cores during it (from /proc/stat); † marks a cell where every run was "
            f"disturbed. Ratios are of medians.")
    body = "\n".join([head, ""] + lines + ([""] + [args.note] if args.note else []))
    print(body)
    if args.section:
        doc = os.path.join(args.src, "docs", "performance.md")
        with open(doc) as f:
            text = f.read()
        begin, end = f"<!-- bench:{args.section}:begin -->", f"<!-- bench:{args.section}:end -->"
        block = f"{begin}\n{body}\n{end}"
        if begin in text:
            text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text,
                          flags=re.S)
        else:
            text = text.rstrip("\n") + f"\n\n{block}\n"
        with open(doc, "w") as f:
            f.write(text)
        log("wrote section", args.section, "of", doc)


if __name__ == "__main__":
    main()
