"""A backend watcher's signed report (``_beacons/openstack_ha_backends.py``) as the master
believes it (``_utils/openstack_ha_reports.py``): real RSA keys, the real signing module and
the real signature check; and the choice between acting on reports and verifying
(``_utils/openstack_ha_remediate.py``). The whole path runs in the lab
(``test_remediation.py``, watcher on) and in ``bench/drain_latency.py --watch``."""

import threading
import time

import pytest

from tests.conftest import accepted_keys, load_module, model_lib

beacon = load_module("_beacons/openstack_ha_backends.py", "openstack_ha_backends")
signed = load_module("_modules/openstack_ha_signed.py", "openstack_ha_signed")
publish = load_module("_utils/openstack_ha_publish.py", "openstack_ha_publish")
decide = load_module("_utils/openstack_ha_decide.py", "openstack_ha_decide")
reports = load_module("_utils/openstack_ha_reports.py", "openstack_ha_reports")
remediate = load_module("_utils/openstack_ha_remediate.py", "openstack_ha_remediate")
context = load_module("_utils/openstack_ha_context.py", "openstack_ha_context")
admit = load_module("_utils/openstack_ha_admit.py", "openstack_ha_admit")

CTRLS = ["c1", "c2", "c3"]
KEYS = ["nova/c1", "nova/c2", "nova/c3"]
MODEL = {"site": "lab", "controllers": [{"id": c} for c in CTRLS],
         "remediation": {"quorum": "majority", "probe": {"watch": 0.2, "timeout": 0.25}}}


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """Key pairs of three controllers and an intruder; the master accepted the controllers'."""
    return accepted_keys(tmp_path, monkeypatch, publish, CTRLS, ["intruder"])


@pytest.fixture
def ctx():
    ignored = []
    utils = {
        "openstack_ha_reports.accept": reports.accept,
        "openstack_ha_reports.agreeing": reports.agreeing,
        "openstack_ha_reports.covered": reports.covered,
        "openstack_ha_publish.authenticated_answer": publish.authenticated_answer,
        "openstack_ha_records.note_ignored": lambda ctx, why, who, tag: ignored.append((why, who)),
        "openstack_ha_decide.valid_view": decide.valid_view,
        "openstack_ha_decide.judged": decide.judged,
        "openstack_ha_model.quorum_size": model_lib.quorum_size,
    }
    made = context.Context({"id": "master"}, utils, {})
    made.ignored = ignored
    return made


def report(keys, name, down=(), now=None, signer=None):
    """A change event's data as controller ``name``'s watcher sends it: ``down`` backends
    refused, the others answering; signed with ``signer``'s key (default: its own)."""
    now = time.time() if now is None else now
    signed.__opts__ = {"pki_dir": str(keys / (signer or name)), "id": name}
    signed._KEY.clear()
    results = {k: {"up": k not in down, "detail": "refused" if k in down else "status 200"} for k in KEYS}
    memory = {"lock": threading.Lock(), "opts": {"id": name}, "body": signed.body, "sign": signed.sign,
              "admin_states": lambda socket: {k: "ready" for k in KEYS}}
    beacon._remember(memory, results, now)
    signed_view = beacon._signed_report(memory, {"watch": 0.2, "socket": "/run/haproxy/admin.sock"}, now)
    changes = [{"service": "nova", "backend": k.split("/")[1], "state": "down"} for k in down]
    return {"kind": "change", "changes": changes, "time": now, "watched": True, "report": signed_view}


def test_a_watchers_report_is_signed_and_believed(keys, ctx):
    data = report(keys, "c1", down=["nova/c3"])
    assert reports.accept(ctx, MODEL, "c1", data)
    kept = ctx.state["signed_reports"]["sites"]["lab"]["c1"]["view"]
    assert kept["probes"]["nova/c3"] == {"up": False, "detail": "refused"}
    assert kept["admin"] == {k: "ready" for k in KEYS} and kept["haproxy"] is True


def test_stale_probes_are_left_out_of_a_report(keys):
    signed.__opts__ = {"pki_dir": str(keys / "c1"), "id": "c1"}
    now = time.time()
    memory = {"lock": threading.Lock(), "opts": {"id": "c1"}, "body": signed.body, "sign": signed.sign}
    beacon._remember(memory, {"nova/c1": {"up": True, "detail": "status 200"}}, now - 1.0)
    beacon._remember(memory, {"nova/c2": {"up": False, "detail": "refused"}}, now)
    import json
    body = json.loads(beacon._signed_report(memory, {"watch": 0.2}, now)["body"])
    assert list(body["answer"]["probes"]) == ["nova/c2"] and body["answer"]["haproxy"] is False
    assert body["nonce"].startswith("report:") and body["fun"] == "openstack_ha_probe.report" and body["id"] == "c1"


@pytest.mark.parametrize("forgery", ["other_key", "replayed", "old", "future", "altered", "verification_answer", "no_report"])
def test_forged_replayed_or_stale_reports_are_not_kept(keys, ctx, forgery):
    now = time.time()
    data = report(keys, "c1", down=["nova/c3"], now=now)
    if forgery == "other_key":
        data = report(keys, "c1", down=["nova/c3"], now=now, signer="intruder")
    elif forgery == "replayed":
        # c1's report of a second ago, played again once its newer one is kept.
        data = report(keys, "c1", down=["nova/c3"], now=now - 1)
        assert reports.accept(ctx, MODEL, "c1", report(keys, "c1", now=now))
    elif forgery == "old":
        data = report(keys, "c1", down=["nova/c3"], now=now - 30)
    elif forgery == "future":
        data = report(keys, "c1", down=["nova/c3"], now=now + 30)
    elif forgery == "altered":
        data["report"]["body"] = data["report"]["body"].replace("false", "true")
    elif forgery == "verification_answer":
        # A genuine verification answer of c1 (another question) passed off as a report.
        signed.__opts__ = {"pki_dir": str(keys / "c1"), "id": "c1"}
        signed.__salt__ = {"openstack_ha_probe.service_view": lambda: {"probes": {}, "admin": {}}}
        data["report"] = signed.call("openstack_ha_probe.service_view", nonce="report:{:.6f}".format(now))
    elif forgery == "no_report":
        data.pop("report")
    assert not reports.accept(ctx, MODEL, "c1", data)
    kept = ctx.state.get("signed_reports", {}).get("sites", {}).get("lab", {})
    assert forgery == "replayed" or "c1" not in kept
    if forgery not in ("replayed", "no_report"):
        assert ctx.ignored and ctx.ignored[-1][1] == "c1"


def test_a_report_kept_as_it_arrived_counts_again_in_its_events_turn(keys, ctx):
    data = report(keys, "c1", down=["nova/c3"])
    assert reports.accept(ctx, MODEL, "c1", data, quiet=True)  # the intake's keep_report
    kept = dict(ctx.state["signed_reports"]["sites"]["lab"]["c1"])
    assert reports.accept(ctx, MODEL, "c1", data)  # the event's turn: the same report, still believed
    assert ctx.state["signed_reports"]["sites"]["lab"]["c1"] == kept and not ctx.ignored


def test_a_report_names_only_its_own_signer(keys, ctx):
    # c2's genuine report, sent in c1's name: the body names c2, the tag c1.
    assert not reports.accept(ctx, MODEL, "c1", report(keys, "c2", down=["nova/c3"]))


def test_a_quorum_of_agreeing_reports_is_evidence_and_one_report_is_not(keys, ctx):
    assert reports.accept(ctx, MODEL, "c1", report(keys, "c1", down=["nova/c3"]))
    started = time.monotonic()
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0.2, max_age=1.0) is None
    assert time.monotonic() - started >= 0.2
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2", down=["nova/c3"]))
    before = time.time()
    views, received, probed = reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0.2, max_age=1.0)
    assert sorted(views) == ["c1", "c2"] and received <= before and probed <= received
    actions = decide.decide({k: "nova" for k in KEYS}, views, 2, {}, time.time(), 10)
    assert [(a["action"], a["key"]) for a in actions] == [("drain", "nova/c3")]
    # Reports older than max_age no longer count.
    time.sleep(0.3)
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=0.25) is None


def test_reports_that_disagree_are_no_evidence(keys, ctx):
    assert reports.accept(ctx, MODEL, "c1", report(keys, "c1", down=["nova/c3"]))
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2"))
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0.1, max_age=1.0) is None


def test_the_wait_ends_when_the_second_report_arrives(keys, ctx):
    assert reports.accept(ctx, MODEL, "c1", report(keys, "c1", down=["nova/c3"]))
    second = report(keys, "c2", down=["nova/c3"])
    timer = threading.Timer(0.15, reports.accept, (ctx, MODEL, "c2", second))
    started = time.monotonic()
    timer.start()
    try:
        views, _, _ = reports.agreeing(ctx, MODEL, ["nova/c3"], wait=5.0, max_age=10.0)
    finally:
        timer.join()
    assert sorted(views) == ["c1", "c2"] and 0.1 < time.monotonic() - started < 2.0


def test_the_loop_verifies_unless_reports_agree(keys, ctx, monkeypatch):
    asked = []
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: asked.append(service) or {"c3": "v"})
    assert reports.accept(ctx, MODEL, "c1", report(keys, "c1", down=["nova/c3"]))
    assert remediate.evidence(ctx, MODEL, "nova", None, ["nova/c3"])[:2] == ({"c3": "v"}, "verification") and asked == ["nova"]
    first_kept = time.time()
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2", down=["nova/c3"]))
    views, source, taken, _ = remediate.evidence(ctx, MODEL, "nova", None, ["nova/c3"])
    assert source == "signed reports" and sorted(views) == ["c1", "c2"] and asked == ["nova"]
    # The evidence is as old as the oldest report: a drain recorded since then settles it.
    assert taken <= first_kept
    record = {"state": "drain", "by": "remediation", "time": first_kept}
    assert remediate.settled_elsewhere(record, {"action": "drain"}, taken, time.time())
    # Without a watcher (no reports expected) or without a report, the loop verifies.
    assert remediate.evidence(ctx, dict(MODEL, remediation={"quorum": "majority", "probe": {"watch": 0}}),
                              "nova", None, ["nova/c3"])[1] == "verification"
    assert remediate.evidence(ctx, MODEL, "nova", None, None)[1] == "verification"


def test_a_round_that_verifies_instead_says_what_the_reports_lacked(keys, ctx, monkeypatch):
    """The shortfall names each reason a kept report did not count: none kept for a controller,
    kept too long before the event, probed before the report that asks; or, with enough fresh
    ones, that they disagreed. Nothing is filled when the reports made a quorum."""
    before = time.time() - 0.5
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2", now=before))  # probed before c1's
    data = report(keys, "c1", down=["nova/c3"])
    assert reports.accept(ctx, MODEL, "c1", data)
    lacking = {}
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=30.0, since=data["time"], lacking=lacking) is None
    assert lacking == {"quorum": 2, "fresh": 1, "none": 1, "old": 0, "early": 1}, lacking
    lacking = {}
    time.sleep(0.3)
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=0.2, lacking=lacking) is None
    assert lacking == {"quorum": 2, "fresh": 0, "none": 1, "old": 2, "early": 0}, lacking
    # Two fresh reports that disagree: enough of them, no agreement.
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2"))
    lacking = {}
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=30.0, lacking=lacking) is None
    assert lacking["fresh"] == 2 and lacking["quorum"] == 2, lacking
    # The round's evidence passes it on when it verifies; a quorum fills nothing.
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: {"c3": "v"})
    lacking = {}
    assert remediate.evidence(ctx, MODEL, "nova", None, ["nova/c3"], lacking=lacking)[1] == "verification"
    assert lacking["fresh"] == 2, lacking
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2", down=["nova/c3"]))
    lacking = {}
    assert remediate.evidence(ctx, MODEL, "nova", None, ["nova/c3"], lacking=lacking)[1] == "signed reports" and lacking == {}


def test_reports_from_before_the_failure_do_not_outvote_the_one_that_saw_it(keys, ctx):
    # c2 and c3 reported everything up (another change) 0.5 s before c1's watcher saw c3 fail:
    # still within max_age, they would judge nova/c3 up; older than c1's probe, they do not count.
    before = time.time() - 0.5
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2", now=before))
    assert reports.accept(ctx, MODEL, "c3", report(keys, "c3", now=before))
    data = report(keys, "c1", down=["nova/c3"])
    assert reports.accept(ctx, MODEL, "c1", data)
    # (max_age well over the reports' 0.5 s: a busy machine must not age them out meanwhile.)
    views, _, _ = reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=30.0)
    assert decide.judged("nova/c3", views, 2) is True  # what the loop did without ``since``
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0.1, max_age=30.0, since=data["time"]) is None
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2", down=["nova/c3"]))
    views, _, probed = reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=30.0, since=data["time"])
    assert sorted(views) == ["c1", "c2"] and decide.judged("nova/c3", views, 2) is False
    assert probed >= data["time"] - reports.NONCE_ROUNDING


class Records:
    """The records of one site in memory, as ``records.*`` would keep them."""

    def __init__(self):
        self.data = {"backends": {}, "maintenance": {}, "decisions": []}
        self.lock = threading.Lock()


def wire_records(ctx):
    """Give ``ctx`` what ``remediate.reconcile`` needs besides the reports: in-memory records
    (returned), the real decision and a site of one service, nova, on the three controllers."""
    records = Records()
    ctx.utils.update({
        "openstack_ha_records.lock": lambda ctx, site: records.lock,
        "openstack_ha_records.load": lambda ctx, site: records.data,
        "openstack_ha_records.store": lambda ctx, site, data: None,
        "openstack_ha_records.announce": lambda ctx, data, site, entry, tag: data["decisions"].append(entry),
        "openstack_ha_decide.decide": decide.decide,
        "openstack_ha_decide.confirmed": decide.confirmed,
        "openstack_ha_admit.current_turn": admit.current_turn,
        "openstack_ha_model.probe_targets": lambda model, service=None: [],
        "openstack_ha_model.backend_services": lambda model: {"nova": {"servers": [{"id": c} for c in CTRLS]}},
    })
    return records


def test_a_round_on_old_views_does_not_make_a_later_report_step_aside(keys, ctx, monkeypatch):
    """A round that starts after an event arrived but decides on views older than it (here:
    signed reports from before c3 failed, a round asked without a probe time) decides
    nothing; the event's own round must still run, and drains. Until 0.7.13 it stepped aside
    (a round had only to start after the event), and the failure waited for a heartbeat."""
    wire_records(ctx)
    # A watch round of 1 s: the reports from before (0.5 s old) stay within their freshness
    # (4 rounds) however long this machine takes between the steps below. At 0.2 s, a stall of
    # 0.5 s aged them out, the first round verified instead, and (as the loop must) the later
    # report's round stepped aside for views that were, by the clock, as fresh as it.
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=0, probe=dict(MODEL["remediation"]["probe"], watch=1.0)))
    acted = []
    monkeypatch.setattr(remediate, "act", lambda ctx, model, actions, who, reporter, parts=None, targets=None: acted.extend(actions) or [
        {"what": a["action"], "service": a["service"], "backend": a["backend"], "state": "drain", "time": time.time()}
        for a in actions])
    def view(down):
        return {"probes": {k: {"up": k not in down} for k in KEYS}, "admin": {k: "ready" for k in KEYS}, "haproxy": True}

    # The controllers' answers: from before c3 failed up to c2's probe, after it since then.
    failed_seen = []
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: {
        c: view(["nova/c3"] if failed_seen and since is not None and since >= failed_seen[0] else []) for c in CTRLS})
    before = time.time() - 0.5
    assert reports.accept(ctx, model, "c2", report(keys, "c2", now=before))
    assert reports.accept(ctx, model, "c3", report(keys, "c3", now=before))
    assert reports.accept(ctx, model, "c1", report(keys, "c1", down=["nova/c3"]))
    arrived_c2 = time.monotonic()
    assert remediate.reconcile(ctx, model, "c1", "nova", arrived=arrived_c2 - 0.01, since=None, reported=["nova/c3"]) == []
    second = report(keys, "c2", down=["nova/c3"])
    failed_seen.append(second["time"])
    assert reports.accept(ctx, model, "c2", second)
    admit.mark_turn(arrived_c2 + 0.25, arrived_c2 + 0.5)  # as the engine's worker marks it: received, taken
    try:
        done = remediate.reconcile(ctx, model, "c2", "nova", arrived=arrived_c2, since=second["time"], reported=["nova/c3"])
    finally:
        admit.mark_turn(None, None)
    assert [(d["what"], d["backend"]) for d in done] == [("drain", "c3")] and len(acted) == 1
    timing = done[0]["timing"]
    assert timing["bus"] == 0.25 and timing["turn"] == 0.25
    assert abs(timing["queued"] - (timing["bus"] + timing["turn"] + timing["lock"])) <= 0.002, timing
    # An event that arrived before views as fresh as these were gathered is answered by them.
    assert remediate.reconcile(ctx, model, "c3", "nova", arrived=arrived_c2 - 5, since=None, reported=None) == []


def test_the_last_controller_to_see_a_failure_does_not_verify_what_was_decided_on_its_report(keys, ctx, monkeypatch):
    """c1, c2 and c3 see nova/c3 fail in turn (their probes 0.1 s apart). c1's round drains on
    the three reports; the rounds of c2's and c3's events, whose reports that quorum
    included, step aside. Before, c3's round found only its own report probed after its own
    probe time, waited, and verified with every controller (a Salt job on the whole site
    after each drain)."""
    wire_records(ctx)
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=0, probe=dict(MODEL["remediation"]["probe"], watch=1.0)))
    acted, verified = [], []
    monkeypatch.setattr(remediate, "act", lambda ctx, model, actions, who, reporter, parts=None, targets=None: acted.extend(actions) or [
        {"what": a["action"], "service": a["service"], "backend": a["backend"], "state": "drain", "time": time.time()}
        for a in actions])
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: verified.append(since) or {})
    now = time.time()
    events = {c: report(keys, c, down=["nova/c3"], now=now - 0.3 + 0.1 * i) for i, c in enumerate(CTRLS)}
    for c in CTRLS:
        assert reports.accept(ctx, model, c, events[c])
    done = remediate.reconcile(ctx, model, "c1", "nova", arrived=time.monotonic(), since=events["c1"]["time"], reported=["nova/c3"])
    assert [(d["what"], d["backend"], d["timing"]["evidence"]) for d in done] == [("drain", "c3", "signed reports")]
    for c in ("c2", "c3"):
        assert remediate.reconcile(ctx, model, c, "nova", arrived=time.monotonic(), since=events[c]["time"], reported=["nova/c3"]) == []
    assert len(acted) == 1 and verified == []
    # Covered only for what was judged, and only for that very report.
    assert not reports.covered(ctx, model, "c3", events["c3"]["time"], ["nova/c3", "nova/c1"])
    assert not reports.covered(ctx, model, "c3", events["c3"]["time"] + 0.05, ["nova/c3"])
    newer = report(keys, "c3", now=time.time())
    assert reports.accept(ctx, model, "c3", newer)
    assert not reports.covered(ctx, model, "c3", newer["time"], ["nova/c3"])


def test_a_probe_time_in_the_future_does_not_make_later_events_step_aside(keys, ctx, monkeypatch):
    """A controller's change event carries its probe time; one far in the future (a hostile
    controller's) must not mark a round's views fresher than the round, which would make every
    later event of that service step aside."""
    wire_records(ctx)
    asked = []
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: asked.append(since) or {})
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=0))
    remediate.reconcile(ctx, model, "c1", "nova", arrived=time.monotonic(), since=time.time() + 365 * 86400)
    time.sleep(0.05)
    remediate.reconcile(ctx, model, "c2", "nova", arrived=time.monotonic(), since=None)
    assert len(asked) == 2  # the second event was not answered by the first round


def test_a_report_is_judged_by_when_the_master_received_it(keys, ctx):
    """A report that waited in the loop's queue (here 6.5 s) is judged by its arrival: kept,
    and as old (for a decision) as it was when it came."""
    data = report(keys, "c1", down=["nova/c3"], now=time.time() - 7)
    assert reports.accept(ctx, MODEL, "c1", data) is False  # judged now: 7 s off the clock
    assert ctx.ignored[-1][0] == "report that reached this master more than 5 s after its probe (late, or the controller's clock behind)"
    assert reports.accept(ctx, MODEL, "c1", data, arrived=time.monotonic() - 6.5) is True
    # Received 6.5 s ago: too old to decide on with a freshness of 1 s.
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=1.0) is None


def test_an_event_that_waited_for_a_worker_is_judged_on_the_reports_fresh_when_it_came(keys, ctx):
    """Reports kept as they arrived, 3 s before the event's turn: fresh for an event that came
    with them (it waited in the queue), too old for one that came just now; and a report
    older than max_age before the event came never counts."""
    came = time.monotonic() - 3.0
    for name in ("c1", "c2"):
        assert reports.accept(ctx, MODEL, name, report(keys, name, down=["nova/c3"], now=time.time() - 3.0), arrived=came)
    views, _, _ = reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=1.0, arrived=came + 0.1)
    assert sorted(views) == ["c1", "c2"]
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=1.0) is None
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=1.0, arrived=came + 1.5) is None
    # A newer report of c2 (the backend answers again) is what counts for c2 from then on.
    assert reports.accept(ctx, MODEL, "c2", report(keys, "c2", now=time.time()))
    assert reports.agreeing(ctx, MODEL, ["nova/c3"], wait=0, max_age=1.0, arrived=came + 0.1) is None


def test_a_drain_publish_waits_for_a_quorum_not_for_a_slow_controller(ctx):
    asked = {}

    def fake_publish(ctx, controllers, fun, args=(), **kwargs):
        asked.update(kwargs, controllers=controllers)
        kwargs["timing"].update(asked=1.0, sent=1.1, ran={"c1": (1.2, 1.25)}, received={"c1": 1.3})
        return {c: {"nova/c3": {"changed": True}} for c in ("c1", "c2")}
    ctx.utils.update({"openstack_ha_publish.publish": fake_publish, "openstack_ha_publish.split": publish.split,
                      "openstack_ha_publish.wait_for": lambda ctx, model: CTRLS})
    model = dict(MODEL, haproxy={"socket": "/run/haproxy/admin.sock", "state_file": "/var/lib/haproxy/state"})
    parts = {}
    entries = remediate.act(ctx, model, [{"action": "drain", "service": "nova", "backend": "c3", "reason": "down",
                                          "evidence": {}}], "remediation", "c1", parts)
    assert asked["quorum"] == 2 and asked["wait_for"] == CTRLS and asked["controllers"] == CTRLS
    assert entries[0]["applied"] == {"c1": True, "c2": True} and entries[0]["not_applied"] == ["c3"]
    assert parts == {"publish": 0.1, "reach": 0.1, "run": 0.05, "back": 0.05}


def test_rounds_that_need_the_same_verification_share_the_one_in_flight(keys, ctx, monkeypatch):
    """c1's round verifies (no quorum of reports): the rounds of c2's signed report (probed
    before the views of that verification will be) and of an event that arrived before them
    wait for it and decide on its views; an event that arrived after them verifies itself.
    One drain in all. Before, each round sent a verification of its own."""
    wire_records(ctx)
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=0))
    release, asked, acted, done = threading.Event(), [], [], {}

    def view(down):
        return {"probes": {k: {"up": k not in down} for k in KEYS}, "admin": {k: "ready" for k in KEYS}, "haproxy": True}

    def verify(ctx, model, service=None, since=None):
        asked.append(since)
        release.wait(10)
        return {c: view(["nova/c3"]) for c in CTRLS}

    monkeypatch.setattr(remediate, "verify", verify)
    monkeypatch.setattr(remediate, "act", lambda ctx, model, actions, who, reporter, parts=None, targets=None: acted.extend(actions) or [
        {"what": a["action"], "service": a["service"], "backend": a["backend"], "state": "drain", "time": time.time()}
        for a in actions])

    def round_of(name, **kwargs):
        thread = threading.Thread(target=lambda: done.__setitem__(name, remediate.reconcile(ctx, model, name[:2], "nova", **kwargs)))
        thread.start()
        return thread

    def until(predicate, what):
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    probed = time.time()
    # c1's event: its probe time asks the controllers for probes no older: the views are that fresh.
    threads = [round_of("c1", arrived=time.monotonic(), since=probed)]
    until(lambda: len(asked) == 1, "c1's verification")
    # c2's watcher saw nova/c3 answer 0.1 s before c1's probe: its report alone is no quorum.
    second = report(keys, "c2", now=probed - 0.1)
    assert reports.accept(ctx, model, "c2", second)
    threads.append(round_of("c2", arrived=time.monotonic(), since=reports.probe_time(second), reported=["nova/c3"]))
    # An event (no report) that arrived a second before those views.
    threads.append(round_of("c3-before", arrived=time.monotonic() - 1.0, since=None))
    # One that arrived after them: they cannot answer it.
    time.sleep(0.05)
    threads.append(round_of("c3-after", arrived=time.monotonic(), since=None))
    until(lambda: len(asked) >= 2, "the later event's own verification")
    time.sleep(0.6)  # c2's round waits 0.4 s for reports to agree before it joins
    release.set()
    for thread in threads:
        thread.join(15)
    assert sorted(done) == ["c1", "c2", "c3-after", "c3-before"]
    assert len(asked) == 2 and len(acted) == 1
    moves = [d for entries in done.values() for d in entries if d["what"] in ("drain", "restore")]
    assert [(d["what"], d["backend"]) for d in moves] == [("drain", "c3")]
    assert reports.probe_time(second) == pytest.approx(probed - 0.1, abs=1e-5)
    assert reports.probe_time({"report": {"body": "{}"}}) is None and reports.probe_time({}) is None


def test_a_round_that_joined_a_failed_verification_verifies_itself(keys, ctx, monkeypatch):
    """The verification c1's round joined fails (its publish raised): c2's round does not
    decide on nothing, it verifies itself; later rounds no longer find the failed one."""
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=0))
    started, release, asked, outcome = threading.Event(), threading.Event(), [], {}

    def verify(ctx, model, service=None, since=None):
        asked.append((service, release.is_set()))
        if len(asked) == 1:
            started.set()
            release.wait(10)
            raise RuntimeError("the master's publish failed")
        return {"c1": "view"}

    monkeypatch.setattr(remediate, "verify", verify)

    def first():
        try:
            remediate.shared_verification(ctx, model, "nova", None, time.time())
        except RuntimeError as exc:
            outcome["first"] = exc

    probed = time.time()
    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(10)
    joiner = threading.Thread(target=lambda: outcome.__setitem__(
        "second", remediate.shared_verification(ctx, model, "nova", None, probed - 1.0)))
    joiner.start()
    time.sleep(0.1)
    release.set()
    thread.join(10)
    joiner.join(10)
    assert isinstance(outcome["first"], RuntimeError)
    views, _, _, joined = outcome["second"]
    # c2's round waited for the one in flight (its own came only after that one failed).
    assert views == {"c1": "view"} and joined is False and asked == [("nova", False), ("nova", True)]
    assert ctx.state["verifications"]["flying"] == []


def test_a_report_off_the_masters_clock_is_counted_under_which_way_it_is_off(keys, ctx):
    """Late (a minion's main loop held it) and ahead (a wrong clock) are told apart in the
    intake's trace; a reply with no readable probe time says so."""
    assert reports.accept(ctx, MODEL, "c1", report(keys, "c1", down=["nova/c3"], now=time.time() + 60)) is False
    assert ctx.ignored[-1][0] == "report probed more than 5 s ahead of this master's clock (the controller's clock ahead)"
    assert reports.accept(ctx, MODEL, "c1", report(keys, "c1", down=["nova/c3"], now=time.time() - 60)) is False
    assert ctx.ignored[-1][0].startswith("report that reached this master more than 5 s after its probe")
    assert reports.accept(ctx, MODEL, "c1", {"report": {"body": "{}", "sig": "x"}}) is False
    assert ctx.ignored[-1][0] == "report without a probe time"


def test_a_restore_a_controller_missed_is_recorded_and_applied_again_when_it_answers(ctx, monkeypatch):
    """c3 did not answer the restore of nova/c2 (its minion was down): the record names it
    unconfirmed. A round without c3's view leaves that as it is; the round that sees c3's
    HAProxy still holding the drain restores it there, although the cooldown runs (it is the
    same decision again, not a toggle); once c3's view shows it in rotation, the record
    forgets c3."""
    records = wire_records(ctx)
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=600, probe=dict(MODEL["remediation"]["probe"], watch=0)),
                 haproxy={"socket": "/run/haproxy/admin.sock", "state_file": "/var/lib/haproxy/state"})
    published, waited, answering = [], [], ["c1", "c2"]

    def fake_publish(ctx, controllers, fun, args=(), **kwargs):
        published.append((controllers, args[0]))
        waited.append((kwargs["wait_for"], kwargs["quorum"]))
        kwargs["timing"].update(asked=1.0, sent=1.1, ran={"c1": (1.2, 1.25)}, received={"c1": 1.3})
        return {c: {"nova/c2": {"changed": True}} for c in answering if c in controllers}
    admin = {"c1": "drain", "c2": "drain", "c3": "drain"}
    ctx.utils.update({"openstack_ha_publish.publish": fake_publish, "openstack_ha_publish.split": publish.split,
                      "openstack_ha_publish.wait_for": lambda ctx, model: CTRLS})
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: {
        c: {"probes": {k: {"up": True} for k in KEYS}, "admin": dict({k: "ready" for k in KEYS}, **{"nova/c2": admin[c]}),
            "haproxy": True} for c in answering})
    records.data["backends"]["nova/c2"] = {"state": "drain", "by": "remediation", "time": time.time() - 700}
    done = remediate.reconcile(ctx, model, "c1", "nova")
    assert [(d["what"], d["not_applied"]) for d in done] == [("restore", ["c3"])]
    assert records.data["backends"]["nova/c2"]["unconfirmed"] == ["c3"]
    restored_at = records.data["backends"]["nova/c2"]["time"]
    admin.update(c1="ready", c2="ready")
    # c3 still silent: nothing to do, nothing forgotten; its heartbeat is worth a full check.
    assert remediate.reconcile(ctx, model, "c1", "nova") == []
    assert records.data["backends"]["nova/c2"]["unconfirmed"] == ["c3"]
    heartbeat = {"kind": "heartbeat", "view": {k: "up" for k in KEYS}, "time": time.time()}
    assert remediate.heartbeat_needs_work(ctx, model, heartbeat, "c3") is True
    assert remediate.heartbeat_needs_work(ctx, model, heartbeat, "c1") is False
    # c3 is back with the drain still on its HAProxy: restored there, cooldown or not.
    answering.append("c3")
    done = remediate.reconcile(ctx, model, "c3", "nova")
    assert [(d["what"], d["not_applied"]) for d in done] == [("restore", [])]
    assert "did not reach the HAProxy of c3" in done[0]["why"]
    # Only c3's HAProxy is asked: the others hold the restore (and may hold a drain set since).
    assert published[-1] == (["c3"], [["nova", "c2", "ready"]]) and len(published) == 2
    assert waited == [(CTRLS, 2), (["c3"], None)]  # c3's answer is awaited, whatever the quorum
    assert "unconfirmed" not in records.data["backends"]["nova/c2"]
    assert records.data["backends"]["nova/c2"]["time"] >= restored_at


def test_a_controller_that_caught_up_on_its_own_is_forgotten_without_a_publish(ctx, monkeypatch):
    """c3 applied the restore but answered too late to confirm it: its next view shows the
    backend in rotation, and the record forgets it with nothing published. Its time stays (the
    cooldown counts from the action, not from the confirmation)."""
    records = wire_records(ctx)
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=600, probe=dict(MODEL["remediation"]["probe"], watch=0)))
    ctx.utils.update({"openstack_ha_publish.publish": lambda *a, **k: pytest.fail("nothing to publish")})
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: {
        c: {"probes": {k: {"up": True} for k in KEYS}, "admin": {k: "ready" for k in KEYS}, "haproxy": True} for c in CTRLS})
    records.data["backends"]["nova/c2"] = {"state": "ready", "by": "remediation", "time": 5.0, "unconfirmed": ["c3"]}
    assert remediate.reconcile(ctx, model, "c1", "nova") == []
    assert records.data["backends"]["nova/c2"] == {"state": "ready", "by": "remediation", "time": 5.0}


def test_views_older_than_the_action_confirm_nothing(ctx, monkeypatch):
    """Views taken before the restore was recorded (c3's HAProxy "ready" from before the drain)
    must not confirm it: c3 may hold the drain that restore replaced."""
    records = wire_records(ctx)
    model = dict(MODEL, remediation=dict(MODEL["remediation"], cooldown=600, probe=dict(MODEL["remediation"]["probe"], watch=0)))
    monkeypatch.setattr(remediate, "verify", lambda ctx, model, service=None, since=None: {
        c: {"probes": {k: {"up": True} for k in KEYS}, "admin": {k: "ready" for k in KEYS}, "haproxy": True} for c in CTRLS})
    later = {"state": "ready", "by": "remediation", "time": time.time() + 60, "unconfirmed": ["c3"]}
    records.data["backends"]["nova/c2"] = dict(later)
    assert remediate.reconcile(ctx, model, "c1", "nova") == []
    assert records.data["backends"]["nova/c2"] == later
