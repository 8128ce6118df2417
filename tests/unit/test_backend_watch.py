"""The backend beacon's judging (fall/rise) and the watcher's cache as the verification reads
it. The watcher thread itself runs in the lab (test_remediation.py, bench/drain_latency.py)."""

import time

from tests.conftest import load_module

beacon = load_module("_beacons/openstack_ha_backends.py", "openstack_ha_backends")
probe = load_module("_modules/openstack_ha_probe.py", "openstack_ha_probe")


def memory():
    return {"state": {}, "streak": {}}


def test_a_backend_goes_down_after_fall_and_up_after_rise():
    mem, conf = memory(), {"fall": 1, "rise": 2}
    assert beacon._judge(mem, conf, {"nova/c1": {"up": True, "detail": "status 200"}}) == []  # first sight: no news
    assert beacon._judge(mem, conf, {"nova/c1": {"up": False, "detail": "refused"}}) == [
        {"service": "nova", "backend": "c1", "state": "down", "detail": "refused"}]
    assert beacon._judge(mem, conf, {"nova/c1": {"up": True, "detail": "status 200"}}) == []  # one good probe is not enough
    assert beacon._judge(mem, conf, {"nova/c1": {"up": True, "detail": "status 200"}})[0]["state"] == "up"


def test_the_verification_takes_only_fresh_cached_results(tmp_path):
    path = str(tmp_path / "probes.json")
    now = time.time()
    mem = memory()
    beacon._remember(mem, {"nova/c1": {"up": False, "detail": "refused"}}, now - 1.0)
    beacon._remember(mem, {"nova/c2": {"up": True, "detail": "status 200"}}, now - 0.1)
    beacon._write_cache(path, mem["latest"])
    assert (tmp_path / "probes.json").stat().st_mode & 0o777 == 0o600
    fresh = probe._cached(path, ["nova/c1", "nova/c2", "nova/c3"], 0.4, now)
    assert list(fresh) == ["nova/c2"] and fresh["nova/c2"]["up"] is True and fresh["nova/c2"]["detail"] == "status 200"
    assert 0.05 < fresh["nova/c2"]["age"] < 0.2
    assert probe._cached(str(tmp_path / "missing.json"), ["nova/c1"], 0.4, now) == {}
    # A result from before the report being verified is stale for it, however young.
    assert probe._cached(path, ["nova/c2"], 0.4, now, since=now - 0.05) == {}
    assert list(probe._cached(path, ["nova/c2"], 0.4, now, since=now - 0.1)) == ["nova/c2"]
