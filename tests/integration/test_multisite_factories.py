"""One master drives several sites: a real salt-master and two real salt-minions (started by
pytest-salt-factories on loopback), one controller of each example region, each validating the
pillar the master gives it."""

import os
import shutil

import pytest

from lab import labctl


ROOT = "/srv/openstack-ha-factories"  # salt-factories ignores --basetemp: its root_dir is set here


@pytest.fixture(scope="session")
def salt_factories_config():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    return {"root_dir": ROOT}


@pytest.fixture(scope="module")
def master(salt_factories):
    overrides = dict(labctl.project_master_config(), interface="127.0.0.1")
    factory = salt_factories.salt_master_daemon("oha-factories-master", overrides=overrides)
    with factory.started():
        yield factory
    shutil.rmtree(ROOT, ignore_errors=True)


@pytest.fixture(scope="module")
def minions(master):
    ids = ["cloudcontrol1005.wikimedia.org", "cloudcontrol2001-dev.wikimedia.org"]
    factories = [master.salt_minion_daemon(i, overrides={"multiprocessing": False}) for i in ids]
    for factory in factories:
        factory.start()
    try:
        cli = master.salt_cli(timeout=60)
        ret = cli.run("saltutil.sync_all", minion_tgt="*", _timeout=300)
        assert ret.returncode == 0, ret
        yield cli
    finally:
        for factory in factories:
            factory.terminate()


def test_each_region_gets_its_own_site_from_one_master(minions):
    ret = minions.run("openstack_ha.validate", minion_tgt="*", _timeout=120)
    assert ret.returncode == 0, ret
    assert "site 'eqiad1' is valid: 3 controllers, 2 VIPs, 7 services" in ret.data["cloudcontrol1005.wikimedia.org"]
    assert "site 'codfw1dev' is valid: 3 controllers, 2 VIPs, 7 services" in ret.data["cloudcontrol2001-dev.wikimedia.org"]


def test_a_bad_pillar_stops_the_state_run_before_anything_runs(minions):
    # Rendering fails in map.jinja, so not even test=True gets to evaluate a state.
    ret = minions.run("state.apply", "openstack_ha", "test=True", 'pillar={"openstack_ha": {"vips": {"public": {"vrid": 300}}}}',
                      minion_tgt="cloudcontrol1005.wikimedia.org", _timeout=120)
    assert ret.returncode != 0
    assert "openstack_ha:vips:public:vrid: expected an integer 1-255, got 300 (int)" in str(ret.data)
