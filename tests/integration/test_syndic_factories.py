"""The syndic layout: a top master over a regional master that carries one site. Real
salt-masters, a real salt-syndic and a real controller minion (pytest-salt-factories, on
loopback). The regional master runs openstack_ha as master.d/openstack_ha.conf says (the
loop's engine, the site's pillar); the top master runs no loop (``engines: []``,
``order_masters: True``). From the top, jobs reach the site's controller through the syndic;
the controller's beacon events reach the top's event bus through it too; the loop acts at the
region only (its verification job is published there, none at the top).

Salt 3008.3's syndic cannot return a job (it sends its returns through a blocking request
channel from inside its own event loop: every request times out), so these tests run on the
other supported releases, where scripts/salt-releases.sh runs them (3006, 3007)."""

import os
import shutil
import time

import pytest
import salt.version

from lab import labctl

pytestmark = pytest.mark.skipif(salt.version.__saltstack_version__.major >= 3008,
                                reason="Salt 3008's salt-syndic returns nothing (its returns time out); run on 3006/3007")

# salt-factories ignores --basetemp: its root_dir is set here, one per Salt release (the
# other releases' run of this file, scripts/salt-releases.sh, may run beside this one).
ROOT = "/srv/oha-syndic-%d" % salt.version.__saltstack_version__.major
PILLAR_TOP = os.path.join(ROOT, "pillar-top")
CTRL = "cloudcontrol1005.wikimedia.org"
TOP_ADDR, REGION_ADDR = "127.0.0.2", "127.0.0.1"


@pytest.fixture(scope="session")
def salt_factories_config():
    shutil.rmtree(ROOT, ignore_errors=True)
    return {"root_dir": ROOT}


def region_config(top):
    """The regional master: the project's master.d file, the site's pillar top (the example's
    lines), on REGION_ADDR. Its publish port is the top master's number (on another address):
    the syndic subscribes to its upper master on the port its own master's configuration
    names, so the two must agree, as they do with Salt's default ports on separate hosts."""
    os.makedirs(PILLAR_TOP, exist_ok=True)
    shutil.copy(os.path.join(labctl.REPO, "pillar", "top.sls.example"), os.path.join(PILLAR_TOP, "top.sls"))
    config = labctl.project_master_config()
    config["pillar_roots"]["base"].insert(0, PILLAR_TOP)
    config.update({"interface": REGION_ADDR, "publish_port": top.config["publish_port"]})
    return config


@pytest.fixture(scope="module")
def layout(salt_factories):
    """The top master, the syndic with its regional master, and the site's controller there."""
    top = salt_factories.salt_master_daemon("oha-top", order_masters=True, overrides={"interface": TOP_ADDR, "engines": []})
    with top.started():
        region = region_config(top)
        # salt-factories writes the syndic's settings into the regional master's master.d,
        # where its engine list would replace the loop's: the syndic's carry the loop's too.
        syndic = top.salt_syndic_daemon("oha-region-eqiad1", master_overrides=region, overrides={
            "syndic_master": TOP_ADDR, "engines": region["engines"], "engines_dirs": region["engines_dirs"]})
        with syndic.started():
            controller = syndic.master.salt_minion_daemon(CTRL, overrides={"multiprocessing": False})
            with controller.started():
                ret = syndic.master.salt_cli(timeout=60).run("saltutil.sync_all", minion_tgt=CTRL, _timeout=300)
                assert ret.returncode == 0, ret
                yield top, syndic
    shutil.rmtree(ROOT, ignore_errors=True)


def from_top(top, *args, attempts=6):
    """A job from the top master to the controller, through the syndic: retried while the
    syndic is still settling in (its first returns can miss the first job's wait)."""
    for _ in range(attempts):
        ret = top.salt_cli(timeout=30).run(*args, minion_tgt=CTRL, _timeout=90)
        # One minion targeted: salt-factories gives its return itself.
        if ret.returncode == 0 and ret.data is not None and "did not return" not in str(ret.data):
            return ret.data
    raise AssertionError("no answer from {} through the syndic after {} jobs: {}".format(CTRL, attempts, ret))


def test_the_top_master_reaches_the_site_through_the_syndic(layout):
    top, _ = layout
    answer = from_top(top, "openstack_ha.validate")
    assert "site 'eqiad1' is valid: 3 controllers, 2 VIPs, 7 services" in answer, answer


def test_beacon_events_reach_the_top_and_the_loop_acts_at_the_region_only(salt_factories, layout):
    top, syndic = layout
    assert from_top(top, "test.ping") is True  # the syndic relays both ways
    tag = "salt/beacon/{}/openstack_ha_backends/change".format(CTRL)
    started = time.time()
    # What the backend beacon sends when a probe result changes (the minion's own channel).
    ret = syndic.master.salt_cli(timeout=60).run(
        "event.send", tag, 'data={"kind": "change", "changes": [{"service": "nova", "backend": "cloudcontrol1006", "up": false}]}',
        minion_tgt=CTRL, _timeout=90)
    assert ret.returncode == 0, ret
    listener = salt_factories.event_listener
    seen = listener.wait_for_events([(top.id, tag), (syndic.master.id, tag)], timeout=60, after_time=started)
    assert seen.found_all_events, "the beacon event did not reach {}".format(seen.missed)
    # The loop (at the region) verifies with a signed job to the site's controllers: published there.
    def verifications(master_id):
        return [event.data for event in listener.get_events([(master_id, "salt/job/*/new")], after_time=started)
                if event.data.get("fun") == "openstack_ha_signed.call" and "openstack_ha_probe.service_view" in str(event.data.get("arg"))]

    deadline = time.time() + 90
    while not verifications(syndic.master.id) and time.time() < deadline:
        time.sleep(0.5)
    jobs = verifications(syndic.master.id)
    assert jobs, "the regional loop published no verification"
    assert sorted(jobs[0]["minions"]) == [CTRL], jobs[0]  # the site's controllers the region knows
    # The top master runs no loop: it published nothing of openstack_ha's.
    at_top = [event.data.get("fun") for event in listener.get_events([(top.id, "salt/job/*/new")], after_time=started)]
    assert not [fun for fun in at_top if str(fun).startswith("openstack_ha")], at_top
