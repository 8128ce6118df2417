"""
The loop under an event flood from a hostile minion.

An accepted minion that is not a controller (lab/intruder.py) fires beacon events at RATE a
second. Meanwhile nova's backend on lab-ctrl3 is SIGKILLed: time until it is out of rotation
on every HAProxy, N runs each, printed side by side (target: the flood's p95 within 20 % of
the quiet p95), and whether any healthy backend was drained on the forged reports:

- quiet;
- the flood all in the intruder's own name: every event is dropped at the loop's intake, so
  this is the cost of the flood to Salt itself (decrypt, fire, hand to every subscriber of
  the master's bus), the floor no code of this project can lower;
- the flood half in its own name, half forged in lab-ctrl1's (each a hint the loop folds).

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/intruder_flood.py [--runs 5] [--rate 1000]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab import intruder, labctl  # noqa: E402
import drain_latency as dl  # noqa: E402


def lab_ctrl1_out(path):
    """True when nova/lab-ctrl1 (the forged reports' subject, healthy) is drained or down."""
    for line in dl.ask(path, "show servers state nova").splitlines()[2:]:
        f = line.split()
        if len(f) > 6 and f[3] == "lab-ctrl1":
            return f[5] == "0" or int(f[6]) & 0x09 != 0
    return False


def one_crash():
    """A crash of nova on the victim; seconds to out of rotation everywhere; the backend back."""
    took = dl.one_failure("crash")
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()
    intruder.start()
    results, wrongly = {}, 0
    conditions = (("quiet", None), ("flood, all in the intruder's own name", intruder.ID),
                  ("flood, half forged in lab-ctrl1's name", "lab-ctrl1"))
    try:
        for label, forged in conditions:
            runs = results[label] = []
            for i in range(args.runs):
                flooder = None
                if forged:
                    flooder = subprocess.Popen([os.path.join(labctl.VENV_BIN, "python"), "-m", "lab.intruder", "flood", "60",
                                                str(args.rate), forged], cwd=labctl.REPO, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)
                try:
                    if flooder:
                        time.sleep(3)  # the flood under way
                        if flooder.poll() is not None:
                            raise SystemExit("the flood stopped: " + flooder.stdout.read())
                    runs.append(one_crash())
                    ctrl1_out = any(lab_ctrl1_out(p) for p in dl.sockets().values())
                    wrongly += ctrl1_out
                finally:
                    if flooder:
                        labctl.kill_pids([flooder.pid])
                print("  {} run {}: {:.2f} s{}".format(label, i + 1, runs[-1],
                                                      "  HEALTHY nova/lab-ctrl1 OUT OF ROTATION" if ctrl1_out else ""), flush=True)
    finally:
        intruder.stop()
    print("\nnova/lab-ctrl3 crash -> out of rotation on every HAProxy ({} runs each, {} events/s, seconds)".format(args.runs, args.rate))
    print("{:<44} {:>7} {:>7}".format("condition", "median", "p95"))
    for label, _ in conditions:
        print("{:<44} {:>7.2f} {:>7.2f}".format(label, statistics.median(results[label]), dl.p95(results[label])))
    quiet, forged = results[conditions[0][0]], results[conditions[2][0]]
    print("ratio flood/quiet (p95): {:.2f}x (target <= 1.2x); runs where the forged reports took lab-ctrl1 out: {}".format(
        dl.p95(forged) / dl.p95(quiet), wrongly))


if __name__ == "__main__":
    main()
