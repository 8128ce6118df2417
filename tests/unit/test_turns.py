"""The loop engine's workers (``_utils/openstack_ha_turns.py``): every turn runs, and a quiet
site's turn waits only for the next free worker, not behind a busy site's queue."""

import threading
import time

import pytest

from tests.conftest import load_module

turns = load_module("_utils/openstack_ha_turns.py", "openstack_ha_turns")


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_quiet_sites_turn_goes_before_a_busy_sites_queue():
    pool = turns.pool(2, "test")
    release, order, lock = threading.Event(), [], threading.Lock()

    def turn(name):
        with lock:
            order.append(name)
        assert release.wait(10)

    for i in range(6):  # the busy site: two turns run, four wait
        pool.submit("busy", turn, "busy{}".format(i))
    assert wait_for(lambda: pool.snapshot() == {"running": {"busy": 2}, "waiting": {"busy": 4}})
    pool.submit("quiet", turn, "quiet0")
    release.set()
    assert wait_for(lambda: len(order) == 7 and pool.snapshot() == {"running": {}, "waiting": {}})
    # The first worker that came free took the quiet site's turn, ahead of the four waiting.
    assert order[:2] == ["busy0", "busy1"] and order[2] == "quiet0", order
    assert order[3:] == ["busy2", "busy3", "busy4", "busy5"]  # a group's own turns keep their order


def test_among_sites_with_as_many_turns_running_the_longest_waiting_goes_first():
    pool = turns.pool(1, "test")
    gate, order = threading.Event(), []
    pool.submit("a", gate.wait, 10)
    assert wait_for(lambda: pool.snapshot()["running"] == {"a": 1})
    for name in ("b1", "c1", "b2", "c2", "a1"):
        pool.submit(name[0], order.append, name)
    gate.set()
    assert wait_for(lambda: len(order) == 5)
    assert order == ["b1", "c1", "a1", "b2", "c2"], order  # round robin: b, c, then a (it ran last)


def test_a_failing_turn_is_logged_and_the_worker_goes_on(caplog):
    pool = turns.pool(1, "test")
    done = threading.Event()
    pool.submit("s", lambda: 1 / 0)
    pool.submit("s", done.set)
    assert done.wait(10)
    assert wait_for(lambda: "a turn of s failed" in caplog.text)


def test_a_pool_needs_a_worker():
    with pytest.raises(ValueError, match="at least one worker"):
        turns.pool(0)
