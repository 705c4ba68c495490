#!/usr/bin/env python3
"""An independent wss:// echo server for ws-loadgen's tests: Python `websockets` over the
standard library's ssl (OpenSSL), not our code.

Prints `port N` on stdout once it listens, then echoes every message until --seconds pass.
At the end it prints `handshakes N resumed N` (what OpenSSL counted) and exits.
"""
import argparse
import asyncio
import ssl
import sys

import websockets

p = argparse.ArgumentParser()
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--client-ca", help="require a client certificate signed by this CA")
p.add_argument("--close-after", type=float, help="close each connection after this many seconds")
p.add_argument("--seconds", type=float, default=60)
a = p.parse_args()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(a.cert, a.key)
if a.client_ca:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(a.client_ca)
stats = {"handshakes": 0, "resumed": 0}


async def echo(ws):
    obj = ws.transport.get_extra_info("ssl_object")
    stats["handshakes"] += 1
    if obj is not None and obj.session_reused:
        stats["resumed"] += 1
    try:
        if a.close_after:
            async def pump():
                async for m in ws:
                    await ws.send(m)
            try:
                await asyncio.wait_for(pump(), a.close_after)
            except asyncio.TimeoutError:
                await ws.close(1001, "test server going away")
        else:
            async for m in ws:
                await ws.send(m)
    except websockets.ConnectionClosed:
        pass


async def main():
    async with websockets.serve(echo, "127.0.0.1", 0, ssl=ctx, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"port {port}", flush=True)
        await asyncio.sleep(a.seconds)
    print(f"handshakes {stats['handshakes']} resumed {stats['resumed']}", flush=True)


try:
    asyncio.run(main())
except KeyboardInterrupt:
    pass
sys.exit(0)
