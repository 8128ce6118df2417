"""The master compiles the sites' pillars in the loop's threads: with Salt's real pillar
compiler (Salt 3008.3 returned an empty pillar, and no error, for some of several
compilations running at once in one process), every compilation must see its site."""

import json
import threading

import salt.config

from tests.conftest import load_module

sites = load_module("_utils/openstack_ha_sites.py", "openstack_ha_sites")

SITES = 10


class Ctx:
    def __init__(self, opts):
        self.opts = opts


def master_opts(tmp_path):
    roots = tmp_path / "pillar"
    (roots / "fleet").mkdir(parents=True)
    top = {"base": {}}
    for index in range(1, SITES + 1):
        site = "site%02d" % index
        top["base"][site + "-c*"] = ["fleet." + site]
        controllers = [{"id": "{}-c{}".format(site, c), "address": "127.0.{}.{}".format(index, c)} for c in (1, 2, 3)]
        (roots / "fleet" / (site + ".sls")).write_text(json.dumps({"openstack_ha": {"site": site, "controllers": controllers}}))
    (roots / "top.sls").write_text(json.dumps(top))
    opts = salt.config.master_config(None)
    opts.update({"root_dir": str(tmp_path), "cachedir": str(tmp_path / "cache"), "pki_dir": str(tmp_path / "pki"),
                 "sock_dir": str(tmp_path / "sock"), "pillar_roots": {"base": [str(roots)]}, "file_roots": {"base": [str(tmp_path)]},
                 "renderer": "json", "pillar_cache": False, "log_file": str(tmp_path / "master.log")})
    return opts


def test_pillars_compiled_in_parallel_threads_are_all_whole(tmp_path):
    ctx = Ctx(master_opts(tmp_path))
    minions = ["site%02d-c%d" % (i % SITES + 1, i % 3 + 1) for i in range(3 * SITES)]
    got = {}

    def compile_one(index, minion):
        got[index] = sites.pillar_model(ctx, minion)

    threads = [threading.Thread(target=compile_one, args=(i, m)) for i, m in enumerate(minions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    wrong = [(m, got.get(i)) for i, m in enumerate(minions) if (got.get(i) or {}).get("site") != m.split("-")[0]]
    assert not wrong, "{} of {} compilations lost their site: {}".format(len(wrong), len(minions), wrong[:3])
