"""The master compiles the sites' pillars in the loop's threads: with Salt's real pillar
compiler (Salt 3008.3 returned an empty pillar, and no error, for some of several
compilations running at once in one process), every compilation must see its site."""

import json
import threading
import time

import pytest

import salt.config

from tests.conftest import load_module

sites = load_module("_utils/openstack_ha_sites.py", "openstack_ha_sites")
admit = load_module("_utils/openstack_ha_admit.py", "openstack_ha_admit")

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


def test_a_pillar_written_in_another_key_order_compiles_to_an_equal_model(tmp_path):
    """Salt's YAML renderer gives OrderedDicts, equal only in the same key order: the loop took
    the lab's site file written back with its keys sorted for a change of five keys (an
    ``openstack_ha/site/changed`` naming ``controllers``, ``vips`` and more, nothing changed)."""
    import yaml

    roots = tmp_path / "orders"
    (roots / "a").mkdir(parents=True)
    (roots / "b").mkdir()
    site = {"site": "s1", "controllers": [{"id": "s1-c1", "address": "127.0.0.11"}],
            "vips": {"public": {"address": "127.0.0.100", "router_id": 51}}}
    (roots / "a" / "init.sls").write_text(yaml.safe_dump({"openstack_ha": site}, sort_keys=False))
    (roots / "b" / "init.sls").write_text(yaml.safe_dump({"openstack_ha": site}, sort_keys=True))
    got = {}
    for name in ("a", "b"):
        (roots / "top.sls").write_text(yaml.safe_dump({"base": {"*": [name]}}))
        (tmp_path / name).mkdir()
        opts = master_opts(tmp_path / name)
        opts.update({"renderer": "yaml", "pillar_roots": {"base": [str(roots)]}})
        got[name] = sites.pillar_model(Ctx(opts), "s1-c1")
    assert list(got["a"]["controllers"][0]) == ["id", "address"] and list(got["b"]["controllers"][0]) == ["address", "id"]
    assert got["a"] == got["b"] and sites.changed_keys(got["a"], got["b"]) == []


class SharedCtx(Ctx):
    """Enough of the master's context for ``site_model`` and ``controller_site``."""

    def __init__(self, opts=None):
        super().__init__(opts or {})
        self.state = {}
        self.trace = []  # what the intake's trace holds (``trace.recent``)

    def shared(self, name, make=dict):
        if name not in self.state:  # made once, as the real context does
            self.state[name] = make()
        return self.state[name]

    def call(self, name, *args, **kwargs):
        return None

    def util(self, name):
        return {"admit.not_a_controller": admit.not_a_controller,
                "trace.recent": lambda opts, within=3600: list(self.trace)}[name]


def site_pillar(site, count=3):
    return {"site": site, "controllers": [{"id": "{}-c{}".format(site, c)} for c in range(1, count + 1)]}


def accepting(monkeypatch, minions):
    """The master's key store accepts ``minions`` (read at each call: a test may change the
    list); the controller map is not written out and no refresher thread starts."""
    import salt.key

    class Keys:
        def list_status(self, status):
            return {"minions": list(minions)}
    monkeypatch.setattr(salt.key, "get_key", lambda opts: Keys())
    monkeypatch.setattr(sites, "_publish_controller_map", lambda ctx, ids: None)
    monkeypatch.setattr(sites, "_thread", lambda target, *args: "thread")


@pytest.fixture
def compiles(monkeypatch):
    """Every pillar compilation asked for (minion, wait); the model built is the raw pillar."""
    asked = []

    def fake(ctx, minion, wait=True):
        asked.append((minion, wait))
        return site_pillar(minion.split("-")[0])
    monkeypatch.setattr(sites, "pillar_model", fake)
    monkeypatch.setattr(sites, "_build", lambda ctx, raw: dict(raw))
    monkeypatch.setattr(sites, "_remember_good", lambda ctx, site, raw: None)
    return asked


def test_one_compilation_serves_every_controller_of_a_site(compiles):
    ctx = SharedCtx()
    ctx.shared("controllers")["map"] = {"s1-c1": "s1", "s1-c2": "s1", "s1-c3": "s1"}
    models = [sites.site_model(ctx, m) for m in ("s1-c1", "s1-c2", "s1-c3")]
    assert [m["site"] for m in models] == ["s1"] * 3
    assert compiles == [("s1-c1", True)]


def test_an_expired_model_serves_while_another_thread_compiles(compiles, monkeypatch):
    ctx = SharedCtx()
    ctx.shared("controllers")["map"] = {"s1-c1": "s1"}
    first = sites.site_model(ctx, "s1-c1")
    # Expire it, and let the compiler be busy (pillar_model answers None without waiting).
    ctx.shared("models")["s1-c1"] = (time.monotonic() - sites.MODEL_TTL - 1, first)
    ctx.shared("site_models")["s1"] = ctx.shared("models")["s1-c1"]
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        (site_pillar("s1") if wait else None))
    assert sites.site_model(ctx, "s1-c1") is first
    assert compiles[-1] == ("s1-c1", False)
    # Far too old: waited for.
    ctx.shared("models")["s1-c1"] = (time.monotonic() - 3 * sites.MODEL_TTL - 1, first)
    assert sites.site_model(ctx, "s1-c1") == site_pillar("s1") and compiles[-1] == ("s1-c1", True)


def test_the_controller_map_compiles_one_pillar_per_site_and_is_not_waited_for_once_built(compiles, monkeypatch):
    accepting(monkeypatch, ["s{}-c{}".format(s, c) for s in (1, 2) for c in (1, 2, 3)] + ["intruder-x"])
    ctx = SharedCtx()
    assert sites.controller_site(ctx, "s2-c3") == "s2" and sites.controller_site(ctx, "intruder-x") is None
    assert sorted(m for m, _ in compiles) == ["intruder-x", "s1-c1", "s2-c1"]
    # Due for a rebuild while another thread rebuilds: the current map answers at once.
    ctx.shared("controllers")["time"] -= sites.MODEL_TTL + 1
    lock = ctx.shared("controllers_lock", threading.Lock)
    with lock:
        started = time.monotonic()
        assert sites.controller_site(ctx, "s1-c2") == "s1"
        assert time.monotonic() - started < 1.0
    assert len(compiles) == 3


def test_a_changed_pillar_is_announced_once_with_key_names_only(compiles, monkeypatch):
    fired = []

    class Recording(SharedCtx):
        def call(self, name, *args, **kwargs):
            if name == "records.fire":
                fired.append(args)
    ctx = Recording()
    ctx.shared("controllers")["map"] = {"s1-c1": "s1"}
    pillar = dict(site_pillar("s1"), keystone={"endpoint_mode": "vip", "password": "old-secret"})
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: dict(pillar))
    sites.site_model(ctx, "s1-c1")
    assert fired == []  # the first model this process knows: nothing changed
    pillar["keystone"] = {"endpoint_mode": "active_controller", "password": "new-secret"}

    def expire():
        ctx.shared("models")["s1-c1"] = (time.monotonic() - sites.MODEL_TTL - 1, ctx.shared("models")["s1-c1"][1])
        ctx.shared("site_models").clear()
    expire()
    sites.site_model(ctx, "s1-c1")
    assert [(tag, data["site"], data["changed"]) for tag, data in fired] == [
        ("openstack_ha/site/changed", "s1", ["keystone.endpoint_mode", "keystone.password"])]
    assert "secret" not in json.dumps(fired)
    expire()
    sites.site_model(ctx, "s1-c1")  # compiled again, unchanged: no second announcement
    assert len(fired) == 1


def test_the_loops_events_never_wait_for_a_compilation_once_the_site_is_known(compiles, monkeypatch):
    """``behind``: past MODEL_TTL an event goes on with the model it had while the refresher
    (started by it, once per process) compiles one pillar per site and renews the map and
    every site's model; only a controller with no model yet compiles in the event's thread."""
    accepting(monkeypatch, ["s{}-c{}".format(s, c) for s in (1, 2) for c in (1, 2, 3)])
    started = []
    monkeypatch.setattr(sites, "_thread", lambda target, *args: started.append(target) or "thread")
    ctx = SharedCtx()
    assert sites.controller_site(ctx, "s1-c2", behind=True) == "s1"  # the first map: built here
    built = len(compiles)
    first = sites.site_model(ctx, "s1-c2", behind=True)  # no model yet: compiled here
    assert first["site"] == "s1" and len(compiles) == built + 1
    # Both expired: answered at once from what this process has, nothing compiled here.
    ctx.shared("controllers")["time"] -= sites.MODEL_TTL + 1
    for key in ("models", "site_models"):
        for name, (at, model) in list(ctx.shared(key).items()):
            ctx.shared(key)[name] = (at - sites.MODEL_TTL - 1, model)
    assert sites.controller_site(ctx, "s1-c2", behind=True) == "s1"
    assert sites.site_model(ctx, "s1-c2", behind=True) is first
    assert len(compiles) == built + 1 and started == [sites._refresh_forever]  # started once
    # The refresher's round: one compilation per site, the map and both sites' models renewed.
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        dict(site_pillar(minion.split("-")[0]), generation=2))
    assert sorted(sites.refresh(ctx)) == ["s1", "s2"] and len(compiles) == built + 3
    # Renewed for every controller of the site, even one whose own entry was still fresh.
    assert all(ctx.shared("models")[c][1]["generation"] == 2 for c in ("s1-c1", "s1-c2", "s1-c3"))
    assert sites.site_model(ctx, "s1-c2", behind=True)["generation"] == 2
    assert sites.site_model(ctx, "s2-c3", behind=True)["generation"] == 2
    assert len(compiles) == built + 3
    # Far too old (the refresher stuck): the event compiles, as without ``behind``.
    ctx.shared("models")["s1-c1"] = (time.monotonic() - 3 * sites.MODEL_TTL - 1, first)
    ctx.shared("site_models")["s1"] = ctx.shared("models")["s1-c1"]
    assert sites.site_model(ctx, "s1-c1", behind=True)["generation"] == 2 and compiles[-1] == ("s1-c1", True)


def test_a_controller_taken_out_of_its_sites_pillar_is_no_longer_acted_for(compiles, monkeypatch):
    """With the refresher, a controller its site's renewed pillar no longer lists leaves the map
    and, should its event come first, is compiled for in the event's thread (not served the
    model it had)."""
    accepting(monkeypatch, ["s1-c1", "s1-c2", "s1-c3"])
    ctx = SharedCtx()
    assert sites.controller_site(ctx, "s1-c3", behind=True) == "s1"
    assert sites.site_model(ctx, "s1-c3", behind=True)["site"] == "s1"
    # s1-c3 taken out of the pillar; its model here is past MODEL_TTL, the site's is renewed.
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        site_pillar("s1", count=2))
    at, model = ctx.shared("models")["s1-c3"]
    ctx.shared("models")["s1-c3"] = (at - sites.MODEL_TTL - 1, model)
    sites.refresh(ctx)
    assert sites.controller_site(ctx, "s1-c3", behind=True) is None
    assert sites.site_model(ctx, "s1-c3", behind=True) is None
    # The event came before the map was renewed: the fresh model of its site does not list it.
    ctx.shared("controllers")["map"]["s1-c3"] = "s1"
    ctx.shared("models")["s1-c3"] = (time.monotonic() - sites.MODEL_TTL - 1, model)
    assert sites.site_model(ctx, "s1-c3", behind=True) is None and compiles[-1] == ("s1-c3", True)


def test_a_minion_that_is_no_controller_is_compiled_again_only_when_due_or_hinted(compiles, monkeypatch):
    """The refresher compiles a master's other minions once, then only when each is due
    (between half and all of ``OTHERS_EVERY`` later), or at once when the intake dropped its
    beacon events since (a new site's controller, whose pillar came after its key): at most
    ``HINTED_PER_ROUND`` such a round. Sites are still found every round."""
    others = ["web%03d" % n for n in range(40)]
    accepted = ["s1-c1", "s1-c2", "s1-c3"] + others
    accepting(monkeypatch, accepted)
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        (site_pillar("s1") if minion.startswith("s1-") else {"unrelated": True}))
    ctx = SharedCtx()
    assert sites.refresh(ctx) == {"s1": ["s1-c1", "s1-c2", "s1-c3"]}
    assert len(compiles) == 1 + len(others)  # the first round: every other minion once
    del compiles[:]
    assert sites.refresh(ctx) == {"s1": ["s1-c1", "s1-c2", "s1-c3"]}
    assert compiles == [("s1-c1", True)]  # the next: the site alone
    # web007 becomes the first controller of a new site; its beacons report, the intake drops them.
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        (site_pillar(minion.split("-")[0]) if "-" in minion else
                         {"site": "s2", "controllers": [{"id": "web007"}]} if minion == "web007" else {}))
    checked = ctx.shared("not_controllers")["web007"][0]
    ctx.trace = [{"why": admit.not_a_controller(), "who": "web007", "last": checked + 1},
                 {"why": "a forged answer", "who": "web008", "last": checked + 1},  # not a stranger's beacon
                 {"why": admit.not_a_controller(), "who": "web009", "last": checked - 1}]  # before its check
    del compiles[:]
    assert sites.refresh(ctx) == {"s1": ["s1-c1", "s1-c2", "s1-c3"], "s2": ["web007"]}
    assert sorted(m for m, _ in compiles) == ["s1-c1", "web007"]
    assert sites.controller_site(ctx, "web007") == "s2" and "web007" not in ctx.shared("not_controllers")
    # web010 added to site s1 (its pillar lists it): a controller, found through s1's compilation.
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        ({"site": "s1", "controllers": [{"id": i} for i in ("s1-c1", "s1-c2", "s1-c3", "web010")]}
                         if minion.startswith("s1-") else {"site": "s2", "controllers": [{"id": "web007"}]} if minion == "web007" else {}))
    assert sites.refresh(ctx)["s1"][-1] == "web010" and "web010" not in ctx.shared("not_controllers")
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        (site_pillar(minion.split("-")[0]) if "-" in minion else
                         {"site": "s2", "controllers": [{"id": "web007"}]} if minion == "web007" else {}))
    # A flood of hints in other minions' names: at most HINTED_PER_ROUND compiled a round.
    ctx.trace = [{"why": admit.not_a_controller(), "who": m, "last": time.time() + 1} for m in others]
    del compiles[:]
    sites.refresh(ctx)
    # (web007 is a controller; web010, taken out of s1 again, is compiled as the map still lists it.)
    assert len([m for m, _ in compiles if m.startswith("web") and m not in ("web007", "web010")]) == sites.HINTED_PER_ROUND
    # Due: every other minion again, within OTHERS_EVERY (each between half and all of it).
    ctx.trace = []
    dues = [due - checked for checked, due in ctx.shared("not_controllers").values()]
    assert all(0.5 * sites.OTHERS_EVERY <= d <= sites.OTHERS_EVERY for d in dues) and len(set(dues)) > 1
    monkeypatch.setattr(sites.time, "time", lambda: checked + sites.OTHERS_EVERY + 1)
    del compiles[:]
    sites.refresh(ctx)
    assert len(compiles) == 2 + len(others) - 1  # s1, s2 (web007), and the 39 others
    # A key deleted: forgotten.
    accepted.remove("web001")
    sites.refresh(ctx)
    assert "web001" not in ctx.shared("not_controllers")


def test_a_new_process_starts_from_the_kept_list_of_minions_that_are_no_controllers(compiles, monkeypatch, tmp_path):
    """What the engine learnt is kept in the master cache: ``salt-run openstack_ha.status``, a
    process of its own, compiles the sites' pillars only, not every other minion's again."""
    accepting(monkeypatch, ["s1-c1", "s1-c2", "s1-c3", "web1", "web2"])
    monkeypatch.setattr(sites, "pillar_model", lambda ctx, minion, wait=True: compiles.append((minion, wait)) or
                        (site_pillar("s1") if minion.startswith("s1-") else {}))
    opts = salt.config.master_config(None)
    opts.update({"cachedir": str(tmp_path / "cache"), "cache": "localfs"})
    assert sites.sites(SharedCtx(opts)) == {"s1": ["s1-c1", "s1-c2", "s1-c3"]}
    assert sorted(m for m, _ in compiles) == ["s1-c1", "web1", "web2"]
    del compiles[:]
    assert sites.sites(SharedCtx(opts)) == {"s1": ["s1-c1", "s1-c2", "s1-c3"]}  # another process
    assert compiles == [("s1-c1", True)]


def test_a_refresher_round_longer_than_its_interval_is_said(monkeypatch, caplog):
    """A round that takes longer than the time between rounds (slow ext_pillar, many sites)
    leaves the loop's models ageing: the master's log says so (at most every 10 minutes)."""
    calls = []

    class Stop(BaseException):
        """Ends the refresher's loop after its first round (the loop catches Exception only)."""

    def slow_round(ctx):
        calls.append(time.monotonic())
        if len(calls) > 1:
            raise Stop()
        time.sleep(0.1)
        return {"s1": ["s1-c1"]}

    def refresher():
        try:
            sites._refresh_forever(SharedCtx(), 0.02)
        except Stop:
            pass
    monkeypatch.setattr(sites, "refresh", slow_round)
    with caplog.at_level("WARNING"):
        thread = threading.Thread(target=refresher, daemon=True)
        thread.start()
        thread.join(10)
    assert not thread.is_alive() and len(calls) == 2
    assert any("compiling the pillars of 1 sites took" in r.getMessage() for r in caplog.records), caplog.text


def test_a_master_started_with_its_host_builds_its_controller_map_at_once(compiles, monkeypatch):
    """The monotonic clock starts near 0 at boot: "never built" must not read as "built just
    now" (every event of the first MODEL_TTL seconds would be taken for a stranger's)."""
    accepting(monkeypatch, ["s1-c1", "s1-c2", "s1-c3"])
    monkeypatch.setattr(sites.time, "monotonic", lambda: 5.0)  # five seconds after boot
    assert sites.controller_site(SharedCtx(), "s1-c2", behind=True) == "s1"
    assert sites.controller_site(SharedCtx(), "s1-c3") == "s1"
