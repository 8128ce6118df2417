"""
What the remediation loop costs each controller, in the lab: CPU of the salt-minion process
(its beacons, their threads and the jobs the master sends it) as a share of one core, over
``--seconds`` per phase, each controller apart, plus the master's processes together.

Phases, measured in the same run:

  baseline     the openstack_ha beacons disabled (a bare salt-minion: the anchors' case);
  on           every beacon on, nothing wrong (the project at rest); with --watch s, the
               backend watcher on as well (remediation:probe:watch, a site's default is 0.3);
  backend down nova's backend on lab-ctrl3 stopped (SIGSTOP: it hangs, so every probe of it
               waits its full timeout) and drained by the loop, beacons still probing it.

``--repeat N`` alternates the baseline and the "on" phase N times: the loop's own cost (an "on"
phase minus the baseline just before it) is printed for each pair, with the mean, so that a
difference of a few tenths of a point is told from the machine's drift. ``--compare-keepalive``
adds a phase with every probe on its own connection (probe:keepalive false, 0.7.8's way).

The target (issue 20): the loop's own cost under 2 % of a core.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/loop_cost.py [--seconds 60] [--watch 0.3] [--repeat 3]
"""

import argparse
import os
import signal
import statistics
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


def settle_off(seconds=8):
    """Disable the beacons and wait until the backend watcher noticed (it stops after three
    missed ticks: 6 s at the lab's 2 s interval)."""
    beacons(False)
    time.sleep(seconds)


def hang_nova_and_measure(seconds):
    """Hang nova's backend on lab-ctrl3 until the loop drained it everywhere, then measure."""
    pid = nova_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline, paths = time.monotonic() + 30, sockets()
        while time.monotonic() < deadline and not all(out_of_rotation(p) for p in paths.values()):
            time.sleep(0.2)
        return measure(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--watch", type=float, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--compare-keepalive", action="store_true")
    parser.add_argument("--each", action="store_true", help="also each beacon alone")
    args = parser.parse_args()
    rows, pairs = [], []
    on_label = "on, watcher {} s".format(args.watch) if args.watch else "on (the tick probes)"
    try:
        if args.watch:
            set_watch(args.watch)
        for turn in range(max(1, args.repeat)):
            settle_off()
            base = measure(args.seconds)
            beacons(True)
            time.sleep(5)
            on = measure(args.seconds)
            rows += [("baseline #{}: beacons off".format(turn + 1), base), ("{} #{}".format(on_label, turn + 1), on)]
            pairs.append((base, on))
            print("pair {}: {}".format(turn + 1, " ".join("{} {:+.2f}".format(k, on[k] - base[k]) for k in CTRLS)), flush=True)
        for beacon in BEACONS if args.each else ():
            settle_off()
            salt("lab-ctrl*", "beacons.enable_beacon", beacon)
            time.sleep(3)
            rows.append((beacon + " alone", measure(args.seconds)))
        beacons(True)
        time.sleep(5)
        rows.append(("backend down (hung, drained)", hang_nova_and_measure(args.seconds)))
        if args.compare_keepalive and args.watch:
            set_watch(args.watch, keepalive=False)
            time.sleep(5)
            rows.append(("watcher, no keep-alive", measure(args.seconds)))
    finally:
        beacons(True)
        if args.watch:
            set_watch(0)
    print("\nCPU, % of one core, {:.0f} s per phase (salt-minion process tree per controller; the master's processes)".format(args.seconds))
    print("{:<34} {}".format("phase", " ".join("{:>10}".format(k) for k in CTRLS + ["master"])))
    for label, shares in rows:
        print("{:<34} {}".format(label, " ".join("{:>9.2f}%".format(shares[k]) for k in CTRLS + ["master"])))
    own = {k: [on[k] - base[k] for base, on in pairs] for k in CTRLS}
    base = pairs[-1][0]
    print("\nthe loop's own cost (an 'on' phase minus the baseline before it), % of a core:")
    for k in CTRLS:
        print("  {:<10} mean {:.2f}  ({})".format(k, statistics.mean(own[k]), ", ".join("{:.2f}".format(v) for v in own[k])))
    print("  worst controller's mean: {:.2f}% ({} pairs of {:.0f} s)".format(max(statistics.mean(v) for v in own.values()),
                                                                          len(pairs), args.seconds))
    for label, shares in rows[2 * len(pairs):]:
        print("  {:<32} {:.2f}% of a core (minus the last baseline), worst controller".format(
            label, max(shares[k] - base[k] for k in CTRLS)))


if __name__ == "__main__":
    main()
