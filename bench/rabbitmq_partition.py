"""
How soon the remediation loop knows of a RabbitMQ partition left standing, and heals it, in the lab.

The site runs with ``partition_handling: ignore`` for the benchmark (set in the nodes' VMs, as
test_rabbitmq.py does; put back to pause_minority at the end): nobody pauses, so when the
peers meet again both sides run with Mnesia split, and only someone who asks sees it. Each run
cuts lab-ctrl3 off its RabbitMQ peers (``--cut``):

  distribution  (default) lab-ctrl3's node drops its Erlang distribution connections to its
                peers: a network loss shorter than a beacon tick; they reconnect at once and
                Mnesia splits; Salt is untouched;
  link          lab-ctrl3's link down until lab-ctrl1's node dropped it (net_ticktime), then
                up: Salt's connections to lab-ctrl3 were cut too and resume only after TCP's
                retransmission backoff (about 10 s here), which then bounds every figure.

Measured from the cut's end: seconds until the master fires
``openstack_ha/alert/rabbitmq_partition`` and until ``openstack_ha/rabbitmq/healed`` (the loop
restarted the minority's app, which takes RabbitMQ 5-8 s); when RabbitMQ itself logged the
partition (Mnesia's ``inconsistent_database``) is printed per run. Median and p95 over N runs, for:

  project   every node's management API on 127.0.0.1 (the beacon every tick, the master's
            watch through ``quick_report``): partitions in milliseconds;
  previous  the API refusing openstack_ha's account (its password spoiled for the series, so
            every reader falls back as 0.7.10 did): the metrics endpoint every tick, then
            ``rabbitmqctl cluster_status`` (an Erlang VM a call) when a peer came back.

The account's password is put back with ``state.apply openstack_ha.rabbitmq`` on lab-ctrl1.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/rabbitmq_partition.py [--runs 10] [--previous-runs 5] [--cut distribution|link]
"""

import argparse
import datetime
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drain_latency import p95  # noqa: E402
from rabbitmq_detection import COOLDOWN, salt, wait_cluster  # noqa: E402
from rabbitmq_node_loss import ADDRESS, CTRLS  # noqa: E402

from lab import labctl  # noqa: E402
from tests.conftest import load_module  # noqa: E402
from tests.integration.labtools import MasterEvents  # noqa: E402

LINK, CUT = "oha-ctrl3-h", "lab-ctrl3"
CAP = 90
MONITOR = "openstack-ha-monitor"


def partition_handling(mode):
    """``cluster_partition_handling`` in every node's VM (the node monitor reads it when it
    meets a partition); the files keep the pillar's value."""
    for ctrl in CTRLS:
        labctl.ctrl_run(ctrl, ["rabbitmqctl", "-q", "eval"],
                        input_text="application:set_env(rabbit, cluster_partition_handling, %s)." % mode)


def sees(ctrl, peer):
    """True when ``ctrl``'s node is connected to ``peer``'s (its own metrics endpoint, over the
    lab's bridge: no Erlang VM started); None when the endpoint does not answer."""
    view = load_module("_utils/openstack_ha_rabbit_view.py", "openstack_ha_rabbit_view")
    try:
        with urllib.request.urlopen("http://{}:15692/metrics".format(ADDRESS[ctrl]), timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return "rabbit@" + peer in view.from_metrics(text, "rabbit@" + ctrl, [])["running_nodes"]


def no_partition_left():
    """True when no node's ``rabbitmqctl cluster_status`` lists a partition (seconds a call)."""
    import json

    for ctrl in CTRLS:
        out = labctl.ctrl_run(ctrl, ["rabbitmqctl", "-q", "cluster_status", "--formatter", "json"], check=False).stdout
        try:
            if (json.loads(out).get("partitions") or {}) not in ({}, []):
                return False
        except ValueError:
            return False
    return True


def formed_at(since):
    """Epoch seconds of the first ``inconsistent_database`` line (Mnesia meeting a partition)
    at or after ``since`` in lab-ctrl1's and lab-ctrl3's RabbitMQ logs: when RabbitMQ itself
    knew; None when neither logged one."""
    found = []
    for ctrl in ("lab-ctrl1", CUT):
        log = "/var/log/rabbitmq/rabbit@{}.log".format(ctrl)
        out = labctl.ctrl_run(ctrl, ["grep", "-h", "inconsistent_database", log], check=False).stdout
        for line in out.splitlines():
            try:
                at = datetime.datetime.fromisoformat(line.split(" [")[0]).timestamp()
            except ValueError:
                continue
            if at >= since:
                found.append(at)
    return min(found) if found else None


def first(events, tag, since):
    found = [at for at, t, data in list(events.seen) if t == tag and at >= since]
    return min(found) if found else None


def cut_link():
    """lab-ctrl3's link down until lab-ctrl1's node dropped it (net_ticktime), then up again;
    Salt's own connections to lab-ctrl3 are cut too. Returns when the link is back."""
    subprocess.run(["ip", "link", "set", LINK, "down"], check=True)
    try:
        deadline = time.monotonic() + CAP
        while sees("lab-ctrl1", CUT) is not False and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        subprocess.run(["ip", "link", "set", LINK, "up"], check=True)


def cut_distribution():
    """lab-ctrl3's node drops its Erlang distribution connections to its RabbitMQ peers (a
    network loss shorter than a beacon tick, Salt untouched): they reconnect at once, and
    Mnesia, having seen each other go, splits."""
    labctl.ctrl_run(CUT, ["rabbitmqctl", "-q", "eval"],
                    input_text='[erlang:disconnect_node(N) || N <- nodes(), lists:prefix("rabbit@", atom_to_list(N))].')


CUTS = {"distribution": cut_distribution, "link": cut_link}


def one_run(cut):
    """Seconds from the cut's end to the loop's partition alert and to the end of its heal (the
    minority's app restarted: ``openstack_ha/rabbitmq/healed``), CAP for what did not come;
    seconds from the cut's end to RabbitMQ's own log of the partition."""
    events = MasterEvents()
    events.collect("openstack_ha/")
    try:
        CUTS[cut]()
        back = time.time()
        deadline = time.monotonic() + CAP
        alert = healed = None
        while time.monotonic() < deadline and healed is None:
            time.sleep(0.1)
            alert = alert or first(events, "openstack_ha/alert/rabbitmq_partition", back)
            healed = first(events, "openstack_ha/rabbitmq/healed", back)
        alert = alert or first(events, "openstack_ha/alert/rabbitmq_partition", back)
        # Not measured: the loop's check finding the partition gone, which makes the next
        # run's alert news (a standing condition is announced again only now and then).
        deadline = time.monotonic() + CAP
        while time.monotonic() < deadline and first(events, "openstack_ha/resolved/rabbitmq_partition", alert or back) is None:
            time.sleep(0.2)
        formed = formed_at(back - 1.0)
        return (tuple(float(CAP) if at is None else at - back for at in (alert, healed))
                + (None if formed is None else formed - back,))
    finally:
        subprocess.run(["ip", "link", "set", LINK, "up"], check=False)
        events.close()


def settle():
    """The cluster whole again, no partition left, every node on ``partition_handling:
    ignore`` (a healed node's app read its config file again at its restart), and the loop
    out of its cooldown."""
    wait_cluster()
    partition_handling("ignore")
    deadline = time.monotonic() + 180
    while not no_partition_left():
        if time.monotonic() > deadline:
            raise SystemExit("a partition is still listed 180 s after the run")
        time.sleep(2)
    time.sleep(COOLDOWN)


def series(label, runs, cut):
    samples = []
    for i in range(runs):
        alert, healed, forming = one_run(cut)
        samples.append((alert, healed))
        print("  {:<9} run {:>2}: the loop's alert {:.2f} s, the minority's app restarted by the loop {:.2f} s; "
              "RabbitMQ logged the partition {}".format(label, i + 1, alert, healed,
                                                        "after {:.2f} s".format(forming) if forming is not None else "(no log line found)"),
              flush=True)
        settle()
    return samples


def spoil_monitor_password():
    """The management API refuses openstack_ha's account until the state puts it back."""
    labctl.ctrl_run("lab-ctrl1", ["rabbitmqctl", "-q", "change_password", MONITOR], input_text=secrets.token_hex(16) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--previous-runs", type=int, default=5)
    parser.add_argument("--cut", choices=sorted(CUTS), default="distribution",
                        help="distribution: lab-ctrl3's node drops its peers for an instant (Salt untouched); link: lab-ctrl3's "
                             "link down past net_ticktime (Salt's connections too: they resume after TCP's retransmission backoff)")
    args = parser.parse_args()
    rows = []
    partition_handling("ignore")
    try:
        settle()
        rows.append(("project: management API", series("project", args.runs, args.cut)))
        if args.previous_runs:
            spoil_monitor_password()
            try:
                rows.append(("previous: metrics, then rabbitmqctl", series("previous", args.previous_runs, args.cut)))
            finally:
                done = salt("lab-ctrl1", "state.apply", "openstack_ha.rabbitmq")
                if done.returncode:
                    print("state.apply openstack_ha.rabbitmq on lab-ctrl1 failed: put the account's password back by hand",
                          file=sys.stderr)
    finally:
        partition_handling("pause_minority")
    print("\nRabbitMQ partition left standing (partition_handling ignore, cut: {}): seconds from the cut's end (cap {})".format(args.cut, CAP))
    print("{:<38} {:>5} {:>14} {:>14}".format("settings", "runs", "alert med/p95", "healed med/p95"))
    for label, samples in rows:
        alerts, heals = [a for a, _ in samples], [h for _, h in samples]
        print("{:<38} {:>5} {:>6.2f} /{:>6.2f} {:>6.2f} /{:>6.2f}".format(
            label, len(samples), statistics.median(alerts), p95(alerts), statistics.median(heals), p95(heals)))


if __name__ == "__main__":
    main()
