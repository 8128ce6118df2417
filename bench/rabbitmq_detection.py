"""
How soon the remediation loop knows a RabbitMQ node died, in the lab.

A node's Erlang VM is SIGKILLed (the nodes in turn); measured: seconds from the kill until the
master fires ``openstack_ha/alert/rabbitmq_node_down`` naming it (the loop's decision; its
restart follows at once). Median and p95 over N runs, for:

  project   the beacon reads the node's own rabbitmq_prometheus endpoint every tick and the
            master's watch asks every node's endpoint (openstack_ha_rabbitmq.quick_report);
  previous  the beacon's rabbitmqctl report alone, every 20 s (what this project did before:
            each rabbitmqctl call starts an Erlang VM), set with beacons.modify for the run.

Between runs the loop has restarted the node and it is back in the cluster, out of cooldown.
The beacons are put back with ``state.apply openstack_ha.beacons`` at the end.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/rabbitmq_detection.py [--runs 20] [--previous-runs 5]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drain_latency import p95  # noqa: E402
from rabbitmq_node_loss import ADDRESS, CTRLS, beam_pid  # noqa: E402

from lab import labctl  # noqa: E402
from tests.conftest import load_module  # noqa: E402
from tests.integration.labtools import MasterEvents  # noqa: E402

CAP = 120
COOLDOWN = 11  # the lab's remediation cooldown (10 s) and a margin, counted from the alert
ALL = sorted("rabbit@" + c for c in CTRLS)


def whole():
    """True when every node's own metrics endpoint answers and sees all three (from the host,
    over the lab's bridge: no Erlang VM started)."""
    view = load_module("_utils/openstack_ha_rabbit_view.py", "openstack_ha_rabbit_view")
    for ctrl in CTRLS:
        try:
            with urllib.request.urlopen("http://{}:15692/metrics".format(ADDRESS[ctrl]), timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return False
        if view.from_metrics(text, "rabbit@" + ctrl, ALL)["running_nodes"] != ALL:
            return False
    return True


def wait_cluster(timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if whole():
            return
        time.sleep(0.5)
    raise SystemExit("the cluster did not come back to three running nodes")


def salt(*args):
    return subprocess.run([sys.executable, os.path.join(labctl.REPO, "lab", "labctl.py"), "salt"] + list(args),
                          capture_output=True, text=True, timeout=300)


def one_run(ctrl):
    """Seconds from the SIGKILL of ``ctrl``'s RabbitMQ to the loop's alert naming it, and the
    alert's time (``time.monotonic()``)."""
    events = MasterEvents()
    try:
        pid = beam_pid(ctrl)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        alert = events.wait("openstack_ha/alert/rabbitmq_node_down", CAP, lambda e: ctrl in json.dumps(e["data"].get("why")))
        return (time.monotonic() - killed) if alert else float(CAP), time.monotonic()
    finally:
        events.close()


def series(label, runs):
    samples = []
    for i in range(runs):
        ctrl = CTRLS[i % len(CTRLS)]
        seconds, alerted = one_run(ctrl)
        samples.append(seconds)
        print("  {:<10} run {:>2}: {} killed, node-down alert after {:.2f} s".format(label, i + 1, ctrl, seconds), flush=True)
        wait_cluster()  # the loop restarts the node (its restart follows the alert)
        time.sleep(max(0.0, COOLDOWN - (time.monotonic() - alerted)))
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--previous-runs", type=int, default=5)
    args = parser.parse_args()
    wait_cluster()
    time.sleep(COOLDOWN)
    rows = [("project: metrics endpoint every tick", series("project", args.runs))]
    if args.previous_runs:
        try:
            done = salt("*ctrl*", "beacons.modify", "openstack_ha_rabbitmq", json.dumps([{"interval": 20}, {"heartbeat": 60}]))
            if done.returncode:
                raise SystemExit("beacons.modify failed: " + done.stdout + done.stderr)
            time.sleep(25)  # the first rabbitmqctl reports in
            rows.append(("previous: rabbitmqctl every 20 s", series("previous", args.previous_runs)))
        finally:
            salt("*ctrl*", "state.apply", "openstack_ha.beacons")
    print("\nRabbitMQ node SIGKILLed -> the loop's node-down alert (seconds, cap {})".format(CAP))
    print("{:<40} {:>5} {:>7} {:>7}".format("settings", "runs", "median", "p95"))
    for label, samples in rows:
        print("{:<40} {:>5} {:>7.2f} {:>7.2f}".format(label, len(samples), statistics.median(samples), p95(samples)))


if __name__ == "__main__":
    main()
