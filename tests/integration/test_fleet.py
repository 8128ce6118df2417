"""The fleet simulation (lab/fleet.py) at test size: sites of three controllers on loopback, each
a real salt-minion with the real backend beacon and a real HAProxy in a mount namespace of its
own. Two sites under one master: a crash at one is drained once while the other heartbeats.
bench/fleet.py measures the same at 10 sites, with two masters."""

import json
import os
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
    # The engine shares its workers among the sites: its admission knows each controller's site.
    with open(os.path.join(fleet_lib.master_dir(1), "cache", "openstack_ha-controllers.json")) as fh:
        sites = json.load(fh)["sites"]
    assert sites == {cid: fleet_lib.site_id(i) for i in (1, 2) for cid, _ in fleet_lib.controllers(i)}, sites
    drain = moves[0]
    assert {"bus", "turn", "lock"} <= set(drain["timing"]), drain["timing"]
