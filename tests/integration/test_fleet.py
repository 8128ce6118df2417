"""The fleet simulation (lab/fleet.py) at test size: sites of three controllers on loopback, each
a real salt-minion with the real backend beacon and a real HAProxy in a mount namespace of its
own. Two sites under one master: a crash at one is drained once while the other heartbeats.
The syndic layout: a top master over one regional master (with its salt-syndic) carrying one
site; the regional master's loop drains, the top master reaches the controllers through the
syndic and sees their events, and decides nothing. bench/fleet.py measures the same at 10
sites, with two masters."""

import time

import pytest

from lab import fleet as fleet_lib
from lab import labctl


def drained(fleet, cid, state):
    states = fleet.admin_state(cid)
    return len(states) == 3 and set(states.values()) == {state}


def crash_and_restore(fleet, cid):
    """Crash ``cid``'s API, wait until drained on its site's three HAProxies, revive it, wait
    until restored. Returns the drains and restores recorded since the crash."""
    index = int(cid[5:7])
    labctl.wait_for(lambda: drained(fleet, cid, "ready"), 120, "nova/%s ready everywhere" % cid)
    started = time.time()
    fleet.crash(cid)
    try:
        labctl.wait_for(lambda: drained(fleet, cid, "drain"), 30, "nova/%s drained on its site's HAProxies" % cid)
    finally:
        fleet.revive(cid)
    labctl.wait_for(lambda: drained(fleet, cid, "ready"), 60, "nova/%s restored" % cid)
    time.sleep(2)
    return [d for d in fleet.records(index)["decisions"] if d["time"] >= started and d.get("backend") == cid
            and d["what"] in ("drain", "restore")]


@pytest.fixture
def two_sites():
    fleet = fleet_lib.Fleet(2)
    try:
        fleet.up(progress=lambda _: None)
        yield fleet
    finally:
        fleet_lib.down()


def test_a_fault_at_one_site_of_a_fleet_is_drained_once(two_sites):
    moves = crash_and_restore(two_sites, "fleet01-c2")
    assert [d["what"] for d in moves] == ["drain", "restore"], moves
    # The other site heartbeated meanwhile and was left alone.
    assert not [d for d in two_sites.records(2)["decisions"] if d["what"] in ("drain", "restore")]


@pytest.fixture
def syndic_site():
    fleet = fleet_lib.Fleet(1, layout="syndic")
    try:
        fleet.up(progress=lambda _: None)
        yield fleet
    finally:
        fleet_lib.down()


def test_a_syndic_carries_one_site(syndic_site):
    import salt.config
    import salt.utils.event

    # The top master reaches the site's controllers through the syndic.
    assert syndic_site.all_answer(1)
    opts = salt.config.master_config(fleet_lib.os.path.join(fleet_lib.master_dir(1), "etc", "master"))
    bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
    bus.subscribe("salt/beacon/")
    try:
        moves = crash_and_restore(syndic_site, "fleet01-c3")
        assert [d["what"] for d in moves] == ["drain", "restore"], moves
        # The regional master decided; the top master (no loop) decided nothing.
        assert {d["master"] for d in moves} == {"fleet-master-2"}
        # Its beacons' events reached the top master too (the syndic forwards them).
        seen, deadline = [], time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            event = bus.get_event(wait=1, full=True)
            if event and "/openstack_ha_backends/" in event["tag"]:
                seen.append(event["tag"])
        assert seen, "no beacon event of the site reached the top master"
    finally:
        bus.destroy()
