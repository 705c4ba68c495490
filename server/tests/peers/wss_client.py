"""An independent wss client (Python's ssl = OpenSSL, and the `websockets` package) for
server/tests/tls.rs. Prints one line per check; the Rust test asserts on the lines and on
the server's /metrics. Every wait is bounded.

usage: wss_client.py PORT CA OTHER_CA MODE     (MODE: main | stall)
"""
import asyncio
import base64
import os
import socket
import ssl
import sys
import time

import websockets

PORT, CA, OTHER_CA, MODE = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
T = 10


def ctx(cafile=CA, version=None):
    c = ssl.create_default_context(cafile=cafile)
    if version is not None:
        c.minimum_version = version
        c.maximum_version = version
    return c


def say(*a):
    print(*a, flush=True)


async def echo(version, label):
    async with websockets.connect(f"wss://localhost:{PORT}/ws", ssl=ctx(version=version)) as ws:
        for m in ["hello", "é" * 1000, bytes(range(256)) * 15]:
            await ws.send(m)
            got = await asyncio.wait_for(ws.recv(), T)
            assert got == m, (label, len(got), len(m))
        cipher = ws.transport.get_extra_info("ssl_object").version()
    say(f"echo {label} {cipher}")


async def broadcast():
    url = f"wss://localhost:{PORT}/broadcast?room=tls"
    async with websockets.connect(url, ssl=ctx()) as a, websockets.connect(url, ssl=ctx()) as b:
        await asyncio.sleep(0.3)  # both joined before the message (not asserted on)
        await a.send("to the room")
        got = [await asyncio.wait_for(w.recv(), T) for w in (a, b)]
        say("broadcast", *got)


async def push():
    async with websockets.connect(f"wss://127.0.0.1:{PORT}/ws?user=dave", ssl=ctx()) as ws:
        say("ready")
        say("push", await asyncio.wait_for(ws.recv(), T))


async def close_codes():
    async with websockets.connect(f"wss://localhost:{PORT}/ws", ssl=ctx(), max_size=None) as ws:
        await ws.send("x" * 5000)  # over the server's --max-message-size 4096
        try:
            await asyncio.wait_for(ws.recv(), T)
        except websockets.ConnectionClosed as e:
            say("too big", e.rcvd.code if e.rcvd else None)
    ws = await websockets.connect(f"wss://localhost:{PORT}/ws", ssl=ctx())
    await ws.close(1000, "bye")
    say("normal", ws.close_code)


def refused(context, host):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=T)
    try:
        context.wrap_socket(s, server_hostname=host).close()
        return "accepted"
    except ssl.SSLCertVerificationError as e:
        return e.verify_message.replace(" ", "_")
    finally:
        s.close()


def upgrade_request(host):
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_text(payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def split_records():
    """TLS by hand over a raw socket (ssl.MemoryBIO), every byte sent on its own, so
    each record and handshake message reaches the server across many reads."""
    c = ctx()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = c.wrap_bio(inc, out, server_hostname="localhost")
    s = socket.create_connection(("127.0.0.1", PORT), timeout=T)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def dribble():
        data = out.read()
        for i in range(len(data)):
            s.sendall(data[i : i + 1])
            time.sleep(0.001)

    def pull():
        d = s.recv(65536)
        if not d:
            raise EOFError
        inc.write(d)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            dribble()
            pull()
    dribble()
    tls.write(upgrade_request("localhost"))
    tls.write(masked_text(b"split across reads"))
    dribble()
    got = b""
    deadline = time.time() + T
    while b"split across reads" not in got and time.time() < deadline:
        try:
            got += tls.read(65536)
        except ssl.SSLWantReadError:
            pull()
    s.close()
    say("split", "ok" if b"101 Switching" in got and got.endswith(b"split across reads") else repr(got))


def resumption(version, label):
    c = ctx(version=version)
    session = None
    reused = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", PORT), timeout=T)
        t = c.wrap_socket(s, server_hostname="localhost", session=session)
        t.sendall(upgrade_request("localhost"))
        head = t.recv(4096)  # the 101; a TLS 1.3 ticket has arrived by now
        assert head.startswith(b"HTTP/1.1 101"), head
        reused.append(t.session_reused)
        session = t.session
        t.close()
    say(f"resume {label}", *reused)


def stall():
    """Sends the start of a ClientHello and nothing more: the server must time it out."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx().wrap_bio(inc, out, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    s = socket.create_connection(("127.0.0.1", PORT), timeout=30)
    s.sendall(hello[: len(hello) // 2])
    try:
        while s.recv(4096):
            pass
        say("stall closed")
    except ConnectionResetError:
        say("stall closed")
    except socket.timeout:
        say("stall still open")


async def main():
    await echo(ssl.TLSVersion.TLSv1_3, "1.3")
    await echo(ssl.TLSVersion.TLSv1_2, "1.2")
    await broadcast()
    await close_codes()
    split_records()
    resumption(ssl.TLSVersion.TLSv1_3, "1.3")
    resumption(ssl.TLSVersion.TLSv1_2, "1.2")
    say("untrusted", refused(ctx(cafile=OTHER_CA), "localhost"))
    say("misnamed", refused(ctx(), "wrong.example"))
    await push()


if MODE == "stall":
    stall()
else:
    asyncio.run(main())
