"""A VIP beacon's signed report (``_beacons/openstack_ha_vip.py``) as the master believes it
(``_utils/openstack_ha_reports.py``: real RSA keys, the real signing module and signature
check), and the VIP check acting on every controller's report instead of asking each one
(``_utils/openstack_ha_vips.py``). The whole path runs in the lab (``test_keystone.py``,
``test_ipv6_site.py``) and in ``bench/keystone_repoint.py``."""

import threading
import time

import pytest

from tests.conftest import accepted_keys, load_module, model_lib

vip_beacon = load_module("_beacons/openstack_ha_vip.py", "openstack_ha_vip")
signed = load_module("_modules/openstack_ha_signed.py", "openstack_ha_signed")
publish = load_module("_utils/openstack_ha_publish.py", "openstack_ha_publish")
decide = load_module("_utils/openstack_ha_decide.py", "openstack_ha_decide")
reports = load_module("_utils/openstack_ha_reports.py", "openstack_ha_reports")
vips = load_module("_utils/openstack_ha_vips.py", "openstack_ha_vips")
context = load_module("_utils/openstack_ha_context.py", "openstack_ha_context")

CTRLS = ["c1", "c2", "c3"]
MODEL = {"site": "lab", "controllers": [{"id": c} for c in CTRLS], "remediation": {"quorum": "majority", "heartbeat": 15}}
NAMES = ["internal", "public"]


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """Key pairs of three controllers and an intruder; the master accepted the controllers'."""
    return accepted_keys(tmp_path, monkeypatch, publish, CTRLS, ["intruder"])


@pytest.fixture
def ctx():
    calls = {"ignored": [], "published": [], "followed": []}

    def asked(ctx, *args, **kwargs):  # the controllers' answers to a view: c1 and c2 hold one VIP each
        calls["published"].append(args)
        return {"c1": ["internal"], "c2": ["public"], "c3": []}

    utils = {
        "openstack_ha_reports.accept_vips": reports.accept_vips,
        "openstack_ha_reports.vip_holders": reports.vip_holders,
        "openstack_ha_publish.authenticated_answer": publish.authenticated_answer,
        "openstack_ha_publish.publish": asked,
        "openstack_ha_publish.wait_for": lambda ctx, model: None,
        "openstack_ha_records.note_ignored": lambda ctx, why, who, tag: calls["ignored"].append((why, who)),
        "openstack_ha_records.record": lambda ctx, site, entries: None,
        "openstack_ha_catalog_sync.follow": lambda ctx, model, holders, held, reporter, data, timings:
            calls["followed"].append((holders, held, timings)) or [],
        "openstack_ha_decide.valid_vip_list": decide.valid_vip_list,
        "openstack_ha_decide.classify_vips": decide.classify_vips,
        "openstack_ha_model.quorum_size": model_lib.quorum_size,
        "openstack_ha_model.vip_addresses": lambda model: {"internal": "10.0.0.101", "public": "10.0.0.100"},
    }
    made = context.Context({"id": "master"}, utils, {})
    made.calls = calls
    return made


def event(keys, name, held, now=None, signer=None, kind="change"):
    """A VIP beacon event of controller ``name`` holding ``held``, signed by ``signer``'s key
    (default: its own) through the beacon's own signing."""
    signed.__opts__ = {"pki_dir": str(keys / (signer or name)), "id": name}
    signed._KEY.clear()
    memory = {"opts": {"id": name}, "body": signed.body, "sign": signed.sign}
    return vip_beacon._signed(memory, {"tag": kind, "kind": kind, "held": sorted(held), "time": time.time() if now is None else now})


def test_a_vip_report_is_signed_and_believed(keys, ctx):
    assert reports.accept_vips(ctx, MODEL, "c1", event(keys, "c1", ["public"]))
    assert ctx.state["signed_reports"]["vips"]["lab"]["c1"]["held"] == ["public"]


@pytest.mark.parametrize("forgery", ["other_key", "replayed", "old", "future", "altered", "backend_report", "not_a_list"])
def test_forged_replayed_or_stale_vip_reports_are_not_kept(keys, ctx, forgery):
    now = time.time()
    data = event(keys, "c1", ["public"], now=now)
    if forgery == "other_key":
        data = event(keys, "c1", ["public"], now=now, signer="intruder")
    elif forgery == "replayed":
        assert reports.accept_vips(ctx, MODEL, "c1", data)
    elif forgery == "old":
        data = event(keys, "c1", ["public"], now=now - 30)
    elif forgery == "future":
        data = event(keys, "c1", ["public"], now=now + 30)
    elif forgery == "altered":
        data["report"]["body"] = data["report"]["body"].replace('"public"', '"internal"')
    elif forgery == "backend_report":
        # c1's genuine signature over another question (a backend report's) passed off as a VIP report.
        signed.__opts__ = {"pki_dir": str(keys / "c1"), "id": "c1"}
        body = signed.body("c1", "vips:{:.6f}".format(now), "openstack_ha_probe.report", ["public"])
        data["report"] = {"body": body.decode(), "sig": signed.sign(body)}
    elif forgery == "not_a_list":
        signed.__opts__ = {"pki_dir": str(keys / "c1"), "id": "c1"}
        body = signed.body("c1", "vips:{:.6f}".format(now), reports.VIPS_FUN, {"public": True})
        data["report"] = {"body": body.decode(), "sig": signed.sign(body)}
    kept = ctx.state.get("signed_reports", {}).get("vips", {}).get("lab", {})
    before = dict(kept.get("c1") or {})
    if forgery == "replayed":
        # The report kept already (as when the intake kept it before the event's turn): it
        # counts as kept, and its arrival time is not renewed by the copy.
        time.sleep(0.01)
        assert reports.accept_vips(ctx, MODEL, "c1", data) and kept["c1"] == before
        return
    assert not reports.accept_vips(ctx, MODEL, "c1", data)
    assert "c1" not in kept
    assert ctx.calls["ignored"] and ctx.calls["ignored"][-1][1] == "c1"


def test_every_controller_must_report_and_each_vip_have_one_holder(keys, ctx):
    assert reports.accept_vips(ctx, MODEL, "c1", event(keys, "c1", ["internal", "public"]))
    assert reports.accept_vips(ctx, MODEL, "c2", event(keys, "c2", []))
    assert reports.vip_holders(ctx, MODEL, NAMES, wait=0.05, max_age=45) is None  # c3 never reported
    assert reports.accept_vips(ctx, MODEL, "c3", event(keys, "c3", ["public"]))
    assert reports.vip_holders(ctx, MODEL, NAMES, wait=0.05, max_age=45) is None  # public: c1 and c3
    assert reports.accept_vips(ctx, MODEL, "c1", event(keys, "c1", ["internal"]))
    assert reports.vip_holders(ctx, MODEL, NAMES, wait=0.05, max_age=45) == {"c1": ["internal"], "c2": [], "c3": ["public"]}
    time.sleep(0.1)
    assert reports.vip_holders(ctx, MODEL, NAMES, wait=0.0, max_age=0.05) is None  # too old


def test_a_moving_vip_waits_for_the_losers_report(keys, ctx):
    for name, held in (("c1", ["internal", "public"]), ("c2", []), ("c3", [])):
        assert reports.accept_vips(ctx, MODEL, name, event(keys, name, held))
    assert reports.accept_vips(ctx, MODEL, "c2", event(keys, "c2", ["public"]))  # the gainer first
    loser = event(keys, "c1", ["internal"])
    timer = threading.Timer(0.2, lambda: reports.accept_vips(ctx, MODEL, "c1", loser))
    timer.start()
    started = time.monotonic()
    try:
        held = reports.vip_holders(ctx, MODEL, NAMES, wait=5, max_age=45)
    finally:
        timer.join()
    assert held == {"c1": ["internal"], "c2": ["public"], "c3": []}
    assert time.monotonic() - started < 2


def test_a_reported_move_needs_no_controller_asked(keys, ctx):
    for name, held in (("c1", ["internal"]), ("c2", ["public"]), ("c3", [])):
        assert reports.accept_vips(ctx, MODEL, name, event(keys, name, held))
    data = event(keys, "c2", ["public"])
    vips.check_vips(ctx, MODEL, "c2", data, reported=True)
    assert ctx.calls["published"] == []
    ((holders, held, timings),) = ctx.calls["followed"]
    assert holders == {"internal": "c1", "public": "c2"} and timings["view_from"] == "signed reports"
    # Without a kept report of its own (or with reports that disagree), the controllers are asked.
    vips.check_vips(ctx, MODEL, "c2", dict(data, report=None), reported=False)
    assert len(ctx.calls["published"]) == 1 and ctx.calls["followed"][-1][2]["view_from"] == "view"


def test_a_heartbeats_view_comes_from_the_reports_while_every_controller_heartbeats(keys, ctx):
    # The periodic view of a heartbeat: no controller asked while each one's signed report is
    # at most 1.5 heartbeat intervals old, and nothing waited for. (An interval of 1 s: at 0.2 s
    # the four signed reports of a busy machine's run were already too old for the first check.)
    heartbeat = 1.0
    model = dict(MODEL, remediation=dict(MODEL["remediation"], heartbeat=heartbeat))
    for name, held in (("c1", ["internal"]), ("c2", ["public"]), ("c3", [])):
        assert reports.accept_vips(ctx, model, name, event(keys, name, held, kind="heartbeat"))
    data = event(keys, "c3", [], kind="heartbeat")
    assert reports.accept_vips(ctx, model, "c3", data)
    started = time.monotonic()
    vips.check_vips(ctx, model, "c3", data, reported=True)
    assert ctx.calls["published"] == [] and ctx.calls["followed"][-1][2]["view_from"] == "signed reports"
    assert time.monotonic() - started < vips.REPORT_WAIT
    # c1 and c2 missed a heartbeat: their reports are too old for it, and the controllers are asked.
    time.sleep(heartbeat * vips.HEARTBEAT_REPORT_AGE + 0.05)
    data = event(keys, "c3", [], kind="heartbeat")
    assert reports.accept_vips(ctx, model, "c3", data)
    vips.check_vips(ctx, model, "c3", data, reported=True)
    assert len(ctx.calls["published"]) == 1 and ctx.calls["followed"][-1][2]["view_from"] == "view"
    # Reports that give a VIP two holders are no view either.
    for name, held in (("c1", ["internal", "public"]), ("c2", ["public"])):
        assert reports.accept_vips(ctx, model, name, event(keys, name, held, kind="heartbeat"))
    vips.check_vips(ctx, model, "c2", event(keys, "c2", ["public"], kind="heartbeat"), reported=True)
    assert len(ctx.calls["published"]) == 2


def test_a_report_kept_early_counts_for_the_events_turn_and_a_quiet_refusal_is_not_counted(keys, ctx):
    # The intake keeps a report as it arrives (quiet: the event's turn counts refusals); the
    # turn then finds the same report kept and acts on it.
    data = event(keys, "c1", ["public"])
    assert reports.accept_vips(ctx, MODEL, "c1", data, quiet=True)
    assert reports.accept_vips(ctx, MODEL, "c1", data)
    forged = event(keys, "c1", ["internal"], signer="intruder")
    assert not reports.accept_vips(ctx, MODEL, "c1", forged, quiet=True) and ctx.calls["ignored"] == []
    assert not reports.accept_vips(ctx, MODEL, "c1", forged) and ctx.calls["ignored"][-1][1] == "c1"
    # an older report, and one of the same time with other names, are not the kept one
    assert not reports.accept_vips(ctx, MODEL, "c1", event(keys, "c1", ["public"], now=time.time() - 2))
    altered = event(keys, "c1", ["internal"], now=float(data["time"]))
    assert not reports.accept_vips(ctx, MODEL, "c1", altered)
    assert ctx.state["signed_reports"]["vips"]["lab"]["c1"]["held"] == ["public"]
