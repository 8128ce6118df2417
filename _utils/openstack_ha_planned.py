"""
Planned work on a site, the master's side: one controller into maintenance and out of it, and
a rolling restart of a component through every controller, one at a time.

Maintenance of a controller, in order: the refusal checks (nothing is changed when one
fails); the markers on the controller (keepalived's track script fails, so its VRRP instances
drop below every other controller's priority, so the next one takes each VIP before this one
lets it go; the Galera health daemon answers 503,
so HAProxy moves the writer role away and ends that node's sessions); every backend of the
controller drained on every HAProxy (recorded as planned maintenance: the loop leaves them
alone); then it waits until another controller holds each VIP and no HAProxy sends Galera
traffic to it. Ending it does the reverse and waits until the controller is healthy again.

:depends: runs on the master (``_runners/openstack_ha.py``), functions take a
    :class:`openstack_ha_context.Context` first; the refusals are pure
    (``openstack_ha_decide.maintenance_refusal``, ``restart_refusal``).
"""

import time

from salt.exceptions import CommandExecutionError

COMPONENTS = ("haproxy", "keepalived", "galera", "rabbitmq")
STEP_TIMEOUT = 120  # seconds each wait of a maintenance step may take
SESSION_GRACE = 30  # seconds a drained node's database sessions get to end before they are cut
RESTART_TIMEOUT = 600  # seconds one component's restart may take (a Galera IST, a RabbitMQ sync)


def step_timeout():
    """The default bound of each maintenance wait, seconds."""
    return STEP_TIMEOUT


def restart_timeout():
    """The default bound of one component's restart, seconds."""
    return RESTART_TIMEOUT


class PlannedError(CommandExecutionError):
    """A step of planned work did not happen; the message says which and why."""


# Seconds a planned step waits for the controllers' reports. The call returns as soon as all
# answered; only a silent controller costs the whole bound. A report on a busy 2-core host
# takes several seconds (each one a Salt job), so the bound is generous.
VIEWS_TIMEOUT = 30


def _views(ctx, model):
    """Every controller's quick report (RabbitMQ from its metrics endpoint, no Erlang VM
    started): {controller: report or {"error": why}}."""
    controllers = [c["id"] for c in model["controllers"]]
    return ctx.call("status.collect", model["site"], controllers, VIEWS_TIMEOUT, True)


def _in_maintenance(views, records):
    return sorted({c for c, v in views.items() if v.get("maintenance")} | set(records.get("hosts") or {}))


def _wait(what, predicate, timeout):
    """Call ``predicate`` (it returns a true value when done) until it does or ``timeout``
    passes; raises PlannedError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise PlannedError("timed out after {} s waiting for {}".format(timeout, what))
        time.sleep(0.5)


def _on(ctx, host, fun, args=(), timeout=30):
    """Run ``fun`` on ``host`` alone; return its answer or raise PlannedError."""
    answer = ctx.call("publish.publish", [host], fun, args, timeout=timeout).get(host)
    if answer is None:
        raise PlannedError("{} did not answer {} within {} s".format(host, fun, timeout))
    if isinstance(answer, dict) and "error" in answer:
        raise PlannedError("{} on {}: {}".format(fun, host, answer["error"]))
    return answer


def _vips_moved(ctx, model, host):
    """{vip: holder} once every VIP address is held by exactly one controller other than
    ``host``, else None."""
    _, holders, _ = ctx.call("vips.vip_view", model)
    if all(len(who) == 1 and who[0] != host for who in holders.values()):
        return {vip: who[0] for vip, who in holders.items()}
    return None


def _galera_idle(ctx, model, host):
    """True once no serving HAProxy has a session open to ``host``'s Galera server."""
    if host not in [n["id"] for n in ctx.util("model.galera_nodes")(model)]:
        return True
    seen = [v["haproxy"]["servers"] for v in _views(ctx, model).values() if "error" not in v and v["haproxy"]["serving"]]
    return bool(seen) and all(((servers.get("galera") or {}).get(host) or {}).get("sessions", 0) == 0 for servers in seen)


def _galera_off(ctx, model, host):
    """True once every serving HAProxy sees ``host``'s Galera server down (its health daemon
    answers 503 in maintenance: the writer role and its sessions are elsewhere), or when
    Galera is not on ``host``."""
    if host not in [n["id"] for n in ctx.util("model.galera_nodes")(model)]:
        return True
    seen = [v["haproxy"]["servers"] for v in _views(ctx, model).values() if "error" not in v and v["haproxy"]["serving"]]
    return bool(seen) and all(((servers.get("galera") or {}).get(host) or {}).get("status") != "UP" for servers in seen)


def enter(ctx, site, host, progress, timeout=STEP_TIMEOUT):
    """
    Put ``host`` in planned maintenance (see the module docstring) and wait until it can be
    touched. Returns ``{"host", "ready": True, "vips": {vip: new holder}, "took"}``. Raises
    SaltInvocationError (a refusal: nothing changed) or PlannedError (a step failed: the
    controller stays in maintenance; end it, or fix and run again).
    """
    from salt.exceptions import SaltInvocationError

    started = time.monotonic()
    site, sites, model = ctx.call("sites.resolve_site", site)
    controllers = [c["id"] for c in model["controllers"]]
    views = _views(ctx, model)
    records = ctx.call("records.load", site)
    why = ctx.util("decide.maintenance_refusal")(
        host, controllers, views, [n["id"] for n in ctx.util("model.galera_nodes")(model)],
        [c for c in _in_maintenance(views, records) if c != host], ctx.util("model.majority")(len(controllers)))
    if not why:
        # No API loses its last healthy backend (the drain below would refuse half-way).
        checked, quorum = ctx.call("remediate.verify", model), ctx.util("model.quorum_size")(model)
        for key, svc in ctx.call("remediate.backends", model, None, host).items():
            if ctx.util("decide.last_serving")(key, list(ctx.call("remediate.backends", model, svc)), checked, quorum,
                                                records["maintenance"]):
                why = "{} is the last healthy backend of {}: {} cannot go into maintenance".format(host, svc, host)
                break
    if why:
        raise SaltInvocationError(why)
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        records.setdefault("hosts", {})[host] = {"since": time.time(), "by": "operator"}
        ctx.call("records.store", site, records)
    # 1. New connections (API and database) go elsewhere; the ones under way finish.
    progress("{}: draining every backend on every HAProxy (new connections go elsewhere)".format(host))
    _, refused = ctx.call("remediate.operator_drain", site, host, None, None, True, False)
    if refused:
        raise PlannedError("; ".join(refused))
    # 2. The VIPs move, make before break: one controller outranks this one and takes them.
    drop = ctx.util("decide.maintenance_drop")(host, controllers, views, _in_maintenance(views, records),
                                               model["keepalived"]["nopreempt"])
    progress("{}: keepalived priority -{}: the next controller takes its VIPs".format(host, drop))
    _on(ctx, host, "openstack_ha_maintenance.enter", (drop, "planned maintenance", ["keepalived"]))
    vips = _wait("every VIP to leave " + host, lambda: _vips_moved(ctx, model, host), timeout)
    # 3. Once its database sessions have ended, Galera's health daemon says no (nothing left
    # for HAProxy's shutdown-sessions to cut), and no HAProxy sends it database traffic.
    progress("{}: waiting for its database sessions to end, then Galera maintenance".format(host))
    try:
        _wait("the database sessions on " + host + " to end", lambda: _galera_idle(ctx, model, host), SESSION_GRACE)
    except PlannedError:
        progress("{}: database sessions still open after {} s: they are cut now".format(host, SESSION_GRACE))
    _on(ctx, host, "openstack_ha_maintenance.enter", (drop, "planned maintenance", ["galera"]))
    _wait("the Galera writer role to leave " + host, lambda: _galera_off(ctx, model, host), timeout)
    took = round(time.monotonic() - started, 1)
    ctx.call("records.fire", "openstack_ha/maintenance/entered", {"site": site, "host": host, "vips": vips, "took": took})
    progress("{}: in maintenance after {} s; it can be touched".format(host, took))
    return {"host": host, "ready": True, "vips": vips, "took": took}


def _healthy(ctx, model, host):
    """True once ``host`` serves again: HAProxy serving, keepalived running, its Galera node
    healthy (Synced, writable), its RabbitMQ app running."""
    view = _views(ctx, model).get(host) or {}
    if "error" in view or not view["haproxy"]["serving"] or not view["keepalived"]["running"]:
        return False
    if "galera" in view and not view["galera"].get("healthy"):
        return False
    return "rabbitmq" not in view or bool(view["rabbitmq"].get("app_running"))


def leave(ctx, site, host, progress, timeout=STEP_TIMEOUT):
    """
    End ``host``'s maintenance: markers removed, wait until it is healthy, its backends
    undrained on every HAProxy. Returns ``{"host", "ready": False, "took"}``.
    """
    from salt.exceptions import SaltInvocationError

    started = time.monotonic()
    site, sites, model = ctx.call("sites.resolve_site", site)
    if host not in sites[site]:
        raise SaltInvocationError("{!r} is not a controller of site {}".format(host, site))
    progress("{}: removing the Galera maintenance marker".format(host))
    _on(ctx, host, "openstack_ha_maintenance.leave", (["galera"],))
    progress("{}: waiting until it is healthy (HAProxy, keepalived, Galera Synced, RabbitMQ running)".format(host))
    _wait(host + " to be healthy", lambda: _healthy(ctx, model, host), timeout)
    progress("{}: undraining its backends on every HAProxy".format(host))
    ctx.call("remediate.operator_drain", site, host, None, None, False, False)
    _hand_vips_back(ctx, model, host, progress, timeout)
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        (records.get("hosts") or {}).pop(host, None)
        ctx.call("records.store", site, records)
    took = round(time.monotonic() - started, 1)
    ctx.call("records.fire", "openstack_ha/maintenance/ended", {"site": site, "host": host, "took": took})
    progress("{}: back in service after {} s".format(host, took))
    return {"host": host, "ready": False, "took": took}


def _hand_vips_back(ctx, model, host, progress, timeout):
    """Give ``host`` its VIPs back the way they left it, make before break: the controllers
    holding them now lower their own priority to 5 below ``host``'s (still lowered) one, so
    ``host`` alone outranks them and takes each VIP before they let go; then every priority
    is restored (no VIP moves again: ``host`` outranks them all). Without preemption, or when
    ``host`` is not the preferred holder, its priority is simply restored."""
    controllers = [c["id"] for c in model["controllers"]]
    priority = ctx.util("decide.vrrp_priorities")(controllers)
    _, holders, _ = ctx.call("vips.vip_view", model)
    others = sorted({who[0] for who in holders.values() if len(who) == 1 and who[0] != host})
    if model["keepalived"]["nopreempt"] or not others or any(priority[h] > priority[host] for h in others):
        _on(ctx, host, "openstack_ha_maintenance.leave", (["keepalived"],))
        return
    top = max(priority[h] for h in others)
    progress("{}: taking its VIPs back from {} (make before break)".format(host, ", ".join(others)))
    _on(ctx, host, "openstack_ha_maintenance.enter", (priority[host] - top + 5, "taking the VIPs back", ["keepalived"]))
    for holder in others:
        _on(ctx, holder, "openstack_ha_maintenance.enter", (10, "handing the VIPs back to " + host, ["keepalived"]))
    try:
        _wait("the VIPs to come back to " + host,
              lambda: all(who == [host] for who in ctx.call("vips.vip_view", model)[1].values()), timeout)
    finally:
        _on(ctx, host, "openstack_ha_maintenance.leave", (["keepalived"],))
        for holder in others:
            _on(ctx, holder, "openstack_ha_maintenance.leave", (["keepalived"],))


def _components_of(ctx, model, host, wanted):
    """The components of ``wanted`` that run on ``host`` (Galera and RabbitMQ only on their nodes)."""
    def member(section):
        return host in [n["id"] for n in ctx.util("model.cluster_nodes")(model, section)]
    return [c for c in wanted if c not in ("galera", "rabbitmq") or member(c)]


def rolling_restart(ctx, site, component, progress, timeout=RESTART_TIMEOUT):
    """
    Restart ``component`` (one of COMPONENTS, or ``all``) on every controller of the site,
    one at a time: maintenance on, restart, health gate, maintenance off, next. Stops at the
    first controller that does not come back healthy (it stays in maintenance) and says why.
    Returns ``{"component", "done": [{host, restarted, took}], "failed"?: why, "took"}``.
    Raises SaltInvocationError when it may not start (nothing changed).
    """
    from salt.exceptions import SaltInvocationError

    wanted = list(COMPONENTS) if component == "all" else [component]
    if any(c not in COMPONENTS for c in wanted):
        raise SaltInvocationError("component must be one of {} or all, got {!r}".format(", ".join(COMPONENTS), component))
    started = time.monotonic()
    site, sites, model = ctx.call("sites.resolve_site", site)
    controllers = [c["id"] for c in model["controllers"]]
    why = ctx.util("decide.restart_refusal")(controllers, _views(ctx, model), wanted)
    if why:
        raise SaltInvocationError(why)
    done = []
    for index, host in enumerate(controllers, start=1):
        components = _components_of(ctx, model, host, wanted)
        progress("[{}/{}] {}: {}".format(index, len(controllers), host, ", ".join(components) or "nothing to restart"))
        if not components:
            continue
        step = time.monotonic()
        try:
            enter(ctx, site, host, progress)
            for name in components:
                progress("[{}/{}] {}: restarting {}".format(index, len(controllers), host, name))
                _on(ctx, host, "openstack_ha_maintenance.restart", (name,), timeout=timeout)
            leave(ctx, site, host, progress)
        except (PlannedError, SaltInvocationError) as exc:
            reason = "{}: {} (it stays in maintenance until you end it)".format(host, exc)
            ctx.call("records.fire", "openstack_ha/rolling/stopped", {"site": site, "component": component, "host": host,
                                                                       "why": str(exc)})
            return {"component": component, "done": done, "failed": reason, "took": round(time.monotonic() - started, 1)}
        done.append({"host": host, "restarted": components, "took": round(time.monotonic() - step, 1)})
        ctx.call("records.fire", "openstack_ha/rolling/progress", {"site": site, "component": component, "host": host,
                                                                    "done": len(done), "of": len(controllers)})
    return {"component": component, "done": done, "took": round(time.monotonic() - started, 1)}


def forget(ctx, site, host, progress):
    """
    After ``host`` left the pillar's controllers (it was replaced): remove it from RabbitMQ's
    cluster view (``forget_cluster_node`` on a running node), check Galera no longer counts
    it, and drop the master's records about it (drains, maintenance). Returns ``{"host",
    "rabbitmq", "galera", "records"}``. Raises SaltInvocationError while ``host`` is still a
    controller in the pillar, PlannedError when no RabbitMQ node could forget it.
    """
    from salt.exceptions import SaltInvocationError

    site, sites, model = ctx.call("sites.resolve_site", site)
    if host in sites[site]:
        raise SaltInvocationError("{} is still a controller of site {}: take it out of openstack_ha:controllers "
                                  "(and apply) first".format(host, site))
    done = {"host": host}
    rabbit = [n["id"] for n in ctx.util("model.cluster_nodes")(model, "rabbitmq")]
    if rabbit:
        progress("RabbitMQ: forgetting rabbit@{}".format(host.split(".")[0]))
        answers = ctx.call("publish.publish", rabbit, "openstack_ha_rabbitmq.forget_node", (host,), timeout=60)
        ok = {c: a for c, a in answers.items() if isinstance(a, dict) and "error" not in a}
        if not ok:
            raise PlannedError("no RabbitMQ node forgot {}: {}".format(host, answers or "no answer"))
        members = next(iter(ok.values())).get("members") or []
        done["rabbitmq"] = {"members": members}
    galera = [n["id"] for n in ctx.util("model.galera_nodes")(model)]
    if galera:
        views = _views(ctx, model)
        sizes = sorted({(v.get("galera") or {}).get("cluster_size") for c, v in views.items() if c in galera and "galera" in v})
        done["galera"] = {"cluster_size": sizes, "expected": len(galera)}
        if sizes != [len(galera)]:
            done["galera"]["note"] = "Galera still counts another node: stop it cleanly (openstack_ha_galera.stop) where it runs"
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        suffix = "/" + host
        dropped = [k for k in records.get("backends") or {} if k.endswith(suffix)]
        for key in dropped:
            records["backends"].pop(key)
        records["maintenance"] = [k for k in records["maintenance"] if not k.endswith(suffix)]
        for record in records["backends"].values():
            # It will never confirm the loop's actions on the other backends (decide.missed).
            if host in (record.get("unconfirmed") or ()):
                record["unconfirmed"] = [c for c in record["unconfirmed"] if c != host]
        (records.get("hosts") or {}).pop(host, None)
        ctx.call("records.store", site, records)
    done["records"] = "dropped {} record(s) of {}".format(len(dropped), host)
    ctx.call("records.fire", "openstack_ha/controller/forgotten", {"site": site, "host": host})
    return done


def pause(ctx, site, reason, by="operator"):
    """
    Stop the loop acting on ``site`` (every beacon event of it is ignored, HAProxy's own
    checks stay) until :func:`resume`: for work on the whole site at once that takes every
    node of a cluster down on purpose (re-addressing, a cluster-wide restart), where the loop
    would otherwise start again what the operator stopped. Recorded in the site's records
    (shared by the engine and every ``salt-run``, read on every event) and shown by
    ``status``. Returns ``{"site", "paused"}``.
    """
    site, _, _ = ctx.call("sites.resolve_site", site)
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        records["paused"] = {"since": time.time(), "by": by, "reason": str(reason or "no reason given")}
        ctx.call("records.store", site, records)
    ctx.call("records.fire", "openstack_ha/remediation/paused", {"site": site, "reason": records["paused"]["reason"]})
    return {"site": site, "paused": records["paused"]}


def resume(ctx, site):
    """End :func:`pause` for ``site``; returns ``{"site", "resumed"}`` (False when it was not
    paused)."""
    site, _, _ = ctx.call("sites.resolve_site", site)
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        was = records.pop("paused", None)
        ctx.call("records.store", site, records)
    if was:
        ctx.call("records.fire", "openstack_ha/remediation/resumed", {"site": site})
    return {"site": site, "resumed": bool(was)}
