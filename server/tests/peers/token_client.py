"""An independent client for the signed-identity tests: mints HS256 JWTs with Python's own
hmac/base64/json (as PyJWT would write them) and connects with the `websockets` library.

Usage: token_client.py PORT SECRET USER
Prints one line per check, then `ready`, then one line per message each client receives,
until both clients have one (the Rust test pushes to USER through the admin listener).
"""
import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(secret: str, claims: dict) -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def refused(uri: str, **kw) -> str:
    try:
        async with connect(uri, **kw):
            return "open"
    except InvalidStatus as e:
        return str(e.response.status_code)


async def main() -> None:
    port, secret, user = sys.argv[1], sys.argv[2], sys.argv[3]
    base = f"ws://127.0.0.1:{port}"
    later = int(time.time()) + 3600
    good = mint(secret, {"sub": user, "exp": later, "rooms": ["lobby"]})
    forged = mint("some-other-secret-entirely-here", {"sub": user, "exp": later})
    expired = mint(secret, {"sub": user, "exp": int(time.time()) - 60})
    print("forged", await refused(f"{base}/ws?token={forged}"), flush=True)
    print("expired", await refused(f"{base}/ws?token={expired}"), flush=True)
    print("claimed", await refused(f"{base}/ws?user={user}"), flush=True)
    print("other_room", await refused(f"{base}/broadcast?room=vip&token={good}"), flush=True)
    by_query = await connect(f"{base}/ws?token={good}")
    by_header = await connect(
        f"{base}/broadcast?room=lobby",
        additional_headers={"Authorization": f"Bearer {good}"},
    )
    print("ready", flush=True)
    got_q = await asyncio.wait_for(by_query.recv(), 60)
    got_h = await asyncio.wait_for(by_header.recv(), 60)
    print("query", got_q.decode() if isinstance(got_q, bytes) else got_q, flush=True)
    print("header", got_h.decode() if isinstance(got_h, bytes) else got_h, flush=True)
    await by_query.close()
    await by_header.close()


asyncio.run(main())
