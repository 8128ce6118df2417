"""
The loop under an event flood from a hostile minion.

An accepted minion that is not a controller (lab/intruder.py) fires beacon events at RATE a
second (half in its own name, dropped before any pillar work; half forged in lab-ctrl1's
name, each a hint the runner must coalesce). Meanwhile nova's backend on lab-ctrl3 is
SIGKILLed: time until it is out of rotation on every HAProxy, N runs quiet and N runs under
the flood, printed side by side (target: the flood's p95 within 20 % of the quiet p95), and
whether any healthy backend was drained on the forged reports.

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
    quiet, flooded, wrongly = [], [], 0
    try:
        for i in range(args.runs):
            quiet.append(one_crash())
            print("  quiet run {}: {:.2f} s".format(i + 1, quiet[-1]), flush=True)
        for i in range(args.runs):
            flooder = subprocess.Popen([os.path.join(labctl.VENV_BIN, "python"), "-m", "lab.intruder", "flood", "60", str(args.rate), "lab-ctrl1"],
                                       cwd=labctl.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                time.sleep(3)  # the flood under way
                if flooder.poll() is not None:
                    raise SystemExit("the flood stopped: " + flooder.stdout.read())
                flooded.append(one_crash())
                ctrl1_out = any(lab_ctrl1_out(p) for p in dl.sockets().values())
                wrongly += ctrl1_out
            finally:
                labctl.kill_pids([flooder.pid])
            print("  flood run {}: {:.2f} s{}".format(i + 1, flooded[-1], "  HEALTHY nova/lab-ctrl1 OUT OF ROTATION" if ctrl1_out else ""), flush=True)
    finally:
        intruder.stop()
    print("\nnova/lab-ctrl3 crash -> out of rotation on every HAProxy ({} runs each, seconds)".format(args.runs))
    print("{:<44} {:>7} {:>7}".format("condition", "median", "p95"))
    print("{:<44} {:>7.2f} {:>7.2f}".format("quiet", statistics.median(quiet), dl.p95(quiet)))
    print("{:<44} {:>7.2f} {:>7.2f}".format("intruder flood, {} events/s".format(args.rate), statistics.median(flooded), dl.p95(flooded)))
    print("ratio flood/quiet (p95): {:.2f}x (target <= 1.2x); runs where the forged reports took lab-ctrl1 out: {}".format(
        dl.p95(flooded) / dl.p95(quiet), wrongly))


if __name__ == "__main__":
    main()
