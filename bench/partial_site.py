"""
The loop when part of the site is gone: one controller's link cut.

1. Baseline: nova's backend on lab-ctrl2 SIGKILLed, time until it is out of rotation on every
   HAProxy (N runs: median, p95).
2. lab-ctrl3's link cut (its veth down: its minion, HAProxy and APIs unreachable). Measured:
   - how long until every API backend of lab-ctrl3 is out of rotation on both survivors'
     HAProxies (target: within 5 s);
   - 4 s after the cut, nova on lab-ctrl2 SIGKILLed: how long until it is out of rotation on
     both survivors (target: within 2x the baseline p95).
   Then the link comes back, the loop restores what it drained and the next run starts alike.

Prints both figures side by side with the baseline and their ratio.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/partial_site.py [--runs 5]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from lab import labctl  # noqa: E402
import drain_latency as dl  # noqa: E402

CTRLS = [n for n, _ in labctl.CONTROLLERS]
CUT, VICTIM = "lab-ctrl3", "lab-ctrl2"
SURVIVORS = [c for c in CTRLS if c != CUT]
APIS = ["designate", "glance", "keystone", "neutron", "nova", "placement", "proxy"]
COOLDOWN = 10


def state(path, service, server):
    """(op state, admin state) of ``service/server`` on the HAProxy behind admin socket ``path``."""
    for line in dl.ask(path, "show servers state {}".format(service)).splitlines()[2:]:
        f = line.split()
        if len(f) > 6 and f[3] == server:
            return f[5], int(f[6])
    return None, None


def out(path, service, server):
    op, admin = state(path, service, server)
    return op == "0" or (admin is not None and admin & 0x09 != 0)


def in_rotation(path, service, server):
    op, admin = state(path, service, server)
    return op == "2" and admin is not None and admin & 0x09 == 0


def standin_pid(ctrl, service):
    text = labctl.ctrl_run(ctrl, ["cat", "/run/standin-%s.pid" % service], check=False).stdout.split()
    return int(text[0]) if text else None


def wait(predicate, timeout, step=0.05):
    """When ``predicate`` first held (monotonic seconds, to within ``step``), or None."""
    return time.monotonic() if dl.wait(predicate, timeout, step) else None


def all_back(paths, timeout=90):
    """Every backend of every API back in rotation on ``paths``, then out of the cooldown."""
    if not wait(lambda: all(in_rotation(p, s, c) for p in paths.values() for s in APIS for c in CTRLS), timeout, 0.5):
        raise SystemExit("the site did not come back into rotation within {} s".format(timeout))
    time.sleep(COOLDOWN + 0.5)


def crash_victim(paths, survivors_only=False):
    pid = standin_pid(VICTIM, "nova")
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    where = [paths[c] for c in (SURVIVORS if survivors_only else CTRLS)]
    done = wait(lambda: all(out(p, "nova", VICTIM) for p in where), 60)
    if done is None:
        raise SystemExit("nova/{} never left rotation".format(VICTIM))
    return done - start


def restart_victim():
    labctl.start_standins(VICTIM, dict(labctl.CONTROLLERS)[VICTIM])


def cut_run(paths):
    link = labctl.netns(CUT) + "-h"
    start = time.monotonic()
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    try:
        where = [paths[c] for c in SURVIVORS]
        cut_done = wait(lambda: all(out(p, s, CUT) for p in where for s in APIS), 60)
        time.sleep(max(0, 4 - (time.monotonic() - start)))
        crash = crash_victim(paths, survivors_only=True)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        restart_victim()
    return (cut_done - start) if cut_done else float("inf"), crash


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    paths = dl.sockets()
    all_back(paths)
    base, cut_times, crash_times = [], [], []
    for i in range(args.runs):
        base.append(crash_victim(paths))
        restart_victim()
        all_back(paths)
        print("  baseline run {}: {:.2f} s".format(i + 1, base[-1]), flush=True)
    for i in range(args.runs):
        cut, crash = cut_run(paths)
        cut_times.append(cut)
        crash_times.append(crash)
        print("  cut run {}: lab-ctrl3's APIs out on the survivors {:.2f} s, nova/lab-ctrl2 crash drained {:.2f} s".format(i + 1, cut, crash), flush=True)
        all_back(paths)
    p95 = dl.p95
    print("\nwith lab-ctrl3's link cut ({} runs each, seconds)".format(args.runs))
    print("{:<58} {:>7} {:>7}".format("what", "median", "p95"))
    print("{:<58} {:>7.2f} {:>7.2f}".format("crash drained, whole site (baseline)", statistics.median(base), p95(base)))
    print("{:<58} {:>7.2f} {:>7.2f}".format("crash drained on the survivors, lab-ctrl3 cut 4 s before", statistics.median(crash_times), p95(crash_times)))
    print("{:<58} {:>7.2f} {:>7.2f}".format("lab-ctrl3's 7 APIs out of rotation on the survivors", statistics.median(cut_times), p95(cut_times)))
    print("ratio crash-with-cut / baseline (p95): {:.2f}x  (target <= 2x); cut controller's APIs p95 {:.2f} s (target <= 5 s)".format(
        p95(crash_times) / p95(base), p95(cut_times)))


if __name__ == "__main__":
    main()
