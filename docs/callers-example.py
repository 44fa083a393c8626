# Who is calling? Ask the vertex's identity side-channel (docs/wire.md).
import socket

def florete_caller(conn, sock_path="/run/flor/demo.flor/callers/flor/wiki.sock"):
    """The caller's SPIFFE ID on an accepted connection, or None if flor did not make it."""
    peer, local = conn.getpeername()[:2], conn.getsockname()[:2]
    fmt = lambda a: f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(f"{fmt(peer)} {fmt(local)}\n".encode())
        answer = s.makefile().readline().split()
    return answer[0] if answer and answer[0].startswith("spiffe://") else None
