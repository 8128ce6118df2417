"""
The VIPs: who holds each one, as a quorum of controllers says; split brains, orphaned and
unconfirmed VIPs raised as alerts; with one holder per VIP, the Keystone catalog follows.

:depends: runs on the master; every function takes the
    :class:`openstack_ha_context.Context` first. The classification is
    ``openstack_ha_decide.classify_vips`` (pure, unit-tested).
"""

import threading
import time

# Seconds to wait at most for the controllers' answers: the wait ends once every controller not
# known to be cut off answered; a busy 2-core host takes 1-3 s for a Salt round trip.
VIEW_TIMEOUT = 10


def vip_view(ctx, model):
    """Ask every controller which VIPs it holds. Returns (answers {controller: [vip names]},
    holders {vip: [controllers]}, quorum reached)."""
    controllers = [c["id"] for c in model["controllers"]]
    addresses = ctx.util("model.vip_addresses")(model)
    valid = ctx.util("decide.valid_vip_list")
    held = {c: a for c, a in ctx.call("publish.publish", controllers, "openstack_ha_probe.vips_held", (addresses,),
                                      timeout=VIEW_TIMEOUT, wait_for=ctx.call("publish.wait_for", model)).items()
            if valid(a)}
    return held, _holders(held, addresses), len(held) >= ctx.util("model.quorum_size")(model)


def _holders(held, addresses):
    """``{vip: [controllers holding it]}`` for every VIP of ``addresses``, from ``held``
    (``{controller: [vip names]}``)."""
    return {vip: sorted(c for c, names in held.items() if vip in names) for vip in sorted(addresses)}


def heartbeat_due(ctx, model):
    """True when a VIP heartbeat should be followed by a view: no view of the site's VIPs was
    taken or claimed (for any event) within 90 % of the heartbeat interval; a True answer
    claims the view at once, so heartbeats handled together (the controllers' beacons tick in
    step, and the loop has several workers) get one view between them. Each controller's VIP
    beacon heartbeats; a view asks every controller (unless their signed heartbeat reports
    answer: :func:`reported_view`), so one view per interval resyncs as well as one per
    heartbeat, at a third of the cost. A change event always gets its view."""
    views = ctx.shared("vip_views")
    with ctx.shared("vip_views_claim", threading.Lock):
        last, now = views.get(model["site"]), time.monotonic()
        if last is not None and now - last < 0.9 * float(model["remediation"]["heartbeat"]):
            return False
        views[model["site"]] = now
        return True


def reported_view(ctx, model, heartbeat=False):
    """The view :func:`vip_view` would take, from the controllers' signed VIP reports instead
    (``reports.vip_holders``: every controller's report fresh, one holder per VIP), or None:
    take the view then. For a change, a report counts for three heartbeat intervals and a
    move reported by one end waits a moment (:data:`REPORT_WAIT`) for the other's; for the
    periodic view of a ``heartbeat``, every controller must have reported within
    :data:`HEARTBEAT_REPORT_AGE` heartbeat intervals (its own heartbeat renews it), and
    nothing is waited for."""
    addresses = ctx.util("model.vip_addresses")(model)
    interval = float(model["remediation"]["heartbeat"])
    held = ctx.call("reports.vip_holders", model, sorted(addresses), wait=0.0 if heartbeat else REPORT_WAIT,
                    max_age=(HEARTBEAT_REPORT_AGE if heartbeat else 3) * interval)
    if held is None:
        return None
    return held, _holders(held, addresses), True


# Seconds a VIP change waits at most for the other controllers' reports to give one holder per
# VIP (the controller losing a VIP and the one gaining it report a moment apart), before the view.
REPORT_WAIT = 0.3
# The periodic view of a heartbeat takes the controllers' signed reports when each arrived
# within this many heartbeat intervals (every VIP beacon signs each heartbeat): one missed
# heartbeat, and the controllers are asked. In a healthy site no heartbeat then costs a Salt
# job on every controller (each job costs a controller about 0.1 s of CPU: Salt loads its
# modules for every job).
HEARTBEAT_REPORT_AGE = 1.5


def check_vips(ctx, model, reporter, data=None, seen=None, reported=False):
    """
    Ask every controller which VIPs it holds; alert on a split brain, an orphaned VIP, a VIP
    no answering controller holds while some did not answer (``vip_unconfirmed``) or too few
    answers (``no_quorum``). With a quorum and one holder per VIP, make the Keystone catalog
    follow (``catalog_sync.follow``); never while the view is split or short of a quorum.
    ``seen`` (a dict), when given, receives the holders found: ``{vip: [controllers]}``.
    ``reported``: ``data`` is a change or heartbeat whose signed VIP report was kept
    (``reports.accept_vips``): when every controller's signed report gives each VIP one holder
    (:func:`reported_view`), they are the view, and no controller is asked (a repoint's record
    says ``view_from: signed reports``, else ``view``).
    """
    looked = (data or {}).get("time")
    # Seconds from the beacon seeing the change to this check starting (the event's way through
    # the master and the engine); kept in the record of a repoint, with the other parts.
    event_lag = round(time.time() - looked, 3) if isinstance(looked, (int, float)) else None
    asked = time.monotonic()
    kind = (data or {}).get("kind")
    view = reported_view(ctx, model, heartbeat=kind == "heartbeat") if reported and kind in ("change", "heartbeat") else None
    source = "signed reports" if view is not None else "view"
    held, holders, _ = view if view is not None else vip_view(ctx, model)
    ctx.shared("vip_views")[model["site"]] = time.monotonic()
    if seen is not None:
        seen.update(holders)
    view_took = round(time.monotonic() - asked, 3)
    found = ctx.util("decide.classify_vips")(holders, sorted(held), [c["id"] for c in model["controllers"]],
                                            ctx.util("model.quorum_size")(model))
    if found:
        base = {"what": "alert", "decided_by": "remediation", "reported_by": reporter, "time": time.time(),
                "site": model["site"], "evidence": held}
        decisions = [dict(base, **alert) for alert in found]
        ctx.call("records.record", model["site"], [(entry, "openstack_ha/alert/" + entry["alert"]) for entry in decisions])
        return decisions
    return ctx.call("catalog_sync.follow", model, {vip: who[0] for vip, who in holders.items()}, held, reporter, data or {},
                    {"event_lag": event_lag, "view_took": view_took, "reported_at": looked if event_lag is not None else None,
                     "view_from": source})
