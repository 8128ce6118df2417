"""The remediation decision: quorum, last-backend guard, cooldown, idempotence, maintenance."""

from tests.conftest import load_module

decide_lib = load_module("_utils/openstack_ha_decide.py", "openstack_ha_decide")
CTRLS = ["c1", "c2", "c3"]
BACKENDS = {"nova/%s" % c: "nova" for c in CTRLS}


def views(down=(), drained=(), answering=CTRLS, liars=()):
    """Each answering controller's view: probes see `down` down (liars see everything up)."""
    out = {}
    for ctrl in answering:
        out[ctrl] = {
            "probes": {k: {"up": ctrl in liars or k not in down, "detail": "x"} for k in BACKENDS},
            "admin": {k: "drain" if k in drained else "ready" for k in BACKENDS},
            "haproxy": True,
        }
    return out


def run(v, records=None, now=1000.0, cooldown=10, maintenance=()):
    return decide_lib.decide(BACKENDS, v, 2, records or {}, now, cooldown, maintenance)


def test_quorum_sees_a_backend_down_so_it_is_drained():
    actions = run(views(down={"nova/c2"}))
    assert [(a["action"], a["key"]) for a in actions] == [("drain", "nova/c2")]
    assert actions[0]["evidence"]["c1"]["up"] is False


def test_one_confused_controller_drains_nothing():
    assert run(views(down={"nova/c2"}, liars={"c1", "c3"})) == []


def test_too_few_answers_is_an_alert_not_an_action():
    actions = run(views(down={"nova/c2"}, answering=["c1"]))
    assert [(a["action"], a["alert"]) for a in actions] == [("alert", "no_quorum")]


def test_already_drained_everywhere_changes_nothing():
    assert run(views(down={"nova/c2"}, drained={"nova/c2"})) == []


def test_last_healthy_backend_is_never_drained():
    v = views(down={"nova/c1", "nova/c2", "nova/c3"}, drained={"nova/c1", "nova/c2"})
    actions = run(v)
    assert [(a["action"], a.get("alert"), a["key"]) for a in actions] == [("alert", "last_backend", "nova/c3")]


def test_two_failures_at_once_drain_both_while_one_healthy_backend_remains():
    actions = run(views(down={"nova/c2", "nova/c3"}))
    assert [(a["action"], a["key"]) for a in actions] == [("drain", "nova/c2"), ("drain", "nova/c3")]


def test_all_three_down_at_once_drains_none_and_alerts():
    # With no healthy backend left, draining helps no client: HAProxy keeps trying them all.
    actions = run(views(down={"nova/c1", "nova/c2", "nova/c3"}))
    assert [(a["action"], a.get("alert")) for a in actions] == [("alert", "last_backend")] * 3


def test_restore_only_what_the_remediation_drained_after_cooldown():
    v = views(drained={"nova/c2"})
    mine = {"nova/c2": {"state": "drain", "by": "remediation", "time": 900.0}}
    assert [(a["action"], a["key"]) for a in run(v, mine)] == [("restore", "nova/c2")]
    operators = {"nova/c2": {"state": "drain", "by": "operator", "time": 900.0}}
    assert run(v, operators) == []
    assert run(v, {}) == []  # drained by hand, no record: not ours to undo


def test_cooldown_suppresses_a_flap():
    v = views(drained={"nova/c2"})
    recent = {"nova/c2": {"state": "drain", "by": "remediation", "time": 995.0}}
    assert [a["action"] for a in run(v, recent)] == ["suppressed"]
    restored = {"nova/c2": {"state": "ready", "by": "remediation", "time": 995.0}}
    assert [a["action"] for a in run(views(down={"nova/c2"}), restored)] == ["suppressed"]


def test_planned_maintenance_is_left_alone():
    assert run(views(down={"nova/c2"}), maintenance=["nova/c2"]) == []


def test_a_backend_drained_on_a_quorum_is_not_serving_for_the_operator_either():
    """One rule for "the last healthy backend": up but drained on a quorum of HAProxies does
    not count, for the loop and for ``salt-run openstack_ha.drain`` alike."""
    views = {c: {"probes": {"nova/b": {"up": True}}, "admin": {"nova/b": "drain" if c != "c3" else "ready"}} for c in ("c1", "c2", "c3")}
    assert decide_lib.healthy("nova/b", views, 2) is True
    assert decide_lib.serving("nova/b", views, 2) is False
    views["c2"]["admin"]["nova/b"] = "ready"
    assert decide_lib.serving("nova/b", views, 2) is True
