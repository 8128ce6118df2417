"""
VIP failover time in the lab: from a hard failure on the VIP holder to the VIP answering from
another controller's interface, median and p95 over N runs.

Failures: keepalived SIGKILLed on the holder; HAProxy (master and worker) SIGKILLed on the holder.
Settings: the project's defaults (VRRPv3, advert_int 0.2, admin-socket track script) against
keepalived at advert_int 1, the anchors' default, measured in the same run.

Usage: lab/labctl up && .venv/bin/python bench/vip_failover.py [--runs 10]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab import labctl  # noqa: E402

VIP = "10.213.0.100"
HOLDER = "lab-ctrl1"
OTHERS = [n for n, _ in labctl.CONTROLLERS if n != HOLDER]


def apply(target, advert_int):
    pillar = json.dumps({"openstack_ha": {"keepalived": {"advert_int": advert_int}}})
    proc = labctl.salt_cmd("salt", "--out=json", target, "state.apply", "openstack_ha", "pillar=" + pillar, check=False)
    if proc.returncode != 0:
        raise SystemExit("state.apply failed on {}: {}".format(target, proc.stdout[-2000:]))


def holds(ctrl):
    out = subprocess.run(["ip", "-n", labctl.netns(ctrl), "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True, text=True).stdout
    return (" %s/" % VIP) in out


def wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def pid_of(ctrl, pidfile):
    out = labctl.ctrl_run(ctrl, ["cat", pidfile], check=False).stdout.split()
    return int(out[0]) if out and out[0].isdigit() else None


def kill_keepalived():
    # The VRRP child first: killed after its parent it would notice and resign gracefully
    # (priority-0 advert), which is not the hard failure measured here.
    for pidfile in ("/run/vrrp.pid", "/run/keepalived.pid"):
        pid = pid_of(HOLDER, pidfile)
        if pid and labctl.alive(pid):
            os.kill(pid, signal.SIGKILL)


def kill_haproxy():
    master = pid_of(HOLDER, "/run/haproxy.pid")
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    for pid in [master] + [int(c) for c in children]:
        os.kill(pid, signal.SIGKILL)


def one_run(kill, advert_int):
    if not wait(lambda: holds(HOLDER) and not any(holds(o) for o in OTHERS), 20):
        raise SystemExit("{} did not take the VIP back".format(HOLDER))
    time.sleep(1.0)
    start = time.monotonic()
    kill()
    if not wait(lambda: any(holds(o) for o in OTHERS), 15):
        raise SystemExit("the VIP did not move within 15 s")
    elapsed = time.monotonic() - start
    # Clean up what a hard kill leaves (the VIP stays on an interface keepalived can't tidy).
    if kill is kill_keepalived:
        labctl.ctrl_run(HOLDER, ["sh", "-c", "ip addr del %s/24 dev eth0 2>/dev/null; ip addr del 10.213.0.101/24 dev eth0 2>/dev/null; ip addr del fd00:213::100/64 dev eth0 2>/dev/null; rm -f /run/keepalived.pid /run/vrrp.pid; true" % VIP])
    apply(HOLDER, advert_int)
    return elapsed


def summary(samples):
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def main():
    parser = argparse.ArgumentParser(description="VIP failover benchmark (lab)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    results = []
    for label, advert in (("project defaults (VRRPv3, advert_int 0.2)", 0.2), ("anchors (advert_int 1)", 1)):
        apply("lab-ctrl*", advert)
        for failure, kill in (("keepalived SIGKILL", kill_keepalived), ("HAProxy SIGKILL", kill_haproxy)):
            samples = []
            for i in range(args.runs):
                samples.append(one_run(kill, advert))
                print("  {:<44} {:<20} run {:>2}: {:.3f} s".format(label, failure, i + 1, samples[-1]), flush=True)
            results.append((label, failure, samples))
    apply("lab-ctrl*", 0.2)
    print("\nVIP failover, {} runs each (seconds from kill to VIP on another controller)".format(args.runs))
    print("{:<44} {:<20} {:>8} {:>8}".format("settings", "failure", "median", "p95"))
    baseline = {}
    for label, failure, samples in results:
        med, p95 = summary(samples)
        baseline.setdefault(failure, med if "anchors" in label else None)
        print("{:<44} {:<20} {:>8.3f} {:>8.3f}".format(label, failure, med, p95))
    for failure in ("keepalived SIGKILL", "HAProxy SIGKILL"):
        ours = [summary(s)[0] for name, f, s in results if f == failure and "project" in name][0]
        anchor = [summary(s)[0] for name, f, s in results if f == failure and "anchors" in name][0]
        print("ratio (anchors / project), {}: {:.1f}x faster".format(failure, anchor / ours))


if __name__ == "__main__":
    main()
