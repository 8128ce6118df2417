"""
Is the control plane healthy? Every controller's report gathered and summarised per site.

:depends: runs on the master; the controllers' ``openstack_ha.controller_report``. The
    functions that take a :class:`openstack_ha_context.Context` first do I/O;
    :func:`summarise` is pure. The table is drawn by the outputter
    ``_output/openstack_ha_status.py``.
"""

import time


def collect(ctx, site, controllers, timeout, quick=False):
    """Every controller's ``controller_report`` (``quick``: see there): {controller: report,
    or {"error": why}}."""
    returns = ctx.call("publish.publish", controllers, "openstack_ha.controller_report", (True,) if quick else (),
                       timeout=timeout)
    views = {}
    for ctrl in controllers:
        answer = returns.get(ctrl)
        views[ctrl] = answer if isinstance(answer, dict) and answer.get("site") == site else {"error": str(answer or "no answer")}
    return views


def summarise(site, controllers, views):
    """The site's summary from its controllers' reports: backends as each HAProxy sees them,
    VIP holders, Galera and RabbitMQ views, and the problems found (``healthy`` when none).
    Pure: no I/O."""
    backends, vips = {}, {}
    for ctrl, view in views.items():
        for backend, servers in (view.get("haproxy") or {}).get("servers", {}).items():
            for server, info in servers.items():
                cell = info["status"] if info["admin"] == "ready" else info["admin"].upper()
                backends.setdefault(backend, {}).setdefault(server, {})[ctrl] = cell
        for vip in view.get("vips") or []:
            vips.setdefault(vip, []).append(ctrl)
    problems = []
    for ctrl, view in views.items():
        if "error" in view:
            problems.append("{} did not answer: {}".format(ctrl, view["error"]))
            continue
        if not view["haproxy"]["serving"]:
            problems.append("HAProxy is not serving on {}".format(ctrl))
        if not view["keepalived"]["running"]:
            problems.append("keepalived is not running on {}".format(ctrl))
    for vip, holders in vips.items():
        if len(holders) > 1:
            problems.append("split brain: VIP {} held by {}".format(vip, ", ".join(holders)))
    for backend, servers in backends.items():
        if not any(c == "UP" for cells in servers.values() for c in cells.values()):
            problems.append("backend {} has no UP server on any HAProxy".format(backend))
    galera = {ctrl: view["galera"] for ctrl, view in views.items() if isinstance(view.get("galera"), dict)}
    if galera:
        uuids = sorted({g.get("cluster_uuid") for g in galera.values() if g.get("running") and g.get("cluster_uuid")})
        if len(uuids) > 1:
            problems.append("Galera split: nodes report different cluster UUIDs ({})".format(", ".join(uuids)))
        for ctrl, g in sorted(galera.items()):
            if not g.get("healthy"):
                problems.append("Galera on {}: {}".format(ctrl, g.get("reason") or "unhealthy"))
    rabbit = {ctrl: view["rabbitmq"] for ctrl, view in views.items() if isinstance(view.get("rabbitmq"), dict)}
    for ctrl, r in sorted(rabbit.items()):
        if not r.get("app_running"):
            problems.append("RabbitMQ on {} is {}".format(ctrl, "paused or stopped" if r.get("running") else "down"))
        if any((r.get("partitions") or {}).values()):
            problems.append("RabbitMQ partition seen by {}: {}".format(ctrl, r["partitions"]))
        for alarm in r.get("alarms") or []:
            problems.append("RabbitMQ alarm: " + alarm)
    pending = {ctrl: view["pending_restart"] for ctrl, view in sorted(views.items()) if view.get("pending_restart")}
    in_maintenance = sorted(ctrl for ctrl, view in views.items() if view.get("maintenance"))
    return {"site": site, "controllers": controllers, "vip_holders": vips, "backends": backends, "galera": galera,
            "rabbitmq": rabbit, "healthy": not problems, "problems": sorted(set(problems), key=problems.index),
            "pending_restart": pending, "hosts_in_maintenance": in_maintenance}


def _held_out(backends, holders):
    """``["nova/lab-ctrl2 (DRAIN on lab-ctrl1)", ...]``: for every server of ``backends``
    (``{backend: {server: {controller: HAProxy state}}}``), the controllers among
    ``holders(key, cells)`` (``key`` "backend/server", ``cells`` its states by controller) whose
    HAProxy holds it out of service (``DRAIN``/``MAINT``); servers with none are left out. Pure."""
    found = []
    for backend, servers in sorted(backends.items()):
        for server, cells in sorted(servers.items()):
            key = "{}/{}".format(backend, server)
            held = sorted(c for c in set(holders(key, cells)) if cells.get(c) in ("DRAIN", "MAINT"))
            if held:
                found.append("{} ({} on {})".format(key, "/".join(sorted({cells[c] for c in held})), ", ".join(held)))
    return found


def unowned_drains(backends, records):
    """The runtime drains nobody owns: ``["nova/lab-ctrl2 (DRAIN on lab-ctrl1)", ...]`` for
    every server an HAProxy holds out of service (``DRAIN``/``MAINT``) that neither the loop
    (its last action on that backend a drain) nor planned maintenance put there. Such a drain
    was made by hand, or outlived whoever made it; a restart would keep it. Pure."""
    last = records.get("backends") or {}
    owned = set(records.get("maintenance") or [])
    owned |= {key for key, record in last.items() if (record or {}).get("state") == "drain"}

    def holders(key, cells):
        # A restore of the loop's that these controllers missed is the loop's to finish.
        missed = set((last.get(key) or {}).get("unconfirmed") or ())
        return () if key in owned else [c for c in cells if c not in missed]
    return _held_out(backends, holders)


def missed_restores(backends, records):
    """The loop's restores some HAProxies still miss: ``["nova/lab-ctrl2 (DRAIN on
    lab-ctrl3)", ...]`` where the loop's last action on a backend was a restore, the
    controller did not confirm it (its record's ``unconfirmed``) and its HAProxy, in
    ``backends`` (as :func:`unowned_drains` takes them), holds the backend out of service. The
    loop applies the restore there again once it sees that controller's view. Pure."""
    last = records.get("backends") or {}

    def holders(key, cells):
        record = last.get(key) or {}
        if record.get("by") != "remediation" or record.get("state") != "ready":
            return ()
        return record.get("unconfirmed") or ()
    return _held_out(backends, holders)


def site_status(ctx, site=None, timeout=10, recent=8, quick=False):
    """
    ``{site: summary}`` for ``site`` (default: every site the master's pillar defines): the
    summary of :func:`summarise`, plus the pillar's state, the ignored events, the Keystone
    catalog against the model, planned maintenance and the ``recent`` latest decisions.
    ``quick``: the controllers read RabbitMQ from its metrics endpoint (no partitions, no
    ``rabbitmqctl``: the loop's metrics gather it every few seconds). Raises
    SaltInvocationError for an unknown ``site``.
    """
    from salt.exceptions import SaltInvocationError

    sites = ctx.call("sites.sites")
    if site is not None:
        if site not in sites:
            raise SaltInvocationError("unknown site {!r}; known: {}".format(site, ", ".join(sorted(sites)) or "none"))
        sites = {site: sites[site]}
    summaries = {}
    for name, ctrls in sorted(sites.items()):
        summary = summarise(name, ctrls, collect(ctx, name, ctrls, timeout, quick))
        model = ctx.call("sites.site_model", ctrls[0])
        bad = ctx.call("sites.bad_pillar", name)
        if bad:
            summary["healthy"] = False
            summary["problems"].insert(0, "the pillar of site {} is invalid: {}".format(name, bad["error"]))
            summary["bad_pillar"] = {"error": bad["error"],
                                     "acting_on": "the loop acts on the last valid model" if model else "NO valid model: remediation stopped"}
        summary["ignored"] = ctx.util("trace.recent")(ctx.opts)
        if model is not None:
            holders = {vip: who[0] for vip, who in summary["vip_holders"].items() if len(who) == 1}
            summary["catalog"] = ctx.call("catalog_sync.view", model, holders)
            if summary["catalog"] is not None and not summary["catalog"]["ok"]:
                summary["problems"].append("Keystone catalog: " + (summary["catalog"].get("problem") or "{} endpoint(s) not as wanted".format(
                    len(summary["catalog"]["drift"]))))
                summary["healthy"] = False
        records = ctx.call("records.load", name)
        summary["maintenance"] = records["maintenance"]
        if records.get("paused"):
            summary["paused"] = records["paused"]
            summary["problems"].append("remediation is PAUSED since {} ({}): salt-run openstack_ha.resume ends it".format(
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(records["paused"]["since"])), records["paused"]["reason"]))
            summary["healthy"] = False
        for drain in missed_restores(summary["backends"], records):
            summary["problems"].append("a restore of the loop's that an HAProxy missed: {}; the loop applies it "
                                       "again at that controller's next heartbeat".format(drain))
            summary["healthy"] = False
        for drain in unowned_drains(summary["backends"], records):
            summary["problems"].append("a drain nobody owns (not the loop, not maintenance): {}; "
                                       "salt-run openstack_ha.undrain ends it".format(drain))
            summary["healthy"] = False
        summary["recent"] = ctx.call("records.history", name)[-int(recent):]
        summaries[name] = summary
    return summaries
