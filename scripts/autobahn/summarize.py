#!/usr/bin/env python3
"""Summarises one Autobahn|Testsuite fuzzingclient run and compares it with the expected
results committed next to scripts/autobahn.sh.

Reads <outdir>/index.json ({agent: {case id: {behavior, behaviorClose, duration, ...}}}),
prints one summary line (counts per behavior and per close behavior), then every case that
is worse than expected, and every non-OK case outside compression (12.*, 13.*).

A case fails the run when its behavior or its close behavior is a failure (FAILED, WRONG
CODE, UNCLEAN, FAILED BY CLIENT), or is worse than the expected file says, with
    OK > NON-STRICT > INFORMATIONAL > UNIMPLEMENTED > FAILED (and the other failures).
A case the expected file does not list is expected OK/OK (12.* and 13.*: UNIMPLEMENTED/OK,
compression declined; 7.1.6, 7.13.1, 7.13.2: INFORMATIONAL, the only verdict the suite gives
them), so a new case must meet the goal or be added with
--update-expected. A case the expected file lists that did not run is a regression too,
unless the run was limited with --cases.

Exit status: 0 pass, 1 failures or regressions (or no usable index.json).
Python 3 only (the suite itself runs under Python 2.7; this does not).
"""

import argparse
import json
import os
import sys

RANK = {"OK": 5, "NON-STRICT": 4, "INFORMATIONAL": 3, "UNIMPLEMENTED": 2, "FAILED": 1}
# The suite's other close verdicts are failures too (autobahntestsuite/case/case.py).
FAILURES = ("FAILED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT")
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
CLOSE_BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED") + FAILURES


def rank(verdict):
    """Higher is better; anything unknown ranks as a failure."""
    return RANK.get(verdict, 0 if verdict not in FAILURES else 1)


def case_key(case_id):
    """Natural order: 1.1.2 < 1.1.10 < 2.1."""
    return tuple(int(p) if p.isdigit() else 0 for p in case_id.split("."))


def is_compression(case_id):
    return case_id.split(".")[0] in ("12", "13")


# Cases the suite can only rate INFORMATIONAL (it records what the server did, whatever it
# did): 7.1.6 (256K message, close, then ping), 7.13.1/7.13.2 (close codes 5000 and 65536).
INFORMATIONAL_BY_DESIGN = ("7.1.6", "7.13.1", "7.13.2")


def goal(case_id):
    """What a case is expected to be when the expected file does not list it."""
    if case_id in INFORMATIONAL_BY_DESIGN:
        return {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL"}
    if is_compression(case_id):
        return {"behavior": "UNIMPLEMENTED", "behaviorClose": "OK"}
    return {"behavior": "OK", "behaviorClose": "OK"}


def fmt_counts(counts, order):
    parts = ["%s %d" % (k, counts[k]) for k in order if counts.get(k)]
    parts += ["%s %d" % (k, v) for k, v in sorted(counts.items()) if k not in order and v]
    return ", ".join(parts) if parts else "none"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True, help="the run's index.json")
    ap.add_argument("--agent", required=True, help="agent name used in the config")
    ap.add_argument("--expected", required=True, help="expected-<server>.json")
    ap.add_argument("--duration", type=float, default=None, help="wall seconds of the run")
    ap.add_argument("--partial", action="store_true",
                    help="the run was limited to some cases: don't require the others")
    ap.add_argument("--update-expected", action="store_true",
                    help="rewrite the expected file from this run (merged when --partial)")
    a = ap.parse_args()

    label = "autobahn %s:" % a.agent
    try:
        with open(a.index) as f:
            index = json.load(f)
        cases = index[a.agent]
    except (OSError, ValueError, KeyError) as e:
        print("%s FAIL: no usable results in %s (%s)" % (label, a.index, e))
        return 1
    if not cases:
        print("%s FAIL: the run has no cases" % label)
        return 1

    expected = {}
    have_expected = os.path.exists(a.expected)
    if have_expected:
        with open(a.expected) as f:
            expected = json.load(f)

    counts, close_counts = {}, {}
    for c in cases.values():
        counts[c["behavior"]] = counts.get(c["behavior"], 0) + 1
        close_counts[c["behaviorClose"]] = close_counts.get(c["behaviorClose"], 0) + 1

    problems = []  # (case id, text)
    hard = []  # case ids with a failing verdict: no expected file makes those acceptable
    for cid in sorted(cases, key=case_key):
        got = cases[cid]
        want = expected.get(cid) or goal(cid)
        why = []
        for field in ("behavior", "behaviorClose"):
            g, w = got[field], want[field]
            if g in FAILURES or rank(g) == 0:
                why.append("%s %s" % (field, g))
                hard.append(cid)
            elif rank(g) < rank(w):
                why.append("%s %s, expected %s" % (field, g, w))
        if why:
            problems.append((cid, "; ".join(why)))
    if not a.partial:
        for cid in sorted(set(expected) - set(cases), key=case_key):
            problems.append((cid, "expected but did not run"))

    nonok = [
        cid for cid in sorted(cases, key=case_key)
        if not is_compression(cid)
        and (cases[cid]["behavior"] != "OK" or cases[cid]["behaviorClose"] != "OK")
    ]
    comp = [cid for cid in cases if is_compression(cid)]

    verdict = "PASS" if not problems else "FAIL"
    dur = " in %.0fs" % a.duration if a.duration is not None else ""
    print("%s %s: %d cases%s; behavior: %s; close: %s; non-OK outside compression: %d; "
          "worse than expected: %d" % (
              label, verdict, len(cases), dur,
              fmt_counts(counts, BEHAVIORS), fmt_counts(close_counts, CLOSE_BEHAVIORS),
              len(nonok), len(problems)))
    if not have_expected and not a.update_expected:
        print("  (no %s: compared with the goal, OK everywhere but compression UNIMPLEMENTED "
              "and 7.1.6/7.13.1/7.13.2 INFORMATIONAL)" % a.expected)
    for cid in nonok:
        c = cases[cid]
        print("  non-OK %-8s behavior %s, close %s, remote close code %s%s" % (
            cid, c["behavior"], c["behaviorClose"], c.get("remoteCloseCode"),
            " (the suite's only verdict for it)" if cid in INFORMATIONAL_BY_DESIGN else ""))
    comp_nonunimpl = [cid for cid in sorted(comp, key=case_key)
                      if cases[cid]["behavior"] != "UNIMPLEMENTED"]
    if comp and comp_nonunimpl:
        print("  compression cases not UNIMPLEMENTED: %d (permessage-deflate was negotiated)"
              % len(comp_nonunimpl))
    for cid, why in problems:
        print("  %s %-8s %s" % ("FAILED" if cid in hard else "WORSE ", cid, why))

    if a.update_expected:
        new = dict(expected) if a.partial else {}
        for cid, c in cases.items():
            new[cid] = {"behavior": c["behavior"], "behaviorClose": c["behaviorClose"]}
        tmp = a.expected + ".tmp"
        with open(tmp, "w") as f:
            f.write("{\n")
            ids = sorted(new, key=case_key)
            for i, cid in enumerate(ids):
                f.write('  %s: {"behavior": %s, "behaviorClose": %s}%s\n' % (
                    json.dumps(cid), json.dumps(new[cid]["behavior"]),
                    json.dumps(new[cid]["behaviorClose"]), "," if i + 1 < len(ids) else ""))
            f.write("}\n")
        os.replace(tmp, a.expected)
        print("  wrote %s (%d cases)" % (a.expected, len(new)))
        # Failures still fail: an expected file cannot make FAILED acceptable.
        return 1 if hard else 0
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
