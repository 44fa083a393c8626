#!/usr/bin/env python3
"""Hold packets for a fixed time: a network's round trip on loopback.

This kernel has no netem (CONFIG_NET_SCH_NETEM is not set, nor prio or fq),
so `tc` cannot delay packets here. What it has is NFQUEUE: iptables hands
every matching packet to this process, which tells the kernel to let it go
(NF_ACCEPT) DELAY later. ci/bench.py (BENCH_RTT_MS) queues, in the OUTPUT
chain of the bench's own network namespace, the packets to and from the
ports of the hops that cross between the client's host and the servers'
host; a packet on loopback passes OUTPUT once, so each direction is held
once and a round trip twice.

Only metadata is copied to user space (NFQNL_COPY_META); order is kept (one
fixed delay, verdicts in arrival order). The netlink messages are built by
hand because the Python bindings (netfilterqueue, fnfqueue) need a C build
and a Debian -dev package for what is 60 lines of struct packing; the layout
is linux/netfilter/nfnetlink_queue.h.

    python3 ci/delay.py QUEUE_NUM DELAY_MS

Prints "ready" on stdout once bound; runs until killed.
"""

import heapq
import os
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
QUEUE_MAXLEN = 65536  # packets held at once; far above what the bench has in flight


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def message(msg, queue, attrs, flags=NLM_F_REQUEST):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, 0,
                       0) + body


def configure(sock, queue):
    for attrs in ([attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))],
                  [attr(NFQA_CFG_PARAMS, struct.pack("!IBxxx", 0, NFQNL_COPY_META)),
                   attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))]):
        sock.send(message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK))
        data = sock.recv(65536)
        kind = struct.unpack_from("=H", data, 4)[0]
        err = struct.unpack_from("=i", data, 16)[0] if kind == NLMSG_ERROR else 0
        if err:
            sys.exit(f"delay: binding NFQUEUE {queue} failed: {os.strerror(-err)}")


def packet_ids(data):
    """The packet ids in a buffer of netlink messages from the queue."""
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + 20  # nlmsghdr (16) + nfgenmsg (4)
            while a + 4 <= off + length:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", data, a + 4)[0]
                a += (alen + 3) & ~3
        off += (length + 3) & ~3


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: delay.py QUEUE_NUM DELAY_MS")
    queue, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    configure(sock, queue)
    print("ready", flush=True)
    held = []  # (release time, packet id), in arrival order
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, pid = heapq.heappop(held)
            sock.send(message(NFQNL_MSG_VERDICT, queue,
                              [attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))]))
        timeout = max(0.0, held[0][0] - now) if held else None
        if select.select([sock], [], [], timeout)[0]:
            data = sock.recv(1 << 16)
            arrived = time.monotonic()
            for pid in packet_ids(data):
                heapq.heappush(held, (arrived + delay, pid))


if __name__ == "__main__":
    main()
