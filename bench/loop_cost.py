"""
What the remediation loop costs each controller, in the lab: CPU of the salt-minion process
(its beacons, their threads and the jobs the master sends it) as a share of one core, over
``--seconds`` per phase, each controller apart, plus the master's processes together.

Phases, measured in the same run:

  baseline     the openstack_ha beacons disabled (a bare salt-minion: the anchors' case);
  idle         every beacon on, nothing wrong (the project at rest);
  backend down nova's backend on lab-ctrl3 stopped (SIGSTOP: it hangs, so every probe of it
               waits its full timeout) and drained by the loop, beacons still probing it;
  watcher      with --watch s: idle again with the backend watcher on (remediation:probe:watch),
               first with every probe on its own connection (probe:keepalive false, 0.7.8's
               way), then with the probes' connections kept (the default), then with nova's
               backend on lab-ctrl3 hung and drained as above.

The target (issue 20): the loop's own cost, a phase minus the baseline, under 2 % of a core.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/loop_cost.py [--seconds 60] [--watch 0.2]
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drain_latency import out_of_rotation, salt, set_watch, sockets  # noqa: E402

from lab import labctl  # noqa: E402

CTRLS = [n for n, _ in labctl.CONTROLLERS]
BEACONS = ("openstack_ha_backends", "openstack_ha_vip", "openstack_ha_galera", "openstack_ha_rabbitmq")
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of ``pid`` and its threads (children that exited and were
    waited for included: the jobs the minion forks)."""
    with open("/proc/{}/stat".format(pid)) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / HZ


def minion_pids():
    out = {}
    for ctrl in CTRLS:
        pid = labctl.ctrl_run(ctrl, ["cat", "/run/salt-minion.pid"], check=False).stdout.strip()
        out[ctrl] = int(pid)
    return out


def measure(seconds):
    """Share of one core, per controller (its minion's process tree) and for the master."""
    groups = {ctrl: labctl.process_tree(pid) for ctrl, pid in minion_pids().items()}
    groups["master"] = [p for m in labctl.master_pids() for p in labctl.process_tree(m)]
    groups = {k: sorted(set(v)) for k, v in groups.items()}

    def total(pids):
        sum_ = 0.0
        for pid in pids:
            try:
                sum_ += cpu_seconds(pid)
            except OSError:
                pass  # exited meanwhile: counted in its parent's cumulative child time if waited for
        return sum_

    before = {k: total(v) for k, v in groups.items()}
    start = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    return {k: 100.0 * (total(v) - before[k]) / wall for k, v in groups.items()}


def beacons(enable):
    for beacon in BEACONS:
        salt("lab-ctrl*", "beacons.enable_beacon" if enable else "beacons.disable_beacon", beacon)


def nova_pid():
    out = labctl.ctrl_run("lab-ctrl3", ["cat", "/run/standin-nova.pid"], check=False).stdout.split()
    return int(out[0]) if out else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--watch", type=float, default=0)
    parser.add_argument("--each", action="store_true", help="also each beacon alone")
    args = parser.parse_args()
    rows = []
    try:
        beacons(False)
        time.sleep(5)
        rows.append(("baseline: beacons off", measure(args.seconds)))
        for beacon in BEACONS if args.each else ():
            salt("lab-ctrl*", "beacons.enable_beacon", beacon)
            time.sleep(3)
            rows.append((beacon + " alone", measure(args.seconds)))
            salt("lab-ctrl*", "beacons.disable_beacon", beacon)
        beacons(True)
        time.sleep(5)
        rows.append(("idle: every beacon on", measure(args.seconds)))
        pid = nova_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline, paths = time.monotonic() + 30, sockets()
            while time.monotonic() < deadline and not all(out_of_rotation(p) for p in paths.values()):
                time.sleep(0.2)
            rows.append(("backend down (hung, drained)", measure(args.seconds)))
        finally:
            os.kill(pid, signal.SIGCONT)
        if args.watch:
            set_watch(args.watch, keepalive=False)
            time.sleep(5)
            rows.append(("watcher {} s, no keep-alive".format(args.watch), measure(args.seconds)))
            set_watch(args.watch)
            time.sleep(5)
            rows.append(("watcher {} s (keep-alive)".format(args.watch), measure(args.seconds)))
            os.kill(pid, signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(out_of_rotation(p) for p in paths.values()):
                    time.sleep(0.2)
                rows.append(("watcher, backend down", measure(args.seconds)))
            finally:
                os.kill(pid, signal.SIGCONT)
    finally:
        beacons(True)
        if args.watch:
            set_watch(0)
    base = rows[0][1]
    print("\nCPU, % of one core, {:.0f} s per phase (salt-minion process tree per controller; the master's processes)".format(args.seconds))
    print("{:<34} {}".format("phase", " ".join("{:>10}".format(k) for k in CTRLS + ["master"])))
    for label, shares in rows:
        print("{:<34} {}".format(label, " ".join("{:>9.2f}%".format(shares[k]) for k in CTRLS + ["master"])))
    print("\nthe loop's own cost (phase minus baseline), worst controller:")
    for label, shares in rows[1:]:
        print("  {:<32} {:.2f}% of a core".format(label, max(shares[k] - base[k] for k in CTRLS)))


if __name__ == "__main__":
    main()
