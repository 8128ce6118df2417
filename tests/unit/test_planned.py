"""Planned work: when a controller may go into maintenance, when a rolling restart may start,
and which runtime drains nobody owns. Pure decisions; the lab tests run the real thing."""

from tests.conftest import load_module

decide = load_module("_utils/openstack_ha_decide.py", "openstack_ha_decide")
status = load_module("_utils/openstack_ha_status.py", "openstack_ha_status")
CTRLS = ["c1", "c2", "c3"]


def report(serving=True, galera_healthy=True, maintenance=(), rabbit_running=("c1", "c2", "c3")):
    return {"haproxy": {"serving": serving}, "keepalived": {"running": serving}, "maintenance": list(maintenance),
            "galera": {"healthy": galera_healthy, "reason": None if galera_healthy else "not Synced"},
            "rabbitmq": {"app_running": True, "members": list(CTRLS), "running_nodes": list(rabbit_running)}}


def views(**per_ctrl):
    return {c: per_ctrl.get(c, report()) for c in CTRLS}


def refusal(host, views_, in_maintenance=()):
    return decide.maintenance_refusal(host, CTRLS, views_, CTRLS, list(in_maintenance), 2)


def test_a_whole_site_lets_any_one_controller_go():
    assert all(refusal(c, views()) is None for c in CTRLS)


def test_two_of_three_at_once_are_refused():
    assert refusal("c2", views(c1=report(maintenance=["keepalived"])), ["c1"]) == \
        "c1 is in maintenance already: at most 1 of the 3 controllers at once (a majority stays in service)"


def test_the_only_controller_that_could_hold_the_vips_stays():
    why = refusal("c1", views(c2={"error": "no answer"}, c3=report(serving=False)))
    assert why.startswith("no other controller can hold the VIPs")


def test_the_only_healthy_galera_node_stays():
    why = refusal("c3", views(c1=report(galera_healthy=False), c2=report(galera_healthy=False)))
    assert why == "c3 is the only healthy Galera node: the writer role would have nowhere to go"


def test_an_unknown_host_is_named():
    assert refusal("c9", views()).startswith("'c9' is not a controller of this site")


def test_a_rolling_restart_waits_for_a_whole_site():
    assert decide.restart_refusal(CTRLS, views(), ["galera"]) is None
    assert decide.restart_refusal(CTRLS, views(c2={"error": "no answer"}), ["haproxy"]).startswith("c2 did not answer")
    assert decide.restart_refusal(CTRLS, views(c3=report(galera_healthy=False)), ["galera"]).startswith("Galera on c3 is not healthy")
    assert decide.restart_refusal(CTRLS, views(c1=report(rabbit_running=("c1", "c2"))), ["rabbitmq"]) == \
        "RabbitMQ on c1 is not whole (running 2 of 3)"
    assert "in maintenance" in decide.restart_refusal(CTRLS, views(c1=report(maintenance=["galera"])), ["haproxy"])


def test_a_rolling_restart_judges_rabbitmq_from_the_metrics_view_too():
    """The runner's views read RabbitMQ from its metrics endpoint, which exports no members
    (None): the expected nodes stand in (a whole cluster was refused, "running 3 of 0")."""
    def metrics(running):
        return dict(report(), rabbitmq={"app_running": True, "members": None, "expected": list(CTRLS),
                                        "running_nodes": list(running), "source": "metrics"})
    assert decide.restart_refusal(CTRLS, {c: metrics(CTRLS) for c in CTRLS}, ["rabbitmq"]) is None
    assert decide.restart_refusal(CTRLS, dict(views(), c2=metrics(("c1", "c2"))), ["rabbitmq"]) == \
        "RabbitMQ on c2 is not whole (running 2 of 3)"


def test_a_drain_nobody_owns_is_reported_and_owned_ones_are_not():
    backends = {"nova": {"c2": {"c1": "DRAIN", "c2": "DRAIN", "c3": "UP"}, "c3": {"c1": "MAINT", "c2": "UP", "c3": "UP"}},
                "glance": {"c1": {"c1": "DRAIN", "c2": "DRAIN", "c3": "DRAIN"}}}
    records = {"maintenance": ["glance/c1"], "backends": {"nova/c3": {"state": "ready"}}}
    assert status.unowned_drains(backends, records) == ["nova/c2 (DRAIN on c1, c2)", "nova/c3 (MAINT on c1)"]
    records["backends"]["nova/c2"] = {"state": "drain", "by": "remediation"}
    assert status.unowned_drains(backends, records) == ["nova/c3 (MAINT on c1)"]


def test_a_restore_an_haproxy_missed_is_the_loops_not_a_drain_nobody_owns():
    """The loop restored nova/c2; c1 did not confirm it and its HAProxy still drains it: the
    status names the missed restore (the loop finishes it), not a drain nobody owns. c2 holds a
    drain as well, but confirmed the restore: that one was set by hand since."""
    backends = {"nova": {"c2": {"c1": "DRAIN", "c2": "DRAIN", "c3": "UP"}}}
    records = {"maintenance": [], "backends": {"nova/c2": {"state": "ready", "by": "remediation", "unconfirmed": ["c1", "c3"]}}}
    assert status.missed_restores(backends, records) == ["nova/c2 (DRAIN on c1)"]
    assert status.unowned_drains(backends, records) == ["nova/c2 (DRAIN on c2)"]
    records["backends"]["nova/c2"]["by"] = "operator"
    assert status.missed_restores(backends, records) == []


def test_the_priority_drop_leaves_one_controller_to_preempt():
    """lab-ctrl1 (250) in maintenance drops to 235: lab-ctrl2 (240) alone outranks it, lab-ctrl3
    (230) does not, so one controller takes each VIP. With lab-ctrl2 down, 225 (below 230)."""
    assert decide.maintenance_drop("c1", CTRLS, views(), [], False) == 15
    assert decide.maintenance_drop("c1", CTRLS, views(c2={"error": "down"}), [], False) == 25
    assert decide.maintenance_drop("c2", CTRLS, views(), [], False) == 5  # c1 (250) outranks it already
    assert decide.maintenance_drop("c1", CTRLS, views(), [], True) == 254  # nopreempt: FAULT
    assert decide.maintenance_drop("c1", CTRLS, views(c2={"error": "down"}, c3=report(serving=False)), [], False) == 254


def test_forgetting_a_controller_drops_it_from_the_loops_unconfirmed_actions_too():
    """c3 left the site: its records go, and it leaves every other backend's ``unconfirmed``
    (it would never confirm them; its name there would stay for good)."""
    import threading

    planned = load_module("_utils/openstack_ha_planned.py", "openstack_ha_planned")
    context = load_module("_utils/openstack_ha_context.py", "openstack_ha_context")
    records = {"maintenance": ["nova/c3"], "decisions": [], "backends": {
        "nova/c3": {"state": "drain", "by": "remediation", "time": 1.0},
        "nova/c2": {"state": "ready", "by": "remediation", "time": 2.0, "unconfirmed": ["c1", "c3"]}}}
    fired = []
    ctx = context.Context({"id": "master"}, {
        "openstack_ha_sites.resolve_site": lambda ctx, site: ("lab", {"lab": ["c1", "c2", "c4"]}, {"site": "lab"}),
        "openstack_ha_model.cluster_nodes": lambda model, name: [],
        "openstack_ha_model.galera_nodes": lambda model: [],
        "openstack_ha_records.lock": lambda ctx, site: threading.Lock(),
        "openstack_ha_records.load": lambda ctx, site: records,
        "openstack_ha_records.store": lambda ctx, site, data: None,
        "openstack_ha_records.fire": lambda ctx, tag, data: fired.append(tag),
    }, {})
    done = planned.forget(ctx, None, "c3", lambda message: None)
    assert done["records"] == "dropped 1 record(s) of c3"
    assert records["backends"] == {"nova/c2": {"state": "ready", "by": "remediation", "time": 2.0, "unconfirmed": ["c1"]}}
    assert records["maintenance"] == [] and fired == ["openstack_ha/controller/forgotten"]
