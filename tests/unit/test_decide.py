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


def test_a_restore_missed_by_a_controller_is_applied_again_only_where_it_was_missed():
    """The loop restored nova/c2, c3 did not confirm it: where c3's HAProxy still holds the
    drain, the restore is decided again (no cooldown: the same decision); where c3's view does
    not show it drained, or the restore was an operator's, or c3 is not listed, nothing."""
    v = views()
    v["c3"]["admin"]["nova/c2"] = "drain"
    mine = {"nova/c2": {"state": "ready", "by": "remediation", "time": 995.0, "unconfirmed": ["c3"]}}
    actions = run(v, mine)
    assert [(a["action"], a["key"]) for a in actions] == [("restore", "nova/c2")]
    assert "did not reach the HAProxy of c3" in actions[0]["reason"] and actions[0]["only"] == ["c3"]
    assert run(views(), mine) == []
    assert run(v, {"nova/c2": dict(mine["nova/c2"], unconfirmed=["c1"])}) == []
    assert run(v, {"nova/c2": dict(mine["nova/c2"], by="operator")}) == []
    assert run(v, {"nova/c2": {"state": "ready", "by": "remediation", "time": 995.0}}) == []  # drained by hand since
    v["c3"]["probes"]["nova/c2"]["up"] = False
    assert [a["action"] for a in run(v, mine)] == ["restore"]  # a quorum (c1, c2) sees it up
    v["c2"]["probes"]["nova/c2"]["up"] = False
    assert [a["action"] for a in run(v, mine)] == ["suppressed"]  # down by a quorum: the drain's rule, cooling


def test_confirmed_keeps_the_controllers_not_seen_caught_up():
    record = {"state": "ready", "by": "remediation", "time": 1.0, "unconfirmed": ["c2", "c3"]}
    v = views(answering=["c1", "c2"])
    assert decide_lib.confirmed({"nova/c2": record}, v, BACKENDS) == {"nova/c2": ["c3"]}
    v["c2"]["admin"]["nova/c2"] = "drain"
    assert decide_lib.confirmed({"nova/c2": record}, v, BACKENDS) == {}
    assert decide_lib.confirmed({"nova/c2": record}, views(), ["nova/c1"]) == {}
    assert decide_lib.confirmed({"nova/c2": record}, views(), BACKENDS) == {"nova/c2": []}
    drain = {"state": "drain", "by": "remediation", "time": 1.0, "unconfirmed": ["c3"]}
    assert decide_lib.confirmed({"nova/c2": drain}, views(), BACKENDS) == {}  # c3 still serves it
    assert decide_lib.confirmed({"nova/c2": drain}, views(drained={"nova/c2"}), BACKENDS) == {"nova/c2": []}
