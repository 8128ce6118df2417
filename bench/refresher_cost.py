"""
What the loop's refresher costs a master with many minions that are no controllers: the
pillar compilations of one refresher round (``openstack_ha_sites.sites``, Salt's real pillar
compiler, as the master's engine runs it every 22.5 s), on a master with ``--sites`` sites of
three controllers and ``--others`` more accepted minions whose pillar (``--keys`` keys of
their own) makes them no controller.

Measured in the same run, ``--rounds`` rounds each:

  every minion    the memory of the minions found to be no controllers cleared before each
                  round: every accepted minion compiled, as every round did until 0.7.16;
  steady          the memory kept (0.7.17): a site's pillar once, each other minion only when
                  it is due again (every ``OTHERS_EVERY`` s) or when its beacons were dropped.

Printed: compilations and CPU seconds per round (median), the ratio, and what a round every
``REFRESH_EVERY`` seconds costs in a share of one core. Nothing of the lab is
needed; a scratch master configuration under ``--root`` (removed afterwards).

Usage: .venv/bin/python bench/refresher_cost.py [--sites 10] [--others 1000] [--keys 40] [--rounds 5]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.conftest import load_module  # noqa: E402

sites = load_module("_utils/openstack_ha_sites.py", "openstack_ha_sites")
admit = load_module("_utils/openstack_ha_admit.py", "openstack_ha_admit")


class Ctx:
    """The part of the master's context ``sites.sites`` uses: the options, the utils it names,
    this process's shared state. The intake's trace is empty (no hints)."""

    def __init__(self, opts):
        self.opts, self.state = opts, {}

    def shared(self, name, make=dict):
        return self.state.setdefault(name, make())

    def util(self, name):
        return {"admit.not_a_controller": admit.not_a_controller, "trace.recent": lambda opts, within=0: []}[name]


def master(root, count_sites, others, keys):
    """Master options over a pillar of ``count_sites`` sites and ``others`` other minions, each
    with an accepted key; returns (opts, minion ids)."""
    import salt.config

    pillar = os.path.join(root, "pillar")
    os.makedirs(os.path.join(pillar, "sites"))
    os.makedirs(os.path.join(root, "pki", "minions"))
    top, minions = {"base": {"web*": ["common"]}}, []
    for index in range(1, count_sites + 1):
        site = "site%02d" % index
        top["base"][site + "-c*"] = ["sites." + site]
        controllers = [{"id": "%s-c%d" % (site, c), "address": "127.0.%d.%d" % (index, c)} for c in (1, 2, 3)]
        with open(os.path.join(pillar, "sites", site + ".sls"), "w") as fh:
            json.dump({"openstack_ha": {"site": site, "controllers": controllers}}, fh)
        minions += [c["id"] for c in controllers]
    with open(os.path.join(pillar, "common.sls"), "w") as fh:
        json.dump({"profile": {"key%03d" % k: {"value": k, "list": list(range(10))} for k in range(keys)}}, fh)
    with open(os.path.join(pillar, "top.sls"), "w") as fh:
        json.dump(top, fh)
    minions += ["web%04d" % n for n in range(others)]
    for minion in minions:
        with open(os.path.join(root, "pki", "minions", minion), "w") as fh:
            fh.write("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
    opts = salt.config.master_config(None)
    opts.update({"root_dir": root, "cachedir": os.path.join(root, "cache"), "pki_dir": os.path.join(root, "pki"),
                 "sock_dir": os.path.join(root, "sock"), "pillar_roots": {"base": [pillar]}, "file_roots": {"base": [root]},
                 "renderer": "json", "pillar_cache": False, "log_file": os.path.join(root, "master.log")})
    return opts, minions


def rounds(ctx, count, forget):
    """``count`` rounds of ``sites.sites``; ``forget``: clear the memory before each. Returns
    [(compilations, CPU seconds, sites found)]; the caller checks that every site was found each time."""
    compiled = []
    real = sites.pillar_model

    def counting(ctx, minion, wait=True):
        compiled.append(minion)
        return real(ctx, minion, wait)
    sites.pillar_model = counting
    done = []
    try:
        for _ in range(count):
            if forget:
                ctx.shared("not_controllers").clear()
            del compiled[:]
            started = time.process_time()
            found = sites.sites(ctx)
            done.append((len(compiled), time.process_time() - started, len(found)))
    finally:
        sites.pillar_model = real
    return done


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=40, help="top-level keys of the other minions' pillar")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--root", default=None)
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="oha-refresher-")
    try:
        opts, minions = master(root, args.sites, args.others, args.keys)
        print("master: %d sites of 3 controllers, %d other minions (%d accepted keys), %d rounds each"
              % (args.sites, args.others, len(minions), args.rounds))
        ctx = Ctx(opts)
        rows = []
        for name, forget in (("every minion (<= 0.7.16)", True), ("steady (0.7.17)", False)):
            ctx.shared("not_controllers").clear()
            done = rounds(ctx, args.rounds + (0 if forget else 1), forget)
            if not forget:
                print("  its first round, nothing known yet: %d compilations, %.2f s of CPU" % done[0][:2])
                done = done[1:]
            assert all(found == args.sites for _, _, found in done), done
            compiles, seconds = statistics.median(c for c, _, _ in done), statistics.median(s for _, s, _ in done)
            rows.append((name, compiles, seconds))
            print("%-26s %6d compilations a round, %7.3f s of CPU a round (median of %d)" % (name, compiles, seconds, len(done)))
        (_, c0, s0), (_, c1, s1) = rows
        print("steady / every minion: compilations x %.3f, seconds x %.3f; at one round every %.1f s: "
              "%.1f %% of a core before, %.2f %% now" % (c1 / c0, s1 / s0, sites.REFRESH_EVERY,
                                                        100 * s0 / sites.REFRESH_EVERY, 100 * s1 / sites.REFRESH_EVERY))
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
