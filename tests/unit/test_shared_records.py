"""Records and the per-site lock on a store two masters share (``_utils/openstack_ha_records.py``
with ``openstack_ha_cache: redis``), against a real redis-server on a unix socket of the test's
own; and the rule by which a master leaves a backend to another master acting on it."""

import multiprocessing
import os
import signal
import subprocess
import time

import pytest
import salt.config
from salt.exceptions import CommandExecutionError

from tests.conftest import load_module

records = load_module("_utils/openstack_ha_records.py", "openstack_ha_records")
remediate = load_module("_utils/openstack_ha_remediate.py", "openstack_ha_remediate")


@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory):
    """A redis-server of this test alone (no TCP port, no persistence); killed by PID."""
    directory = tmp_path_factory.mktemp("redis")
    sock = str(directory / "redis.sock")
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not open its socket"
            time.sleep(0.05)
        yield sock
    finally:
        proc.kill()
        proc.wait(timeout=10)


class Ctx:
    """What ``records`` needs of the context: the master's options."""

    def __init__(self, opts):
        self.opts = opts


def master_opts(tmp_path, name, sock, driver="redis"):
    opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    opts.update({"id": name, "cachedir": str(tmp_path / name), "openstack_ha_cache": driver,
                 "cache.redis.unix_socket_path": sock})
    os.makedirs(opts["cachedir"], exist_ok=True)
    return opts


def test_two_masters_share_one_record_store(tmp_path, redis_socket):
    one = Ctx(master_opts(tmp_path, "master-1", redis_socket))
    two = Ctx(master_opts(tmp_path, "master-2", redis_socket))
    data = records.load(one, "site-a")
    data["backends"]["nova/c1"] = {"state": "drain", "by": "remediation", "time": 1.0}
    records.store(one, "site-a", data)
    assert records.load(two, "site-a")["backends"] == {"nova/c1": {"state": "drain", "by": "remediation", "time": 1.0}}
    records.keep(two, "site-a", "last_valid_pillar", {"x": 1})
    assert records.fetch(one, "site-a", "last_valid_pillar") == {"x": 1}
    # Each master alone on localfs: nothing shared.
    alone = Ctx(master_opts(tmp_path, "master-3", redis_socket, driver="localfs"))
    assert records.load(alone, "site-a")["backends"] == {}


def test_a_driver_without_a_shared_lock_is_refused_by_name(tmp_path, redis_socket):
    with pytest.raises(CommandExecutionError, match="'consul' is not supported"):
        records.load(Ctx(master_opts(tmp_path, "m", redis_socket, driver="consul")), "site-a")


def _hold(opts, name, seconds, ready):
    with records.lock(Ctx(opts), name):
        ready.set()
        time.sleep(seconds)


def test_the_lock_excludes_another_master(tmp_path, redis_socket):
    """A second master's process waits while the first holds the site's lock."""
    spawn = multiprocessing.get_context("fork")
    ready = spawn.Event()
    holder = spawn.Process(target=_hold, args=(master_opts(tmp_path, "master-1", redis_socket), "site-b", 1.5, ready))
    holder.start()
    try:
        assert ready.wait(30)
        started = time.monotonic()
        with records.lock(Ctx(master_opts(tmp_path, "master-2", redis_socket)), "site-b"):
            waited = time.monotonic() - started
        assert waited > 0.5, "the second master took the lock while the first held it"
        # Another site's lock is independent.
        ready.clear()
    finally:
        holder.join(30)
    assert holder.exitcode == 0


def test_a_dead_holders_lock_frees_after_its_lease_and_a_live_one_is_renewed(tmp_path, redis_socket):
    import redis

    client = redis.Redis(unix_socket_path=redis_socket)
    # Held past three leases by a live holder: renewed, never taken by another.
    with records.redis_lock(client, "t:live", lease=0.6):
        time.sleep(2.0)
        assert not client.set("t:live", "other", nx=True, px=1000)
    assert client.get("t:live") is None  # released
    # A holder killed while holding: the lock is free once its lease ran out.
    spawn = multiprocessing.get_context("fork")
    ready = spawn.Event()

    def hold_forever():
        with records.redis_lock(redis.Redis(unix_socket_path=redis_socket), "t:dead", lease=1.0):
            ready.set()
            time.sleep(600)

    proc = spawn.Process(target=hold_forever)
    proc.start()
    try:
        assert ready.wait(30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        started = time.monotonic()
        with records.redis_lock(client, "t:dead", wait=10):
            waited = time.monotonic() - started
        assert 0.0 <= waited <= 3.0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    with pytest.raises(CommandExecutionError, match="still held"):
        with records.redis_lock(client, "t:busy", wait=30):
            with records.redis_lock(client, "t:busy", wait=0.3):
                pass


# ------------------------------------------------------------- leaving it to the other master

DRAIN = {"action": "drain", "key": "nova/c1"}


def test_a_drain_in_flight_is_left_to_its_round_until_its_lease_ends():
    record = {"state": "drain", "by": "remediation", "time": 100.0, "pending": {"master": "m1", "until": 105.0}}
    assert remediate.settled_elsewhere(record, DRAIN, started_wall=101.0, now=102.0)
    # m1 died mid-action: after the lease, another round acts.
    assert not remediate.settled_elsewhere(record, DRAIN, started_wall=101.0, now=106.0)
    # A restore decided meanwhile waits too (the drain's publish may still be on its way).
    assert remediate.settled_elsewhere(record, {"action": "restore", "key": "nova/c1"}, started_wall=101.0, now=102.0)


def test_a_drain_recorded_after_this_round_began_is_settled_an_older_one_is_not():
    record = {"state": "drain", "by": "remediation", "time": 100.0}
    assert remediate.settled_elsewhere(record, DRAIN, started_wall=99.0, now=101.0)
    assert not remediate.settled_elsewhere(record, DRAIN, started_wall=100.5, now=101.0)
    restore = {"action": "restore", "key": "nova/c1"}
    assert not remediate.settled_elsewhere(record, restore, started_wall=99.0, now=101.0)
    assert not remediate.settled_elsewhere(record, {"action": "alert", "key": "nova/c1"}, 0, 101.0)
    assert not remediate.settled_elsewhere(None, DRAIN, 0, 101.0)


@pytest.mark.parametrize("driver", ["localfs", "redis"])
def test_the_decision_log_is_kept_apart_from_the_records_and_an_older_layout_is_moved_over(tmp_path, redis_socket, driver):
    ctx = Ctx(master_opts(tmp_path, "master-1", redis_socket, driver=driver))
    site = "site-log-" + driver
    cache = records._cache(ctx)
    # Records as 0.7.23 and before wrote them: the log inside.
    cache.store("openstack_ha/" + site, "records", {"backends": {}, "maintenance": [], "decisions": [{"n": 0}, {"n": 1}]})
    assert records.history(ctx, site) == [{"n": 0}, {"n": 1}]
    data = records.load(ctx, site)
    data["backends"]["nova/c1"] = {"state": "drain", "by": "remediation", "time": 1.0}
    records.store(ctx, site, data)  # no decision added: the old log still moves to its own key
    assert "decisions" not in cache.fetch("openstack_ha/" + site, "records")
    assert records.history(ctx, site) == [{"n": 0}, {"n": 1}] and records.load(ctx, site)["decisions"] == []
    for n in range(2, records.MAX_DECISIONS + 5):
        data = records.load(ctx, site)
        ctx.opts["id"] = "master-1"
        records.announce(ctx, data, site, {"n": n})
        records.store(ctx, site, data)
        assert data["decisions"] == []
        records.store(ctx, site, data)  # stored again: nothing added twice
    log = records.history(ctx, site)
    assert len(log) == records.MAX_DECISIONS and [d["n"] for d in log[-2:]] == [records.MAX_DECISIONS + 3, records.MAX_DECISIONS + 4]
    assert log[-1]["site"] == site and log[-1]["master"] == "master-1"
    assert records.load(ctx, site)["backends"]["nova/c1"]["state"] == "drain"
