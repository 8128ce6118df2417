"""openstack_ha added to a master that already serves a site of its own: a real salt-master and
two real salt-minions (pytest-salt-factories, on loopback), one controller of each example
region. The master has its own file roots (with a state), its own pillar roots and top file;
the project is added as the README says: master.d/openstack_ha.conf merged in the way Salt
merges master.d files, and the project's lines added to the site's own top file. Both the
site's own pillar and state and openstack_ha's work, each region gets its own site."""

import os
import shutil

import pytest
import salt.utils.dictupdate
import salt.version

from lab import labctl

# salt-factories ignores --basetemp: its root_dir is set here, one per Salt release (the
# other releases' run of this file, scripts/salt-releases.sh, may run beside this one).
ROOT = "/srv/oha-factories-%d" % salt.version.__saltstack_version__.major
SITE = os.path.join(ROOT, "site")     # what the master served before openstack_ha
CTRLS = ["cloudcontrol1005.wikimedia.org", "cloudcontrol2001-dev.wikimedia.org"]

SITE_FILES = {
    "salt/top.sls": "base:\n  '*':\n    - motd\n",
    "salt/motd.sls": ("site-motd:\n  file.managed:\n    - name: {root}/motd-{{{{ grains['id'] }}}}\n"
                      "    - contents: {{{{ pillar['site_common']['motd'] }}}}\n"),
    # The site's own top, with the lines pillar/top.sls.example gives added under its own.
    "pillar/top.sls": ("base:\n  '*':\n    - common\n"
                       "  'cloudcontrol100[5-7].wikimedia.org':\n    - openstack_ha.services\n    - openstack_ha.sites.eqiad1\n"
                       "  'cloudcontrol200[1-3]-dev.wikimedia.org':\n    - openstack_ha.services\n    - openstack_ha.sites.codfw1dev\n"),
    "pillar/common.sls": "site_common:\n  motd: managed by the site's own states\n",
}


def existing_master_config():
    """The site's master configuration before openstack_ha, with master.d/openstack_ha.conf
    included the way Salt includes master.d files (lists merged, the site's entries first)."""
    for rel, text in SITE_FILES.items():
        path = os.path.join(SITE, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text.format(root=SITE))
    config = {"file_roots": {"base": [os.path.join(SITE, "salt")]}, "pillar_roots": {"base": [os.path.join(SITE, "pillar")]},
              "engines": [], "interface": "127.0.0.1"}
    salt.utils.dictupdate.update(config, labctl.project_master_config(), True, True)
    return config


@pytest.fixture(scope="session")
def salt_factories_config():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    return {"root_dir": ROOT}


@pytest.fixture(scope="module")
def master(salt_factories):
    config = existing_master_config()
    assert config["pillar_roots"]["base"][0] == os.path.join(SITE, "pillar")  # the site's top stays in charge
    factory = salt_factories.salt_master_daemon("oha-factories-master", overrides=config)
    with factory.started():
        yield factory
    shutil.rmtree(ROOT, ignore_errors=True)


@pytest.fixture(scope="module")
def minions(master):
    factories = [master.salt_minion_daemon(i, overrides={"multiprocessing": False}) for i in CTRLS]
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


def test_the_sites_own_pillar_and_states_still_work(minions):
    # The site's own highstate, from its own file root, with a value of its own pillar (Salt
    # 3008 masks pillar.get's output: the rendered file shows the value instead).
    ret = minions.run("state.apply", minion_tgt=CTRLS[0], _timeout=120)
    assert ret.returncode == 0, ret
    with open(os.path.join(SITE, "motd-" + CTRLS[0])) as fh:
        assert fh.read().strip() == "managed by the site's own states"


def test_openstack_ha_renders_beside_it(minions):
    ret = minions.run("state.show_sls", "openstack_ha", minion_tgt="*", _timeout=180)
    assert ret.returncode == 0, ret
    for ctrl in CTRLS:
        assert any(k.startswith("openstack_ha-haproxy") for k in ret.data[ctrl]), ret.data[ctrl]


def test_status_answers_for_both_sites(master, minions):
    ret = master.salt_run_cli(timeout=180).run("openstack_ha.status", "timeout=20", _timeout=180)
    assert ret.returncode == 0, ret
    assert set(ret.data) == {"eqiad1", "codfw1dev"}, ret.data
    for site, summary in ret.data.items():
        # The stub controllers run no HAProxy: the table must say so, not crash.
        assert summary["healthy"] is False and summary["problems"], summary
