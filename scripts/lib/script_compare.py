#!/usr/bin/env python3
"""The scripted-scenario section of scripts/compare.sh (--script): what a scenario file costs
ws-loadgen next to its built-in echo scenario, side by side in one run.

ws-server alone on the server core echoes; ws-loadgen alone on the other core runs, in
alternation, K times each:
  built-in  ws-loadgen URL --scenario echo --payload 72 (the binary stamp, padded)
  script    ws-loadgen run --script F --rate R with a JSON message of the same size:
            {"type":"echo","n":{{seq}},"text":"{{stamp}}"}: rendered from its template,
            the text stamp found again by a memmem scan of the echo
  per-conn  the same file with rate = R / N in its [loop]: each connection on its own
            schedule (the script's timers, batched per --tick)
at the same connections, total rate and duration. The row is ws-loadgen's own CPU per
message received (its report's process.cpu_seconds / messages.received), median of the K
runs, and the ratio script / built-in (issue 13's target: at most 1.2).

Usage: script_compare.py --bin DIR --out DIR [--quick] [--server-core C] [--lg-core C]
                         [--conns N] [--rate R] [--duration S] [--repeat K]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def note(msg):
    print(f"note: {msg}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--server-core", default="0")
    p.add_argument("--lg-core", default="1")
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--rate", type=int, default=20000)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.quick:
        a.conns, a.rate, a.duration, a.repeat = 50, 5000, 2, 1
    os.makedirs(a.out, exist_ok=True)
    srv = subprocess.Popen(
        [os.path.join(a.bin, "ws-server"), "--listen", "127.0.0.1:0",
         "--cores", a.server_core, "--admin-listen", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = srv.stdout.readline()
        if not line.startswith("listening on "):
            note(f"ws-server did not start: {line!r}")
            return 1
        addr = line.split()[-1]
        script = os.path.join(a.out, "echo.toml")
        per_conn = os.path.join(a.out, "echo-per-conn.toml")
        body = ("send = '{\"type\":\"echo\",\"n\":{{seq}},\"text\":\"{{stamp}}\"}'\n")
        with open(script, "w") as f:
            f.write(f'url = "ws://{addr}/ws"\n[loop]\nname = "echo"\n' + body)
        with open(per_conn, "w") as f:
            f.write(f'url = "ws://{addr}/ws"\n[loop]\nname = "echo"\n'
                    f"rate = {a.rate / a.conns}\n" + body)
        common = ["-c", str(a.conns), "-d", f"{a.duration}s",
                  "--cores", a.lg_core, "--progress", "off", "--warmup", "1s"]
        total = ["--rate", str(a.rate)]
        lg = os.path.join(a.bin, "ws-loadgen")
        runs = {"builtin": [], "script": [], "per-conn": []}
        for k in range(a.repeat):
            for kind in runs:
                out = os.path.join(a.out, f"{kind}-{k}.json")
                if kind == "builtin":
                    cmd = [lg, f"ws://{addr}/ws", "--scenario", "echo", "--payload", "72"] + total
                elif kind == "script":
                    cmd = [lg, "run", "--script", script] + total
                else:
                    cmd = [lg, "run", "--script", per_conn]
                subprocess.run(cmd + common + ["--json", out], check=False,
                               stdout=subprocess.DEVNULL)
                with open(out) as f:
                    j = json.load(f)
                m = j["messages"]["received"]
                runs[kind].append({
                    "received": m,
                    "bytes_per_msg": j["messages"]["bytes_sent"] / max(1, j["messages"]["sent"]),
                    "cpu_per_msg_us": j["process"]["cpu_seconds"] / m * 1e6 if m else None,
                    "rtt_p99_us": j["latency"]["rtt"]["p99"],
                    "lost": j["messages"]["lost"],
                })
                time.sleep(0.5)
    finally:
        srv.terminate()
        srv.wait()
    med = {k: statistics.median(r["cpu_per_msg_us"] for r in v if r["cpu_per_msg_us"])
           for k, v in runs.items()}
    with open(os.path.join(a.out, "script.json"), "w") as f:
        json.dump({"runs": runs, "median_cpu_per_msg_us": med, "conns": a.conns,
                   "rate": a.rate, "duration": a.duration}, f, indent=2)
    ratio = med["script"] / med["builtin"]
    ratio_pc = med["per-conn"] / med["builtin"]
    print(f"### ws-loadgen: a scripted JSON echo next to the built-in echo "
          f"({a.conns} connections, {a.rate} msgs/s, {a.duration} s, median of {a.repeat})\n")
    met = lambda r: "met" if r <= 1.2 else "NOT met"
    print("| | built-in echo (binary stamp) | --script JSON echo, --rate total | "
          "--script, rate per connection | ratios | target |")
    print("|---|---|---|---|---|---|")
    b, s, pc = runs["builtin"][0], runs["script"][0], runs["per-conn"][0]
    print(f"| message size, bytes | {b['bytes_per_msg']:.0f} | {s['bytes_per_msg']:.0f} | "
          f"{pc['bytes_per_msg']:.0f} | | |")
    print(f"| ws-loadgen CPU per message received, µs | {med['builtin']:.2f} | "
          f"{med['script']:.2f} | {med['per-conn']:.2f} | {ratio:.2f}, {ratio_pc:.2f} | "
          f"≤ 1.2: {met(ratio)}, {met(ratio_pc)} |")
    p99 = {k: statistics.median(r["rtt_p99_us"] for r in v) for k, v in runs.items()}
    print(f"| rtt p99, µs (median) | {p99['builtin']:.0f} | {p99['script']:.0f} | "
          f"{p99['per-conn']:.0f} | | |")
    lost = sum(r["lost"] for v in runs.values() for r in v)
    print(f"| messages lost (all runs) | | | | | {lost} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
