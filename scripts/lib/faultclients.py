#!/usr/bin/env python3
"""Misbehaving clients for scripts/faults.sh. Loopback only, bounded in count and time.

  faultclients.py slowloris PORT N SECS        N partial handshakes; waits up to SECS for the
                                               server to close them; prints closed count
  faultclients.py oversized PORT N             N clients announce a 1 GiB frame; prints how
                                               many got Close 1009
  faultclients.py stalled PORT N PATH SECS     N WebSocket clients that never read; prints
                                               how many the server closed within SECS
"""
import base64, os, resource, select, socket, struct, sys, time

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def upgrade(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
    return s, head.split(b"\r\n\r\n", 1)[1]

def wait_closed(socks, secs):
    """Counts sockets the server closes (EOF or reset) within secs."""
    open_ = {s.fileno(): s for s in socks}
    closed = 0
    deadline = time.time() + secs
    poller = select.poll()
    for fd in open_:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while open_ and time.time() < deadline:
        for fd, _ in poller.poll(200):
            s = open_.get(fd)
            if s is None:
                continue
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError, OSError):
                data = b""
            if not data:
                closed += 1
                poller.unregister(fd)
                del open_[fd]
                s.close()
    for s in open_.values():
        s.close()
    return closed

def slowloris(port, n, secs):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\n")  # never finished
        s.setblocking(False)
        socks.append(s)
    print(wait_closed(socks, secs))

def oversized(port, n):
    got_1009 = 0
    for _ in range(n):
        s, rest = upgrade(port, "/ws")
        # FIN+binary, masked, 64-bit length 1 GiB, then a little payload.
        s.sendall(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 1 << 30) + b"\x01\x02\x03\x04" + b"x" * 4096)
        s.settimeout(10)
        buf = rest
        try:
            while len(buf) < 4:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        if len(buf) >= 4 and buf[0] == 0x88 and struct.unpack(">H", buf[2:4])[0] == 1009:
            got_1009 += 1
        s.close()
    print(got_1009)

def stalled(port, n, path, secs):
    socks = []
    for _ in range(n):
        s, _ = upgrade(port, path)
        socks.append(s)
    # Never read while the server fills our buffers: sleep, then see who was closed.
    time.sleep(secs)
    for s in socks:
        s.setblocking(False)
    print(wait_closed(socks, 5))

if __name__ == "__main__":
    raise_nofile()
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "slowloris":
        slowloris(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "oversized":
        oversized(int(args[0]), int(args[1]))
    elif cmd == "stalled":
        stalled(int(args[0]), int(args[1]), args[2], float(args[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
