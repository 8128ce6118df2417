"""
Client-visible damage of a hung backend, in the lab.

2,000 GETs through the public VIP to nova (100 requests/s for 20 s); nova's backend on
lab-ctrl3 is SIGSTOPped at 5 s (the kernel still accepts its connections, nothing answers).
Counted: requests that fail or take over 2 s. Five runs per setting, median, all in one run:

  (a) the anchors' HAProxy settings (Kolla-Ansible's: connect 10 s, server 60 s, checks every
      2 s with fall 3, `option redispatch` on the last retry, retries on connection failure
      only), the remediation loop off;
  (b) HAProxy alone with this project's settings (connect 1 s, GET/HEAD response timeout
      1.5 s with `retry-on ... response-timeout`, redispatch on every retry), the loop off;
  (c) the full project: (b) plus beacons, the loop (engine) and runner draining the hung backend.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/hung_backend_load.py [--runs 5]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import drain_latency as lab  # noqa: E402
from lab import loadgen  # noqa: E402

ANCHORS = {"haproxy": {"timeouts": {"connect": 10, "server": 60, "client": 60, "queue": 60}, "redispatch": -1},
           "services": {"nova": {"retry_idempotent": False}}}
SETTINGS = [
    ("(a) anchors' HAProxy settings", ANCHORS, False),
    ("(b) HAProxy alone, this project's settings", {}, False),
    ("(c) full project (HAProxy + loop drain)", {}, True),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("a", "b", "c"), action="append", help="measure only these settings")
    args = parser.parse_args()
    rows = []
    try:
        for label, override, remediation in SETTINGS:
            if args.only and label[1] not in args.only:
                continue
            print("{}: configuring".format(label), flush=True)
            lab.configure(2, 3, remediation, **override)
            time.sleep(3)
            counts, worst, over1 = [], [], []
            for i in range(args.runs):
                bad, results = lab.load_run(kind="hang")
                counts.append(bad)
                worst.append(max(r.elapsed for r in results))
                over1.append(sum(1 for r in results if r.status == 200 and r.elapsed > 1))
                print("  run {}/{}: {}; {} took over 1 s".format(i + 1, args.runs, loadgen.summary(results), over1[-1]), flush=True)
            rows.append((label, counts, worst, over1))
    finally:
        lab.configure(2, 3, True)
    print("\nrequests of 2,000 that failed or took over 2 s (100/s for 20 s, nova/lab-ctrl3 SIGSTOPped at 5 s)")
    print("{:<46} {:>22} {:>7} {:>12} {:>14}".format("settings", "runs", "median", "worst (s)", "over 1 s, med"))
    for label, counts, worst, over1 in rows:
        print("{:<46} {:>22} {:>7} {:>12.2f} {:>14}".format(label, ", ".join(map(str, counts)), statistics.median(counts), max(worst),
                                                             statistics.median(over1)))
    if len(rows) == len(SETTINGS):
        anchors, ours = statistics.median(rows[0][1]), statistics.median(rows[-1][1])
        print("target for (c): at most 4; anchors/project: {}".format("{:.0f}x".format(anchors / ours) if ours else "{} vs 0".format(anchors)))


if __name__ == "__main__":
    main()
