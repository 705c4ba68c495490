#!/usr/bin/env python3
"""The TLS section of scripts/compare.sh (--tls): ws-server and ws-server-tokio over wss://,
side by side in one run, the server alone on its core and every client on the other.

Both servers get the same generated certificate (ECDSA P-256) and the same rustls
configuration (ws_server::tls_config: the same suites, one ticket per full handshake,
stateless tickets), so the rows compare the servers, not their settings.

Rows per server (server CPU is the sum over its threads of /proc/PID/task/*/schedstat, in ns):
  idle memory       server RSS growth per idle wss connection (N held), and for ws-server
                    its own count of TLS state bytes (ws_tls_state_bytes / ws_tls_connections)
  handshakes        per server CPU-second: full TLS 1.3, full TLS 1.2, resumed TLS 1.2
                    (openssl s_time -new / -reuse: handshake only), and full and resumed
                    TLS 1.3 followed by the upgrade (a Python client; s_time cannot resume
                    TLS 1.3, whose ticket comes after the handshake)
  echo              messages per server CPU-second, ws-loadgen --scenario echo at a fixed
                    rate over wss, and the same over ws:// next to it
  ws-loadgen        its own CPU per handshake (opening the N idle connections) and per
                    message (the echo run), over wss and over ws://

Usage: tls_compare.py --bin DIR --out DIR [--quick] [--server-core C] [--lg-core C]
                      [--conns N] [--echo-conns N] [--rate R] [--duration S]
"""

import argparse
import glob
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
import urllib.request


def note(msg):
    print(f"note: {msg}", file=sys.stderr)


def cpu_ns(pid):
    total = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(f) as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def make_certs(out):
    d = os.path.join(out, "certs")
    os.makedirs(d, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2",
        "-subj", "/CN=ws-ceiling compare CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{d}/key.pem", "-out", f"{d}/srv.csr", "-subj", "/CN=localhost")
    with open(f"{d}/ext.cnf", "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", f"{d}/srv.csr", "-CA", f"{d}/ca.pem", "-CAkey",
        f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/cert.pem", "-days", "2",
        "-extfile", f"{d}/ext.cnf")
    return d


class Server:
    def __init__(self, binary, core, certs, log, tls=True):
        args = ["taskset", "-c", str(core), binary, "--listen", "127.0.0.1:0",
                "--cores", str(core), "--max-pending", "100000"]
        if tls:
            args += ["--tls-cert", f"{certs}/cert.pem", "--tls-key", f"{certs}/key.pem"]
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        first = self.p.stdout.readline().strip()
        second = self.p.stdout.readline().strip()
        if not first.startswith("listening on "):
            raise RuntimeError(f"{binary}: {first!r} (see {log})")
        self.port = int(first.rsplit(":", 1)[1])
        self.admin = second.split(" ", 2)[2]

    def metric(self, name, label=""):
        text = urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name)] in "{ " and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def cpu(self):
        return cpu_ns(self.p.pid)

    def stop(self):
        self.p.kill()
        self.p.wait()


def handshakes_s_time(srv, lg_core, version, reuse, secs, certs):
    """Handshakes as openssl counts them: s_time closes as soon as its handshake is done,
    so a server that still writes a session ticket then may see an error, not a success;
    the work was done all the same."""
    c0 = srv.cpu()
    r = subprocess.run(["taskset", "-c", str(lg_core), "openssl", "s_time", "-connect",
                        f"127.0.0.1:{srv.port}", "-reuse" if reuse else "-new", version,
                        "-time", str(secs), "-CAfile", f"{certs}/ca.pem"],
                       capture_output=True, text=True, timeout=secs + 60)
    c = srv.cpu() - c0
    h = 0
    for line in r.stdout.splitlines():
        if "connections in" in line and "user sec" in line:
            h = int(line.split()[0])
    return h / (c / 1e9) if c > 0 else 0.0, h


RESUME_CLIENT = r'''
import socket, ssl, sys, time, base64, os
port, ca, secs, resume = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
c = ssl.create_default_context(cafile=ca)
c.minimum_version = c.maximum_version = ssl.TLSVersion.TLSv1_3
req = (b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
session, n, end = None, 0, time.time() + secs
while time.time() < end:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t = c.wrap_socket(s, server_hostname="localhost", session=session if resume else None)
    t.sendall(req)
    t.recv(4096)
    session = t.session
    t.close()
    n += 1
print(n)
'''


def handshakes_python(srv, lg_core, resume, secs, certs, out):
    kind = "resumed" if resume else "full"
    script = os.path.join(out, "resume_client.py")
    with open(script, "w") as f:
        f.write(RESUME_CLIENT)
    h0, c0 = srv.metric("ws_tls_handshakes_total", f'kind="{kind}"'), srv.cpu()
    subprocess.run(["taskset", "-c", str(lg_core), sys.executable, script, str(srv.port),
                    f"{certs}/ca.pem", str(secs), "1" if resume else "0"],
                   capture_output=True, timeout=secs + 60)
    h, c = srv.metric("ws_tls_handshakes_total", f'kind="{kind}"') - h0, srv.cpu() - c0
    return h / (c / 1e9) if c > 0 else 0.0, h


def loadgen(bin_dir, lg_core, url, certs, extra, report):
    args = ["taskset", "-c", str(lg_core), f"{bin_dir}/ws-loadgen", "run", url,
            "--cores", str(lg_core), "--json", report, "--progress", "off"] + extra
    if url.startswith("wss"):
        args += ["--ca", f"{certs}/ca.pem"]
    return args


def idle(srv, a, certs, out, scheme, label):
    url = f"{scheme}://localhost:{srv.port}/ws"
    rss0 = rss_kib(srv.p.pid)
    cpu0 = children_cpu()
    report = os.path.join(out, f"idle-{label}.json")
    p = subprocess.Popen(loadgen(a.bin, a.lg_core, url, certs,
                                 ["--scenario", "hold", "-c", str(a.conns), "--connect-rate",
                                  str(a.connect_rate), "-d", f"{a.hold}s", "--ping-interval", "60s"],
                                 report), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, state, tls_conns = 0, 0.0, 0.0
    deadline = time.time() + a.hold + 60
    while p.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        try:
            open_now = srv.metric("ws_connections_open")
        except OSError:
            continue
        if open_now >= a.conns:
            time.sleep(2)  # the once-a-second gauges catch up
            peak = rss_kib(srv.p.pid)
            state = srv.metric("ws_tls_state_bytes")
            tls_conns = srv.metric("ws_tls_connections")
            break
    p.wait(timeout=a.hold + 120)
    lg_cpu = children_cpu() - cpu0
    per_conn = (peak - rss0) * 1024 / a.conns if peak else None
    return {
        "rss_per_conn": per_conn,
        "tls_state_per_conn": state / tls_conns if tls_conns else None,
        "loadgen_cpu_per_handshake_us": lg_cpu / a.conns * 1e6,
    }


def echo(srv, a, certs, out, scheme, label):
    url = f"{scheme}://localhost:{srv.port}/ws"
    m0, c0, lg0 = srv.metric("ws_messages_in_total"), srv.cpu(), children_cpu()
    report = os.path.join(out, f"echo-{label}.json")
    subprocess.run(loadgen(a.bin, a.lg_core, url, certs,
                           ["--scenario", "echo", "-c", str(a.echo_conns), "--rate", str(a.rate),
                            "-d", f"{a.duration}s", "--payload", "64"], report),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=a.duration + 120)
    m, c, lg = srv.metric("ws_messages_in_total") - m0, srv.cpu() - c0, children_cpu() - lg0
    p99 = None
    try:
        with open(report) as f:
            r = json.load(f)
        p99 = r.get("latency", {}).get("p99_us") or r.get("rtt", {}).get("p99_us")
    except (OSError, ValueError):
        pass
    return {
        "msgs": m,
        "msgs_per_cpu_s": m / (c / 1e9) if c > 0 else 0.0,
        "loadgen_cpu_per_msg_us": lg / m * 1e6 if m else None,
        "p99_us": p99,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--server-core", default="0")
    ap.add_argument("--lg-core", default="1")
    ap.add_argument("--servers", default="ws-server,ws-server-tokio")
    ap.add_argument("--conns", type=int, default=None)
    ap.add_argument("--connect-rate", type=int, default=2000)
    ap.add_argument("--echo-conns", type=int, default=None)
    ap.add_argument("--rate", type=int, default=None)
    ap.add_argument("--duration", type=int, default=None)
    a = ap.parse_args()
    a.conns = a.conns or (1000 if a.quick else 10000)
    a.echo_conns = a.echo_conns or (200 if a.quick else 1000)
    a.rate = a.rate or (4000 if a.quick else 20000)
    a.duration = a.duration or (3 if a.quick else 8)
    a.hold = max(10, a.conns // a.connect_rate + 8)
    hs_secs = 2 if a.quick else 5
    os.makedirs(a.out, exist_ok=True)
    certs = make_certs(a.out)
    results = {}
    for name in a.servers.split(","):
        binary = os.path.join(a.bin, name)
        if not os.access(binary, os.X_OK):
            note(f"{binary} missing: skipped")
            continue
        r = results[name] = {}
        srv = Server(binary, a.server_core, certs, os.path.join(a.out, f"{name}-tls.log"))
        try:
            r["idle_wss"] = idle(srv, a, certs, a.out, "wss", f"{name}-wss")
            r["hs_full13"] = handshakes_s_time(srv, a.lg_core, "-tls1_3", False, hs_secs, certs)
            r["hs_full12"] = handshakes_s_time(srv, a.lg_core, "-tls1_2", False, hs_secs, certs)
            r["hs_resumed12"] = handshakes_s_time(srv, a.lg_core, "-tls1_2", True, hs_secs, certs)
            r["hs_full13_up"] = handshakes_python(srv, a.lg_core, False, hs_secs, certs, a.out)
            r["hs_resumed13_up"] = handshakes_python(srv, a.lg_core, True, hs_secs, certs, a.out)
            r["echo_wss"] = echo(srv, a, certs, a.out, "wss", f"{name}-wss")
        finally:
            srv.stop()
        srv = Server(binary, a.server_core, certs, os.path.join(a.out, f"{name}-plain.log"), tls=False)
        try:
            r["idle_ws"] = idle(srv, a, certs, a.out, "ws", f"{name}-ws")
            r["echo_ws"] = echo(srv, a, certs, a.out, "ws", f"{name}-ws")
        finally:
            srv.stop()
    with open(os.path.join(a.out, "tls.json"), "w") as f:
        json.dump(results, f, indent=2)
    print_table(results, a)


def fmt(v, unit="", nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}{unit}"


def print_table(res, a):
    names = list(res)
    print(f"\n## TLS (wss://): {a.conns} idle connections, echo {a.echo_conns} conns x "
          f"{a.rate} msgs/s x 64 B for {a.duration} s; server on core {a.server_core}, "
          f"clients on core {a.lg_core}\n")
    print("| row | " + " | ".join(names) + (" | ws-server ÷ tokio |" if len(names) == 2 else " |"))
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")

    def row(label, get, unit="", nd=0, ratio=True):
        vals = [get(res[n]) for n in names]
        cells = [fmt(v, unit, nd) for v in vals]
        tail = ""
        if len(names) == 2:
            tail = " | " + (f"{vals[0] / vals[1]:.2f}" if ratio and vals[0] and vals[1] else "")
        print(f"| {label} | " + " | ".join(cells) + tail + " |")

    row("RSS per idle wss connection", lambda r: r["idle_wss"]["rss_per_conn"], " B")
    row("RSS per idle ws connection", lambda r: r["idle_ws"]["rss_per_conn"], " B")
    row("TLS state per connection (ws_tls_state_bytes)", lambda r: r["idle_wss"]["tls_state_per_conn"], " B", ratio=False)
    row("full TLS 1.3 handshakes / server CPU-s", lambda r: r["hs_full13"][0])
    row("full TLS 1.2 handshakes / server CPU-s", lambda r: r["hs_full12"][0])
    row("resumed TLS 1.2 handshakes / server CPU-s", lambda r: r["hs_resumed12"][0])
    row("full TLS 1.3 + upgrade / server CPU-s", lambda r: r["hs_full13_up"][0])
    row("resumed TLS 1.3 + upgrade / server CPU-s", lambda r: r["hs_resumed13_up"][0])
    row("echo msgs / server CPU-s over wss", lambda r: r["echo_wss"]["msgs_per_cpu_s"])
    row("echo msgs / server CPU-s over ws", lambda r: r["echo_ws"]["msgs_per_cpu_s"])
    row("ws-loadgen CPU per handshake, wss", lambda r: r["idle_wss"]["loadgen_cpu_per_handshake_us"], " µs", 1, ratio=False)
    row("ws-loadgen CPU per handshake, ws", lambda r: r["idle_ws"]["loadgen_cpu_per_handshake_us"], " µs", 1, ratio=False)
    row("ws-loadgen CPU per message, wss", lambda r: r["echo_wss"]["loadgen_cpu_per_msg_us"], " µs", 2, ratio=False)
    row("ws-loadgen CPU per message, ws", lambda r: r["echo_ws"]["loadgen_cpu_per_msg_us"], " µs", 2, ratio=False)
    if len(names) == 2:
        print("\n(For RSS rows the ratio is ws-server ÷ tokio: smaller is better; for the "
              "rate rows larger is better.)")


if __name__ == "__main__":
    main()
