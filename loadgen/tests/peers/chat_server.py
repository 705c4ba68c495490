#!/usr/bin/env python3
"""An independent JSON chat server for ws-loadgen's script tests (Python `websockets`, not
our code), shaped like the services people test: GET /chat?user=U with
`Authorization: Bearer TOKEN` (checked against --users, a CSV user,token; 401 otherwise),
then JSON messages:

  {"type":"login","user":U,"token":T}  -> {"type":"login","ok":true}   (or "ok":false)
  {"type":"join","room":R}             -> {"type":"joined","room":R}  (after a login)
  {"type":"say","room":R,"text":X}     -> to every member of R, the sender last:
      {"type":"msg","room":R,"from":U,"data":{"text":X},"ts":1733...}  (its own envelope)

--silent USER...: never answers those users' login. --refuse-login USER...: answers
"ok":false. --close-on-join USER...: closes those
users with code 4001 when they join. Prints `port N` once it listens; on SIGINT prints one
JSON line of what it counted (logins, joins, says, relays, ...) and exits.
"""
import argparse
import asyncio
import csv
import json
import signal
import time
import urllib.parse

import websockets
from websockets.asyncio.server import serve
from websockets.http11 import Response
from websockets.datastructures import Headers

p = argparse.ArgumentParser()
p.add_argument("--users", required=True)
p.add_argument("--silent", nargs="*", default=[])
p.add_argument("--close-on-join", nargs="*", default=[])
p.add_argument("--refuse-login", nargs="*", default=[])
p.add_argument("--seconds", type=float, default=120)
a = p.parse_args()

with open(a.users, newline="") as f:
    tokens = {r["user"]: r["token"] for r in csv.DictReader(f)}

rooms = {}
seen_users = set()
counts = {"upgrades": 0, "refused": 0, "logins": 0, "login_failures": 0, "joins": 0,
          "says": 0, "relays": 0, "bad_json": 0}


def dumps(v):
    # Compact, as Go's encoding/json writes it (the service this server stands in for).
    return json.dumps(v, separators=(",", ":"))


def refuse(status, text):
    counts["refused"] += 1
    return Response(status, text, Headers([("Content-Length", str(len(text)))]), text.encode())


def check(connection, request):
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
    user = q.get("user", [""])[0]
    auth = request.headers.get("Authorization", "")
    if user not in tokens or auth != "Bearer " + tokens[user]:
        return refuse(401, "Unauthorized")
    return None


async def handler(ws):
    counts["upgrades"] += 1
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query)
    user = q["user"][0]
    logged_in = False
    joined = None
    try:
        async for raw in ws:
            try:
                m = json.loads(raw)
            except ValueError:
                counts["bad_json"] += 1
                continue
            t = m.get("type")
            if t == "login":
                if user in a.silent:
                    continue
                ok = (m.get("user") == user and m.get("token") == tokens.get(user)
                      and user not in a.refuse_login)
                counts["logins" if ok else "login_failures"] += 1
                if ok:
                    seen_users.add(user)
                logged_in = logged_in or ok
                await ws.send(dumps({"type": "login", "ok": ok}))
            elif t == "join" and logged_in:
                if user in a.close_on_join:
                    await ws.close(4001, "not allowed in this room")
                    return
                joined = m.get("room", "")
                rooms.setdefault(joined, []).append(ws)
                counts["joins"] += 1
                await ws.send(dumps({"type": "joined", "room": joined}))
            elif t == "say" and joined is not None:
                counts["says"] += 1
                out = dumps({"type": "msg", "room": joined, "from": user,
                                  "data": {"text": m.get("text", "")}, "ts": time.time()})
                members = [w for w in rooms.get(joined, []) if w is not ws] + [ws]
                for w in members:
                    try:
                        await w.send(out)
                        counts["relays"] += 1
                    except websockets.ConnectionClosed:
                        pass
    except websockets.ConnectionClosed:
        pass
    finally:
        if joined is not None and ws in rooms.get(joined, []):
            rooms[joined].remove(ws)


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set_result, None)
    async with serve(handler, "127.0.0.1", 0, process_request=check) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"port {port}", flush=True)
        try:
            await asyncio.wait_for(stop, a.seconds)
        except asyncio.TimeoutError:
            pass
    counts["distinct_users"] = len(seen_users)
    print(json.dumps(counts), flush=True)


asyncio.run(main())
