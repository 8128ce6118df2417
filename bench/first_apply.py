"""
Convergence of the headline apply on bare controllers: N times, the lab down, the lab up
(bare controllers: nothing installed runs, no data), then `state.apply openstack_ha` exactly
once, in one of three orders:

- ``all``: `salt '*ctrl*' state.apply openstack_ha` (every controller at once);
- ``serial``: one controller at a time, lab-ctrl1 first;
- ``first-last``: one controller at a time, lab-ctrl1 last (its joiners come up alone first).

A run converged when every controller's apply succeeded (and, after ``serial`` and
``first-last``, no failed state anywhere). Prints converged runs out of N, time to converge
(median, max) and, for a run that did not, which states failed and why.

Serial orders apply each controller with a bounded wait only where the design needs one: a
Galera joiner applied before the bootstrap node waits for it (``galera:startup_timeout``), so
those orders run the controllers in background jobs, started one after the other.

Usage: .venv/bin/python bench/first_apply.py [--runs 5] [--orders all,serial,first-last]
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab import labctl  # noqa: E402

CTRLS = [name for name, _ in labctl.CONTROLLERS]


def apply(target):
    """state.apply on ``target``; returns {minion: {state id: comment}} of failed states
    ({} = converged) and the parsed answers."""
    proc = labctl.salt_cmd("salt", "--out=json", "--static", "-t", "900", target, "state.apply", "openstack_ha",
                           timeout=1200, check=False)
    try:
        data = json.loads(proc.stdout or "{}")
    except ValueError:
        return {target: "no JSON from salt (rc {}): {}".format(proc.returncode, (proc.stdout + proc.stderr)[-500:])}
    failed = {}
    for minion in ([target] if target != "*ctrl*" else CTRLS):
        result = data.get(minion)
        if not isinstance(result, dict):
            failed[minion] = result if result is not None else "no answer"
            continue
        bad = {k.split("_|-")[1]: (r.get("comment") or "")[:300] for k, r in result.items() if isinstance(r, dict) and r.get("result") is False}
        if bad:
            failed[minion] = bad
    return failed


def run_order(order):
    """One bare-lab convergence in ``order``; returns (seconds, failed)."""
    labctl.down()
    labctl.up()
    started = time.monotonic()
    if order == "all":
        failed = apply("*ctrl*")
    else:
        sequence = CTRLS if order == "serial" else CTRLS[1:] + CTRLS[:1]
        failed, threads = {}, []
        for ctrl in sequence:
            thread = threading.Thread(target=lambda c=ctrl: failed.update(apply(c)))
            thread.start()
            threads.append(thread)
            time.sleep(5)  # one after the other, as an operator would start them
        for thread in threads:
            thread.join(1500)
    return time.monotonic() - started, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--orders", default="all,serial,first-last")
    args = parser.parse_args()
    rows = []
    try:
        for order in args.orders.split(","):
            times, failures = [], []
            for i in range(args.runs):
                took, failed = run_order(order)
                print("  {:<11} run {}/{}: {} in {:.0f} s{}".format(order, i + 1, args.runs, "converged" if not failed else "FAILED", took,
                                                                   "" if not failed else "  " + json.dumps(failed)[:600]), flush=True)
                (failures.append(failed) if failed else times.append(took))
            rows.append((order, len(times), args.runs, times, failures))
    finally:
        labctl.down()
    print("\n{:<11} {:>10} {:>12} {:>9}".format("order", "converged", "median (s)", "max (s)"))
    for order, ok, total, times, _ in rows:
        print("{:<11} {:>7}/{:<2} {:>12} {:>9}".format(order, ok, total, "{:.0f}".format(statistics.median(times)) if times else "-",
                                                      "{:.0f}".format(max(times)) if times else "-"))
    return 0 if all(ok == total for _, ok, total, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
