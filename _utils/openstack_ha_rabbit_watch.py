"""
RabbitMQ, watched from the master: partitions, resource alarms and nodes down raised as
alerts (once per condition), a partitioned minority healed, a dead node started again.

:depends: runs on the master; every function takes the
    :class:`openstack_ha_context.Context` first. The choices are ``openstack_ha_decide``'s
    ``rabbit_*`` functions (pure, unit-tested).
"""

import time

REPORT_TIMEOUT = 20  # every rabbitmqctl call starts an Erlang VM: seconds, not milliseconds
QUICK_TIMEOUT = 10  # the nodes' own /metrics endpoints: milliseconds, plus the Salt round trip
REPAIR_TIMEOUT = 150


def _forget_alerts(ctx, site):
    """The cluster is healthy again: the next problem is news."""
    if any(k.startswith("rabbitmq_") for k in (ctx.call("records.load", site).get("rabbitmq") or {})):
        with ctx.call("records.lock", site):
            records = ctx.call("records.load", site)
            ended = [k for k in records.get("rabbitmq", {}) if k.startswith("rabbitmq_")]
            for kind in ended:
                del records["rabbitmq"][kind]
            ctx.call("records.store", site, records)
        for kind in ended:
            ctx.call("records.fire", "openstack_ha/resolved/" + kind, {"site": site, "why": "RabbitMQ is whole again"})


def _views(ctx, site, nodes, data):
    """Every answering node's view: first from the nodes' own management API or metrics
    endpoints (a Salt round trip, no Erlang VM started); enough when every running node
    answered from its management API and none lists a partition; else from ``rabbitmqctl``
    (seconds) when those cannot settle it: a node without the endpoint, a split between nodes that both run (only
    ``rabbitmqctl`` tells a partition), a report or an open alert about a partition, an open
    node-down alert (the node may come back partitioned)."""
    check, own = ctx.util("decide.valid_rabbit_view"), ctx.util("rabbit_view.speaks_for_itself")

    def valid(ctrl, view):
        return check(view) and own(ctrl, view)

    views = {n: v for n, v in ctx.call("publish.ask", nodes, "openstack_ha_rabbitmq.quick_report", timeout=QUICK_TIMEOUT,
                                        channel="rabbit").items() if valid(n, v)}
    if (views and all(v.get("source") == "api" or not v.get("app_running") for v in views.values())
            and not any((v.get("partitions") or {}).values() for v in views.values())):
        # Every running node answered from its management API and none lists a partition; a
        # node whose app does not run has nothing more to tell. A partition list in the API is
        # refreshed with the management statistics (every 5 s) and outlives the heal that
        # ended it: ``rabbitmqctl`` tells it as it stands now.
        return views
    quick = all(v.get("source") == "metrics" for v in views.values())
    # A node back from down or cut off may come back partitioned (partition_handling ignore):
    # only rabbitmqctl tells, so an open node-down or partition alert means asking it.
    open_alerts = ctx.call("records.load", site).get("rabbitmq") or {}
    if (quick and not any((data.get("partitions") or {}).values()) and not ctx.util("rabbit_view.split_suspected")(views)
            and "rabbitmq_partition" not in open_alerts and "rabbitmq_node_down" not in open_alerts):
        return views
    return {n: v for n, v in ctx.call("publish.ask", nodes, "openstack_ha_rabbitmq.report", timeout=REPORT_TIMEOUT,
                                      channel="slow").items() if valid(n, v)}


def check(ctx, model, reporter, data):
    """
    Ask every RabbitMQ node of the site for its view of the cluster; alert on partitions
    (``rabbitmq_partition``), resource alarms (``rabbitmq_alarm``) and nodes that are down or
    paused (``rabbitmq_node_down``); with ``rabbitmq:heal_partitions``, restart the app of
    one partitioned minority node; start a node whose RabbitMQ does not run. One repair per
    cooldown, never two at once, outside the site lock.
    """
    healthy = ctx.util("decide.rabbit_healthy")
    nodes = [n["id"] for n in ctx.util("model.cluster_nodes")(model, "rabbitmq")]
    if reporter not in nodes:
        return []
    site = model["site"]
    expected = data.get("expected") or []
    if data.get("kind") == "heartbeat" and healthy(data, expected):
        _forget_alerts(ctx, site)
        return []
    views = _views(ctx, site, nodes, data)
    if not views:
        return []  # no node answered: nothing to judge by (a controller silent is alerted on by itself)
    # Mnesia's running nodes in the management-API views tell a split before the nodes'
    # partition lists do. ``split`` is the master's reading, set on every view whatever path
    # it came by: what a node says of it is never read.
    split = ctx.util("rabbit_view.mnesia_split")(views)
    for view in views.values():
        view["split"] = split.get(view.get("node"), [])
    expected = sorted({n for v in views.values() for n in v.get("expected") or []}) or expected
    problems = ctx.util("decide.rabbit_problems")(views, expected)
    decisions, todo = [], None
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        seen = records.setdefault("rabbitmq", {})
        now = time.time()
        for kind, why, subject in ctx.util("decide.rabbit_news")(problems, seen, now, model["remediation"]["heartbeat"]):
            seen[kind] = {"subject": subject, "time": now}
            entry = {"what": "alert", "alert": kind, "service": "rabbitmq", "why": why, "evidence": views,
                     "decided_by": "remediation", "reported_by": reporter, "time": now}
            ctx.call("records.announce", records, site, entry, "openstack_ha/alert/" + kind)
            decisions.append(entry)
        cleared = [k for k in list(seen) if k.startswith("rabbitmq_") and k not in {p[0] for p in problems}]
        for kind in cleared:
            del seen[kind]
        remedy = ctx.util("decide.rabbit_remedy")(nodes, ctx.util("model.majority")(len(nodes)), views, seen, now, model["remediation"]["cooldown"],
                                                 model["rabbitmq"].get("heal_partitions", True),
                                                 hands_off=set(records.get("hosts") or {}))
        if remedy and remedy[0] == "heal":
            seen["heal_time"] = now
            todo = ("heal", remedy[1], "openstack_ha_rabbitmq.restart_app", "openstack_ha/rabbitmq/healed",
                    "{} is on the minority side of a partition: its app restarted to rejoin the majority".format(remedy[1]))
        elif remedy:
            # Its controller answers but its RabbitMQ does not run at all (killed, crashed):
            # start it again; it rejoins its cluster by itself.
            seen["restart_time"] = now
            todo = ("restart", remedy[1], "openstack_ha_rabbitmq.start_unless_busy", "openstack_ha/rabbitmq/restarted",
                    "RabbitMQ is not running on {} while its controller answers: started again".format(remedy[1]))
        ctx.call("records.store", site, records)
    for kind in cleared:
        ctx.call("records.fire", "openstack_ha/resolved/" + kind, {"site": site, "why": "no longer seen"})
    if todo:
        # Outside the site lock: a RabbitMQ restart takes seconds, drains must not wait for it.
        what, target, fun, tag, why = todo
        answer = ctx.call("publish.publish", [target], fun, timeout=REPAIR_TIMEOUT, channel="slow").get(target)
        entry = {"what": what, "service": "rabbitmq", "backend": target, "why": why, "evidence": views, "result": answer,
                 "decided_by": "remediation", "reported_by": reporter, "time": time.time()}
        ctx.call("records.record", site, [(entry, tag)])
        decisions.append(entry)
    return decisions
