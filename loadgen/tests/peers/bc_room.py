#!/usr/bin/env python3
"""An independent broadcast server for ws-loadgen's tests (Python `websockets`, not our
code): GET /broadcast?room=R joins room R; every message a client sends goes to every
member of its room, the sender included.

Like many servers, it puts a connection in the room while it answers the upgrade, before
the client has read that answer (here: in process_request, then --join-delay seconds before
the 101 goes out, which makes the window wide enough to hit every time). Messages for a
member whose handshake is still in progress are queued and sent right after it.

Prints `port N` once it listens; on SIGINT prints `sent N` (deliveries it wrote) and exits.
"""
import argparse
import asyncio
import signal
import urllib.parse

import websockets

p = argparse.ArgumentParser()
p.add_argument("--join-delay", type=float, default=0.05)
p.add_argument("--seconds", type=float, default=120)
a = p.parse_args()

rooms = {}      # room -> list of members (joined in the upgrade)
pending = {}    # member -> messages queued before its handshake finished
ready = set()   # members whose handshake finished
stats = {"sent": 0}


def room_of(path):
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    return q.get("room", [""])[0]


async def join(connection, request):
    member = connection
    rooms.setdefault(room_of(request.path), []).append(member)
    pending[member] = []
    await asyncio.sleep(a.join_delay)
    return None


async def deliver(member, m):
    stats["sent"] += 1
    try:
        await member.send(m)
    except websockets.ConnectionClosed:
        pass


async def handler(ws):
    room = room_of(ws.request.path)
    for m in pending.pop(ws, []):
        await deliver(ws, m)
    ready.add(ws)
    try:
        async for m in ws:
            for member in list(rooms.get(room, [])):
                if member in ready:
                    await deliver(member, m)
                elif member in pending:
                    pending[member].append(m)
    except websockets.ConnectionClosed:
        pass
    finally:
        ready.discard(ws)
        if ws in rooms.get(room, []):
            rooms[room].remove(ws)


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set_result, None)
    async with websockets.serve(handler, "127.0.0.1", 0, process_request=join,
                                max_size=None) as server:
        print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.wait_for(stop, a.seconds)
    print(f"sent {stats['sent']}", flush=True)


asyncio.run(main())
