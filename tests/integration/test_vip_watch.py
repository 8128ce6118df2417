"""The VIP beacon's watcher against the kernel: in a network namespace of the test's own, an
address added or removed (as keepalived does) is reported at once, from the kernel's address
notice, once, and the tick that follows does not report it again. Only the hand-over to the
minion's channel is replaced by a recorder (the lab's tests see the real event reach the master:
test_haproxy_keepalived.py)."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

NETNS = "oha-t-vipwatch"

CHILD = textwrap.dedent("""
    import json, subprocess, sys, time
    sys.path.insert(0, {repo!r})
    from tests.conftest import load_module
    probe = load_module("_modules/openstack_ha_probe.py", "openstack_ha_probe")
    beacon = load_module("_beacons/openstack_ha_vip.py", "openstack_ha_vip")
    sent = []
    beacon.__salt__ = {{"openstack_ha_probe.vips_held": probe.vips_held}}
    beacon.__opts__ = {{"id": "t"}}
    beacon.__context__ = {{}}
    beacon._send_to_master = lambda opts, event: sent.append(event)
    config = [{{"interval": 1}}, {{"heartbeat": 3600}}, {{"watch": True}},
              {{"vips": {{"public": {{"address": "10.9.0.100", "interface": "vw0"}},
                         "public/ipv6": {{"address": "fd00:9::100", "interface": "vw0"}}}}}}]
    report = {{"first_tick": beacon.beacon(config)}}

    def step(name, command, expected):
        before = len(sent)
        started = time.monotonic()
        subprocess.run(command, check=True)
        while len(sent) < before + expected and time.monotonic() - started < 10:
            time.sleep(0.01)
        report[name] = {{"seconds": time.monotonic() - started, "events": sent[before:]}}
        time.sleep(0.3)  # anything more the watcher would send
        report[name]["events"] = sent[before:]
        report[name]["tick"] = beacon.beacon(config)

    time.sleep(0.2)  # the watcher has subscribed
    step("add4", ["ip", "addr", "add", "10.9.0.100/24", "dev", "vw0"], 1)
    step("add6", ["ip", "addr", "add", "fd00:9::100/64", "dev", "vw0", "nodad"], 1)
    step("other", ["ip", "addr", "add", "10.9.0.7/24", "dev", "vw0"], 0)
    step("del4", ["ip", "addr", "del", "10.9.0.100/24", "dev", "vw0"], 1)
    print(json.dumps(report))
""")


@pytest.fixture
def netns():
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "add", "vw0", "type", "veth", "peer", "name", "vw0-p"], check=True)
        subprocess.run(["ip", "-n", NETNS, "link", "set", "vw0-p", "up"], check=True)
        subprocess.run(["ip", "-n", NETNS, "link", "set", "vw0", "up"], check=True)
        yield ["ip", "netns", "exec", NETNS]
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=True)


def test_a_vip_change_is_reported_at_once_and_once(netns):
    proc = subprocess.run(netns + [sys.executable, "-c", CHILD.format(repo=REPO)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    changes = lambda events: [e for e in events if e["kind"] == "change"]
    assert changes(report["first_tick"]) == []  # the first look is the baseline: nothing to report
    for name, gained, lost, held in (("add4", ["public"], [], ["public"]),
                                     ("add6", ["public/ipv6"], [], ["public", "public/ipv6"]),
                                     ("del4", [], ["public"], ["public/ipv6"])):
        step = report[name]
        assert len(step["events"]) == 1, (name, step)
        event = step["events"][0]
        assert event["watched"] is True and event["held"] == held, (name, event)
        assert [v["vip"] for v in event["gained"]] == gained and [v["vip"] for v in event["lost"]] == lost, (name, event)
        assert step["seconds"] < 5, (name, step)  # a notice, not a tick (no tick runs meanwhile)
        assert changes(step["tick"]) == [], (name, step)  # the tick after it has nothing new
    # An address that is not a VIP: a notice, a look, nothing to report.
    assert report["other"]["events"] == [] and changes(report["other"]["tick"]) == []
