"""The master's pure decisions beyond the backend loop (``_utils/openstack_ha_decide.py``): the
one last-backend rule, VIP classification, RabbitMQ alerts and repairs; and the runner's
entry point and refusals, with a stand-in context."""

import datetime

import pytest

from tests.conftest import load_module

decide = load_module("_utils/openstack_ha_decide.py", "openstack_ha_decide")
runner = load_module("_runners/openstack_ha.py", "openstack_ha_runner")

CTRLS = ["c1", "c2", "c3"]


def view(up, admin="ready"):
    return {"probes": {k: {"up": v} for k, v in up.items()}, "admin": {k: admin for k in up}}


# ----------------------------------------------------------------- the last-backend rule

KEYS = ["nova/c1", "nova/c2", "nova/c3"]


def test_a_backend_is_the_last_serving_one_when_no_other_is_up_and_in_rotation():
    views = {c: view({"nova/c1": True, "nova/c2": False, "nova/c3": False}) for c in CTRLS}
    assert decide.last_serving("nova/c1", KEYS, views, 2)
    assert not decide.last_serving("nova/c2", KEYS, views, 2)


def test_a_backend_drained_on_a_quorum_of_haproxies_does_not_count_as_serving():
    views = {c: view({"nova/c1": True, "nova/c2": True, "nova/c3": False}) for c in CTRLS}
    for c in ("c1", "c2"):
        views[c]["admin"]["nova/c2"] = "drain"
    assert decide.last_serving("nova/c1", KEYS, views, 2)
    views["c2"]["admin"]["nova/c2"] = "ready"  # drained on one HAProxy only: still serving
    assert not decide.last_serving("nova/c1", KEYS, views, 2)


def test_maintenance_and_this_rounds_decisions_count():
    views = {c: view({"nova/c1": True, "nova/c2": True, "nova/c3": False}) for c in CTRLS}
    assert decide.last_serving("nova/c1", KEYS, views, 2, maintenance=["nova/c2"])
    assert decide.last_serving("nova/c1", KEYS, views, 2, decided={"nova/c2": True})
    for c in CTRLS:
        views[c]["admin"]["nova/c2"] = "drain"
    assert not decide.last_serving("nova/c1", KEYS, views, 2, decided={"nova/c2": False})


def test_the_loop_and_the_operator_apply_the_same_rule():
    """decide() refuses to drain exactly when last_serving says so."""
    views = {c: view({"nova/c1": False, "nova/c2": True, "nova/c3": True}) for c in CTRLS}
    for c in CTRLS:
        views[c]["admin"]["nova/c2"] = "drain"
    backends = {k: "nova" for k in KEYS}
    views_c3_down = {c: dict(v, probes=dict(v["probes"], **{"nova/c3": {"up": False}})) for c, v in views.items()}
    actions = decide.decide(backends, views_c3_down, 2, {}, 1000.0, 10)
    alerts = {a["key"] for a in actions if a.get("alert") == "last_backend"}
    assert alerts == {k for k in ("nova/c1", "nova/c3") if decide.last_serving(k, KEYS, views_c3_down, 2)}
    assert alerts  # nova/c2 is drained everywhere: nothing else serves


# ------------------------------------------------------------------------------ VIPs


def test_one_holder_per_vip_confirmed_by_a_quorum_is_fine():
    assert decide.classify_vips({"public": ["c1"], "internal": ["c2"]}, CTRLS, CTRLS, 2) == []


def test_too_few_answers_judge_nothing_else():
    found = decide.classify_vips({"public": ["c1", "c2"]}, ["c1"], CTRLS, 2)
    assert [f["alert"] for f in found] == ["no_quorum"]


@pytest.mark.parametrize("holders, answered, alert", [
    ({"public": ["c1", "c3"]}, CTRLS, "split_brain"),
    ({"public": []}, ["c1", "c2"], "vip_unconfirmed"),
    ({"public": []}, CTRLS, "vip_orphaned"),
])
def test_vip_problems(holders, answered, alert):
    found = decide.classify_vips(holders, answered, CTRLS, 2)
    assert [f["alert"] for f in found] == [alert] and found[0]["vip"] == "public"


# -------------------------------------------------------------------------- RabbitMQ

NODES = ["rabbit@c1", "rabbit@c2", "rabbit@c3"]


def rabbit(running_nodes, partitions=None, alarms=(), running=True, app=True):
    return {"running": running, "app_running": app, "running_nodes": list(running_nodes), "partitions": partitions or {},
            "alarms": list(alarms), "expected": NODES}


def test_a_healthy_cluster_has_no_problem():
    views = {n: rabbit(NODES) for n in NODES}
    assert decide.rabbit_problems(views, NODES) == []
    assert decide.rabbit_healthy(views["rabbit@c1"], NODES)


def test_partitions_alarms_and_nodes_down_are_problems():
    views = {"rabbit@c1": rabbit(["rabbit@c1", "rabbit@c2"], partitions={"rabbit@c1": ["rabbit@c3"]}, alarms=["disk on c1"]),
             "rabbit@c2": rabbit(["rabbit@c1", "rabbit@c2"])}
    kinds = {p[0]: p[2] for p in decide.rabbit_problems(views, NODES)}
    assert kinds == {"rabbitmq_partition": ["rabbit@c1"], "rabbitmq_alarm": ["disk on c1"], "rabbitmq_node_down": ["rabbit@c3"]}


def test_an_alert_is_repeated_only_after_some_heartbeats_or_when_its_subject_changes():
    problems = [("rabbitmq_node_down", "why", ["rabbit@c3"])]
    assert decide.rabbit_news(problems, {}, 100.0, 5) == problems
    seen = {"rabbitmq_node_down": {"subject": ["rabbit@c3"], "time": 100.0}}
    assert decide.rabbit_news(problems, seen, 100.0 + 5 * decide.ALERT_REPEAT_HEARTBEATS - 1, 5) == []
    assert decide.rabbit_news(problems, seen, 100.0 + 5 * decide.ALERT_REPEAT_HEARTBEATS, 5) == problems
    other = [("rabbitmq_node_down", "why", ["rabbit@c2"])]
    assert decide.rabbit_news(other, seen, 101.0, 5) == other


def test_the_minority_side_of_a_partition_is_healed_first_once_per_cooldown():
    views = {"rabbit@c1": rabbit(["rabbit@c1", "rabbit@c2"]), "rabbit@c2": rabbit(["rabbit@c1", "rabbit@c2"]),
             "rabbit@c3": rabbit(["rabbit@c3"], partitions={"rabbit@c3": ["rabbit@c1"]})}
    assert decide.rabbit_remedy(NODES, 2, views, {}, 100.0, 30) == ("heal", "rabbit@c3")
    assert decide.rabbit_remedy(NODES, 2, views, {"heal_time": 90.0}, 100.0, 30) is None
    assert decide.rabbit_remedy(NODES, 2, views, {}, 100.0, 30, heal_partitions=False) is None


def test_overlapping_partitions_heal_the_node_that_sees_fewest_and_a_stale_list_heals_none():
    # RabbitMQ's partial-partition guard cut c1 and c2 apart; both still see c3, c3 sees both:
    # nobody is a minority by count.
    views = {"rabbit@c1": rabbit(["rabbit@c1", "rabbit@c3"], partitions={"rabbit@c1": ["rabbit@c2"]}),
             "rabbit@c2": rabbit(["rabbit@c2", "rabbit@c3"], partitions={"rabbit@c2": ["rabbit@c1"]}),
             "rabbit@c3": rabbit(NODES)}
    assert decide.rabbit_remedy(NODES, 2, views, {}, 100.0, 30) == ("heal", "rabbit@c1")
    # A partition list outliving the heal that ended it: every node runs, nothing to heal.
    whole = {n: rabbit(NODES, partitions={n: ["rabbit@c3"]} if n == "rabbit@c1" else None) for n in NODES}
    assert decide.rabbit_remedy(NODES, 2, whole, {}, 100.0, 30) is None
    # The minority c3's app restarting (its heal under way): c1 and c2 still list the partition
    # and see each other only, a majority. Neither is healed (a CI run healed c1 then).
    healing = {"rabbit@c1": rabbit(["rabbit@c1", "rabbit@c2"], partitions={"rabbit@c1": ["rabbit@c3"]}),
               "rabbit@c2": rabbit(["rabbit@c1", "rabbit@c2"], partitions={"rabbit@c2": ["rabbit@c3"]}),
               "rabbit@c3": rabbit([], running=False, app=False)}
    assert decide.rabbit_remedy(NODES, 2, healing, {"heal_time": 50.0, "restart_time": 95.0}, 100.0, 30) is None
    assert decide.rabbit_remedy(NODES, 2, healing, {}, 100.0, 30) == ("restart", "rabbit@c3")  # c3 itself, if anything


def test_the_overlap_rule_reads_rabbitmqs_node_names_not_the_controller_ids():
    """The loop keys each view by controller id; ``running_nodes`` lists RabbitMQ's names. The
    views of a CI run's failure: lab-ctrl3's heal under way (its app stopped), lab-ctrl2 still
    listing the partition and seeing lab-ctrl1 and itself, a majority. Nothing to heal there:
    the restart of lab-ctrl3 is what is due, if anything."""
    ids = ["lab-ctrl1", "lab-ctrl2", "lab-ctrl3"]

    def view(ctrl, running_nodes, partitions=None, running=True, app=True):
        return dict(rabbit(running_nodes, partitions, running=running, app=app), node="rabbit@" + ctrl)
    healing = {"lab-ctrl1": view("lab-ctrl1", ["rabbit@lab-ctrl1", "rabbit@lab-ctrl2"]),
               "lab-ctrl2": view("lab-ctrl2", ["rabbit@lab-ctrl1", "rabbit@lab-ctrl2"],
                                 partitions={"rabbit@lab-ctrl1": ["rabbit@lab-ctrl3"], "rabbit@lab-ctrl2": ["rabbit@lab-ctrl3"]}),
               "lab-ctrl3": view("lab-ctrl3", [], running=False, app=False)}
    assert decide.rabbit_remedy(ids, 2, healing, {"heal_time": 90.0, "restart_time": 95.0}, 100.0, 10) is None
    assert decide.rabbit_remedy(ids, 2, healing, {"heal_time": 90.0, "restart_time": 50.0}, 100.0, 10) == ("restart", "lab-ctrl3")
    # Overlapping partitions under the same names: the node seeing the fewest is healed.
    overlap = {"lab-ctrl1": view("lab-ctrl1", ["rabbit@lab-ctrl1", "rabbit@lab-ctrl3"], partitions={"rabbit@lab-ctrl1": ["rabbit@lab-ctrl2"]}),
               "lab-ctrl2": view("lab-ctrl2", ["rabbit@lab-ctrl2", "rabbit@lab-ctrl3"], partitions={"rabbit@lab-ctrl2": ["rabbit@lab-ctrl1"]}),
               "lab-ctrl3": view("lab-ctrl3", ["rabbit@lab-ctrl1", "rabbit@lab-ctrl2", "rabbit@lab-ctrl3"])}
    assert decide.rabbit_remedy(ids, 2, overlap, {}, 100.0, 10) == ("heal", "lab-ctrl1")


def test_a_node_that_does_not_run_is_started_again():
    views = {"rabbit@c1": rabbit(NODES[:2]), "rabbit@c2": rabbit(NODES[:2]), "rabbit@c3": rabbit([], running=False, app=False)}
    assert decide.rabbit_remedy(NODES, 2, views, {}, 100.0, 30) == ("restart", "rabbit@c3")
    assert decide.rabbit_remedy(NODES, 2, views, {"restart_time": 99.0}, 100.0, 30) is None


def test_a_controller_in_planned_maintenance_is_left_alone():
    stopped = {"rabbit@c1": rabbit(NODES[:2]), "rabbit@c2": rabbit(NODES[:2]), "rabbit@c3": rabbit([], running=False, app=False)}
    assert decide.rabbit_remedy(NODES, 2, stopped, {}, 100.0, 30, hands_off={"rabbit@c3"}) is None
    minority = dict(stopped, **{"rabbit@c3": rabbit(["rabbit@c3"], partitions={"rabbit@c3": ["rabbit@c1"]})})
    assert decide.rabbit_remedy(NODES, 2, minority, {}, 100.0, 30, hands_off={"rabbit@c3"}) is None


# ------------------------------------------------------------- the runner's entry point


class FakeContext:
    """Records the master-side calls handle_event makes; answers from ``answers``."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def call(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        found = self.answers.get(name)
        return found(*args, **kwargs) if callable(found) else found

    def util(self, name):
        return {"model.galera_nodes": lambda m: [{"id": "c1"}],
                "model.backend_services": lambda m: {"nova": {}, "glance": {}},
                "admit.not_a_controller": lambda: "event from a minion that is not a controller"}[name]


MODEL = {"site": "lab", "remediation": {"enabled": True}}


@pytest.fixture
def ctx(monkeypatch):
    fake = FakeContext({"sites.controller_site": lambda r, behind=False: "lab" if r in CTRLS else None,
                        "sites.site_model": MODEL, "remediate.reconcile": ["decided"],
                        "remediate.heartbeat_needs_work": False, "vips.check_vips": ["vips"]})
    runner.__context__ = {}
    monkeypatch.setattr(runner, "_ctx", lambda: fake)
    return fake


def test_an_event_from_a_minion_that_is_not_a_controller_does_no_work(ctx):
    assert "ignored" in runner.handle_event("salt/beacon/intruder/openstack_ha_backends/change", {"kind": "change"})
    assert [c[0] for c in ctx.calls] == ["sites.controller_site", "records.note_ignored"]


def test_a_change_naming_one_known_service_checks_that_service(ctx):
    runner.handle_event("salt/beacon/c1/openstack_ha_backends/change", {"kind": "change", "changes": [{"service": "nova"}]})
    assert ctx.calls[-1][0] == "remediate.reconcile" and ctx.calls[-1][2]["service"] == "nova"


@pytest.mark.parametrize("changes", [[{"service": "nova"}, {"service": "glance"}], [{"service": "made-up"}], "garbage"])
def test_a_change_naming_several_or_unknown_services_checks_the_whole_site(ctx, changes):
    runner.handle_event("salt/beacon/c1/openstack_ha_backends/change", {"kind": "change", "changes": changes})
    assert ctx.calls[-1][0] == "remediate.reconcile" and ctx.calls[-1][2]["service"] is None


def test_a_quiet_heartbeat_costs_no_verification(ctx):
    ret = runner.handle_event("salt/beacon/c1/openstack_ha_backends/heartbeat", {"kind": "heartbeat", "view": {}})
    assert ret == {"site": "lab", "decisions": []}
    assert "remediate.reconcile" not in [c[0] for c in ctx.calls]


def test_vip_events_go_to_the_vip_check(ctx):
    assert runner.handle_event("salt/beacon/c2/openstack_ha_vip/change", {"kind": "change"})["decisions"] == ["vips"]


@pytest.mark.parametrize("due", [True, False])
def test_a_vip_heartbeat_gets_a_view_only_when_one_is_due(ctx, due):
    ctx.answers["vips.heartbeat_due"] = due
    ret = runner.handle_event("salt/beacon/c2/openstack_ha_vip/heartbeat", {"kind": "heartbeat"})
    assert ret["decisions"] == (["vips"] if due else [])
    assert ("vips.check_vips" in [c[0] for c in ctx.calls]) is due


def test_the_masters_receive_stamp_dates_an_event_never_in_the_future():
    import time

    past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)).replace(tzinfo=None).isoformat()
    assert 3 < time.monotonic() - runner._arrival({"_stamp": past}) < 30
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=50)).replace(tzinfo=None).isoformat()
    assert time.monotonic() - runner._arrival({"_stamp": future}) < 1
    assert time.monotonic() - runner._arrival({"_stamp": "not a time"}) < 1


def test_a_refusal_is_one_line_and_exits_non_zero():
    runner.__context__ = {}
    assert runner._refuse("unknown site 'x';\n  known: lab") == {"refused": "unknown site 'x'; known: lab", "retcode": 1}
    assert runner.__context__["retcode"] == 1


def test_one_vip_view_per_heartbeat_interval_resyncs_the_site(monkeypatch):
    vips = load_module("_utils/openstack_ha_vips.py", "openstack_ha_vips")

    class Shared:
        def __init__(self):
            self.state = {}

        def shared(self, name, make=dict):
            return self.state.setdefault(name, make())
    ctx, model, now = Shared(), {"site": "lab", "remediation": {"heartbeat": 15}}, [1000.0]
    monkeypatch.setattr(vips.time, "monotonic", lambda: now[0])
    assert vips.heartbeat_due(ctx, model)  # no view yet: this heartbeat claims one
    assert not vips.heartbeat_due(ctx, model)  # another controller's heartbeat, at the same time
    now[0] += 5
    ctx.shared("vip_views")["lab"] = now[0]  # what check_vips notes after each view (a change's too)
    now[0] += 5
    assert not vips.heartbeat_due(ctx, model)
    assert vips.heartbeat_due(ctx, dict(model, site="other"))  # per site
    now[0] += 9
    assert vips.heartbeat_due(ctx, model)


def test_heartbeats_handled_together_get_one_view():
    """Eight workers asking at once (the loop's intake): exactly one is told to take the view."""
    import threading

    vips = load_module("_utils/openstack_ha_vips.py", "openstack_ha_vips")
    state, init = {}, threading.Lock()

    class Shared:
        def shared(self, name, make=dict):
            with init:
                return state.setdefault(name, make())
    model, answers, start = {"site": "lab", "remediation": {"heartbeat": 15}}, [], threading.Barrier(8)

    def ask():
        start.wait()
        answers.append(vips.heartbeat_due(Shared(), model))
    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(answers) == [False] * 7 + [True]


def test_history_reads_only_the_records_of_the_site_named(ctx):
    ctx.answers["records.history"] = lambda site: [{"n": n, "site": site} for n in range(30)]
    ctx.answers["sites.sites"] = {"lab": CTRLS, "other": ["o1"]}
    assert runner.history(site="lab", recent=3) == {"lab": [{"n": n, "site": "lab"} for n in (27, 28, 29)]}
    assert "sites.sites" not in [c[0] for c in ctx.calls]  # no pillar compiled for a named site
    assert sorted(runner.history(recent=1)) == ["lab", "other"]
