"""The loop's admission of beacon events (``_utils/openstack_ha_admit.py``): who is dropped, what
is folded, one call at a time per reporter and beacon."""

import json
import os
import time

import pytest

from tests.conftest import load_module

admit = load_module("_utils/openstack_ha_admit.py", "openstack_ha_admit")

TAG = "salt/beacon/{}/openstack_ha_backends/change"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def gate(tmp_path):
    (tmp_path / admit.MAP_FILE).write_text(json.dumps({"controllers": ["c1", "c2", "c3"]}))
    return admit.Admission(str(tmp_path), clock=Clock())


def change(service, stamp="2026-12-03T10:00:00.000000"):
    return {"kind": "change", "changes": [{"service": service, "state": "down"}], "_stamp": stamp}


@pytest.mark.parametrize("tag", ["salt/beacon/c1", "salt/job/1/ret/c1", "salt/beacon/c1/status/x", "salt/beacon//openstack_ha_vip/"])
def test_a_tag_that_is_not_one_of_our_beacons_is_dropped(gate, tag):
    assert gate.offer(tag, {})[0] == "drop"


def test_a_reporter_that_is_not_a_controller_is_dropped(gate):
    assert gate.offer(TAG.format("intruder"), change("nova")) == ("drop", "event from a minion that is not a controller")
    assert gate.waiting == {}


def test_without_a_fresh_map_every_reporter_is_admitted(tmp_path):
    gate = admit.Admission(str(tmp_path))
    assert gate.offer(TAG.format("anyone"), change("nova"))[0] == "queue"
    (tmp_path / admit.MAP_FILE).write_text(json.dumps({"controllers": ["c1"]}))
    old = time.time() - admit.MAP_MAX_AGE - 5
    os.utime(tmp_path / admit.MAP_FILE, (old, old))
    assert gate.offer(TAG.format("someone"), change("nova"))[0] == "queue"


def test_a_flood_in_a_controllers_name_is_folded_into_the_waiting_call(gate):
    assert gate.offer(TAG.format("c1"), change("nova", "s1")) == ("queue", ("c1", "openstack_ha_backends"))
    for i in range(1000):
        assert gate.offer(TAG.format("c1"), change("nova", "s{}".format(i + 2)))[0] == "folded"
    # another controller's report is never queued behind the flood
    assert gate.offer(TAG.format("c2"), change("nova"))[0] == "queue"
    tag, data, _ = gate.take(("c1", "openstack_ha_backends"))
    assert tag == TAG.format("c1")
    assert data["kind"] == "change" and data["changes"] == [{"service": "nova"}]
    assert data["_stamp"] == "s1001"  # the check starts after the newest folded event arrived


def test_folded_events_naming_several_services_check_the_whole_site(gate):
    gate.offer(TAG.format("c1"), {"kind": "heartbeat", "view": {}})
    gate.offer(TAG.format("c1"), change("nova"))
    gate.offer(TAG.format("c1"), change("glance"))
    _, data, _ = gate.take(("c1", "openstack_ha_backends"))
    assert data["kind"] == "change" and data["changes"] == []


def test_one_call_at_a_time_per_reporter_and_beacon_and_a_gap_between_them(gate):
    key = ("c1", "openstack_ha_backends")
    assert gate.offer(TAG.format("c1"), change("nova"))[0] == "queue"
    gate.take(key)
    assert gate.finish(key) is None  # nothing waited: nothing to hand on
    assert gate.offer(TAG.format("c1"), change("nova"))[0] == "queue"
    gate.take(key)
    # while it runs, the next event waits, and the ones after it are folded into it
    assert gate.offer(TAG.format("c1"), change("nova"))[0] == "later"
    assert gate.offer(TAG.format("c1"), change("nova"))[0] == "folded"
    gate.clock.now += 0.1
    assert gate.finish(key) == pytest.approx(admit.MIN_GAP - 0.1)
    gate.take(key)
    gate.clock.now += 5
    assert gate.offer(TAG.format("c1"), change("nova"))[0] == "later"
    assert gate.finish(key) == 0.0


def test_a_taken_entry_is_gone(gate):
    assert gate.take(("c1", "openstack_ha_backends")) is None


def test_a_malformed_event_is_admitted_as_it_is_and_the_runner_judges_it(gate):
    assert gate.offer(TAG.format("c1"), "not a dict")[0] == "queue"
    assert gate.offer(TAG.format("c1"), {"changes": "nope"})[0] == "folded"
    _, data, _ = gate.take(("c1", "openstack_ha_backends"))
    assert data == "not a dict"


def test_the_waiting_table_is_bounded(tmp_path):
    gate = admit.Admission(str(tmp_path))  # no map: every id admitted
    for i in range(admit.MAX_WAITING):
        assert gate.offer(TAG.format("m{}".format(i)), {})[0] == "queue"
    assert gate.offer(TAG.format("one-more"), {}) == ("drop", "too many reporters waiting")


def test_a_report_waits_to_be_kept_once_per_reporter_and_beacon_the_newest_winning(gate):
    vip = "salt/beacon/c1/openstack_ha_vip/change"
    assert gate.offer_report(("c1", "openstack_ha_vip"), vip, {"report": 1}) is True  # the caller submits take_report
    for i in range(1000):  # a flood in c1's name: one waiting entry, never a queue
        assert gate.offer_report(("c1", "openstack_ha_vip"), vip, {"report": i + 2}) is False
    assert gate.offer_report(("c2", "openstack_ha_vip"), vip.replace("c1", "c2"), {"report": "x"}) is True
    assert gate.take_report(("c1", "openstack_ha_vip")) == (vip, {"report": 1001})
    assert gate.take_report(("c1", "openstack_ha_vip")) is None
    assert gate.offer_report(("c1", "openstack_ha_vip"), vip, {"report": 1002}) is True  # taken: the next one is submitted again
    # The same controller's backend report waits apart from its VIP report.
    backends = "salt/beacon/c1/openstack_ha_backends/change"
    assert gate.offer_report(("c1", "openstack_ha_backends"), backends, {"report": "b"}) is True
    assert gate.take_report(("c1", "openstack_ha_backends")) == (backends, {"report": "b"})
    assert gate.take_report(("c1", "openstack_ha_vip")) == (vip, {"report": 1002})


def test_the_reports_kept_at_arrival_are_a_vip_events_and_a_backend_changes():
    vip, backends = ("c1", "openstack_ha_vip"), ("c1", "openstack_ha_backends")
    assert admit.report_to_keep(vip, {"kind": "heartbeat", "report": {"body": "", "sig": ""}})
    assert admit.report_to_keep(backends, {"kind": "change", "report": {"body": "", "sig": ""}})
    assert not admit.report_to_keep(backends, {"kind": "heartbeat", "report": {"body": "", "sig": ""}})
    assert not admit.report_to_keep(("c1", "openstack_ha_galera"), {"kind": "change", "report": {}})
    assert not admit.report_to_keep(vip, {"kind": "change", "report": None})
    assert not admit.report_to_keep(vip, "not a dict")


def test_a_taken_entry_says_when_its_newest_event_was_received_and_the_worker_thread_carries_its_turn(gate):
    key = ("c1", "openstack_ha_backends")
    gate.offer(TAG.format("c1"), change("nova"))
    gate.clock.now += 2.0
    gate.offer(TAG.format("c1"), change("glance", "2026-12-03T10:00:02.000000"))  # folded: the newest counts, as its stamp
    tag, data, received = gate.take(key)
    assert tag == TAG.format("c1") and received == 102.0 and data["_stamp"] == "2026-12-03T10:00:02.000000"
    assert admit.current_turn() is None
    gate.mark_turn(received, 103.5)
    try:
        assert admit.current_turn() == (102.0, 103.5)
    finally:
        gate.mark_turn(None, None)
    assert admit.current_turn() is None
    assert gate.take(key) is None


def test_an_events_turn_belongs_to_its_controllers_site(tmp_path):
    path = tmp_path / admit.MAP_FILE
    path.write_text(json.dumps({"controllers": ["c1", "d1"], "sites": {"c1": "site-a", "d1": "site-b", "x": 5}}))
    gate = admit.Admission(str(tmp_path))
    assert gate.group("c1") == ("site", "site-a") and gate.group("d1") == ("site", "site-b")
    assert gate.group("x") == ("reporter", "x")  # not a site's name: its own group
    assert gate.group("stranger") == ("reporter", "stranger")
    path.write_text(json.dumps({"controllers": ["c1"]}))  # an older runner's map: no sites
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert gate.group("c1") == ("reporter", "c1")
