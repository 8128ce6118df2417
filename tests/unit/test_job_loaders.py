"""The loop's jobs on the minion's loaders (``_utils/openstack_ha_job_loaders.py``): which jobs
skip the per-job rebuild of Salt's loaders, on Salt's own ``MinionBase.gen_modules`` and its
request context (the job payload Salt sets around each job)."""

import os

import pytest
import salt.config
import salt.minion
import salt.utils.ctx

from tests.conftest import REPO, load_module


def request_context(data, opts):
    """Salt's context of a job whose payload is ``data``, as its minion sets it around the job
    (3007 and later: ``request_context``; 3006: ``RequestContext``)."""
    if hasattr(salt.utils.ctx, "request_context"):
        return salt.utils.ctx.request_context({"data": data, "opts": opts})
    return salt.utils.ctx.RequestContext({"data": data, "opts": opts})


job_loaders = load_module("_utils/openstack_ha_job_loaders.py", "openstack_ha_job_loaders")

THREADED = {"multiprocessing": False}


def signed(fun, **extra):
    """A job payload of the signed call of ``fun``, as the master's publish makes it."""
    return dict({"fun": "openstack_ha_signed.call", "jid": "1", "arg": [fun, [], {}, "n" * 16]}, **extra)


@pytest.mark.parametrize("data, opts, expected", [
    (signed("openstack_ha_probe.service_view"), THREADED, True),
    (signed("openstack_ha_haproxy.set_servers_state"), THREADED, True),
    (signed("openstack_ha_probe.vips_held"), {"multiprocessing": True}, False),  # a process per job: nothing to save
    (signed("openstack_ha_probe.vips_held"), {}, False),  # Salt's default is a process per job
    (signed("openstack_ha_galera.stop"), THREADED, False),  # actions that call Salt's service modules
    (signed("openstack_ha_maintenance.enter"), THREADED, False),
    ({"fun": "state.apply", "arg": []}, THREADED, False),
    ({"fun": "openstack_ha_probe.service_view", "arg": []}, THREADED, False),  # unsigned: not the loop's
    ({"fun": "openstack_ha_signed.call", "arg": []}, THREADED, False),
    ({"fun": "openstack_ha_signed.call", "arg": [{"__kwarg__": True, "fun": "openstack_ha_probe.vips_held"}]},
     THREADED, True),
    ({"fun": "openstack_ha_signed.call", "arg": [["openstack_ha_probe.vips_held"]]}, THREADED, False),
    (None, THREADED, False),
])
def test_only_the_loops_signed_questions_and_haproxy_changes_reuse_loaders(data, opts, expected):
    assert job_loaders.reusable(data, opts) is expected


@pytest.fixture
def minion_class(tmp_path):
    """A class of Salt's ``MinionBase`` (its real ``gen_modules``) and an instance of it set up
    as a threaded controller's minion with this project's modules; the class is patched, Salt's
    own ``Minion`` is not."""
    class Controller(salt.minion.MinionBase):
        pass

    opts = salt.config.minion_config(None)
    opts.update({"id": "ctrl", "file_client": "local", "multiprocessing": False,
                 "cachedir": str(tmp_path / "cache"), "pki_dir": str(tmp_path / "pki"),
                 "sock_dir": str(tmp_path / "sock"), "log_file": str(tmp_path / "log"),
                 "module_dirs": [os.path.join(REPO, "_modules")], "utils_dirs": [os.path.join(REPO, "_utils")]})
    opts["grains"] = {"id": "ctrl", "os_family": "Debian", "kernel": "Linux"}
    opts["pillar"] = {}
    minion = Controller(opts)
    minion.gen_modules()
    return Controller, minion


def test_a_reusable_job_keeps_the_loaders_and_any_other_rebuilds_them(minion_class):
    cls, minion = minion_class
    assert not job_loaders.installed(cls) and job_loaders.stats(cls) is None
    assert job_loaders.install(cls) is True
    assert job_loaders.install(cls) is True  # idempotent: one wrapper, not two
    assert salt.minion.Minion.gen_modules is salt.minion.MinionBase.gen_modules  # Salt's own class untouched
    before = minion.functions
    with request_context(signed("openstack_ha_probe.service_view"), minion.opts):
        minion.gen_modules()
    assert minion.functions is before
    assert "openstack_ha_signed.call" in minion.functions
    with request_context({"fun": "state.apply", "arg": []}, minion.opts):
        minion.gen_modules()
    assert minion.functions is not before
    rebuilt = minion.functions
    minion.gen_modules()  # the minion's own refresh, outside any job: rebuilt, not counted
    assert minion.functions is not rebuilt
    assert job_loaders.stats(cls) == {"reused": 1, "rebuilt": 1}


def test_a_minion_without_loaders_yet_builds_them_even_for_the_loop(minion_class):
    cls, minion = minion_class
    job_loaders.install(cls)
    del minion.functions
    with request_context(signed("openstack_ha_probe.vips_held"), minion.opts):
        minion.gen_modules()
    assert "openstack_ha_probe.vips_held" in minion.functions
    assert job_loaders.stats(cls) == {"reused": 0, "rebuilt": 1}


def test_a_forking_minion_rebuilds_for_the_loop_too(minion_class):
    cls, minion = minion_class
    job_loaders.install(cls)
    minion.opts["multiprocessing"] = True
    before = minion.functions
    with request_context(signed("openstack_ha_probe.vips_held"), minion.opts):
        minion.gen_modules()
    assert minion.functions is not before
