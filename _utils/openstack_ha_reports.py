"""
Signed reports: a controller's own word on its backends, carried by its backend watcher's
change event, so that the loop acts on a quorum of agreeing reports without asking every
controller again (one Salt publish fewer between a crash and the drain).

:depends: runs on the master; every function takes the :class:`openstack_ha_context.Context`
    first. The controllers' side is ``_beacons/openstack_ha_backends.py`` (``watch`` set).

A report is believed only when it is signed by the reporter's accepted minion key as the
answer to ``openstack_ha_probe.report`` with the nonce ``report:<probe time>``
(``_utils/openstack_ha_publish.py`` checks the signature, exactly as for a verification
answer), when that probe time is within :data:`SKEW` of this master's clock and newer than the
last report kept from that controller (so a captured report cannot be played again), and when
it holds a well-formed view. The master keeps the newest report of each controller in memory
(per master: in a hot-hot pair each master receives every event); a report counts for
``max_age`` seconds after it arrived. Anything short of a quorum that agrees falls back to the
verification publish.
"""

import json
import re
import threading
import time

REPORT_FUN = "openstack_ha_probe.report"
# How far a report's probe time may stray from this master's clock, in seconds. Controllers
# and masters keep NTP time; a controller outside this is not believed (the loop then verifies
# with it), and the bound limits what a report replayed to a freshly started master could be.
SKEW = 5.0
_NONCE = re.compile(r"report:(\d{9,11}(?:\.\d{1,6})?)\Z")


def _store(ctx):
    return ctx.shared("signed_reports", lambda: {"cond": threading.Condition(), "sites": {}})


def _authenticated(ctx, reporter, reply, nonce, fun, now, what, quiet=False):
    """``(probe time, answer)`` of a signed ``reply`` from ``reporter``: its nonce matches
    ``nonce`` (a compiled pattern with the probe time as group 1) within :data:`SKEW` of
    ``now``, and it is signed by ``reporter``'s accepted key as the answer to ``fun``; else
    None (counted as ignored, ``what`` naming the beacon, unless ``quiet``)."""
    note = (lambda *args: None) if quiet else (lambda *args: ctx.call("records.note_ignored", *args))
    if not isinstance(reply, dict) or not isinstance(reply.get("body"), str):
        return None
    claimed, when = _claimed(reply, nonce)
    if claimed is None or abs(when - now) > SKEW:
        note(off_clock(when, now), reporter, what)
        return None
    ok, answer = ctx.call("publish.authenticated_answer", reporter, claimed, fun, reply)
    if not ok:
        note("unauthenticated report", reporter, what)
        return None
    return when, answer


def off_clock(when, now):
    """Why a report probed at ``when`` (epoch seconds, or None: no readable probe time) is not
    believed at ``now``: the words the intake's trace counts it under. A report more than
    :data:`SKEW` behind this master's clock is most often one the controller handed over late
    (a minion's main loop held by a pillar refresh delayed one by 8 s in the lab), one ahead of
    it a controller's clock that is wrong: an operator reading the trace needs to know which."""
    if when is None:
        return "report without a probe time"
    if when < now:
        return "report that reached this master more than {:g} s after its probe (late, or the controller's clock behind)".format(SKEW)
    return "report probed more than {:g} s ahead of this master's clock (the controller's clock ahead)".format(SKEW)


def _claimed(reply, nonce):
    """``(nonce, time)`` that a signed ``reply``'s body claims, when its nonce matches
    ``nonce`` (a compiled pattern with the time as group 1), else ``(None, None)``. Nothing
    is checked here: see :func:`_authenticated`."""
    try:
        claimed = json.loads(reply["body"]).get("nonce")
    except (TypeError, KeyError, ValueError, AttributeError):
        return None, None
    match = nonce.match(claimed) if isinstance(claimed, str) else None
    return (claimed, float(match.group(1))) if match else (None, None)


def accept(ctx, model, reporter, data, now=None, arrived=None, quiet=False):
    """
    Keep the signed report of a backend change event's ``data`` from ``reporter`` (a
    controller of ``model``'s site).

    Returns True when it is kept: signed by ``reporter``'s accepted key for
    :data:`REPORT_FUN`, its probe time within :data:`SKEW` of ``now`` (default: this master's
    clock) and newer than the last kept from ``reporter`` or that very report (kept as it
    arrived, by the runner's ``keep_report``), and a well-formed view. Anything else returns
    False (a report that claims to come from the reporter and does not check out is counted
    as ignored, unless ``quiet``).

    ``arrived``: when the master received the event (this process's monotonic clock, from the
    master's own stamp); then ``now`` defaults to that moment on the master's clock, and the
    report's age counts from it: a report that waited in the loop's queue is judged by when it
    came, not by when its turn came (a queue of seconds refused every report, and the loop fell
    back to verification publishes that made the queue longer).
    """
    reply = data.get("report") if isinstance(data, dict) else None
    if now is None:
        now = time.time() if arrived is None else time.time() - (time.monotonic() - arrived)
    found = _authenticated(ctx, reporter, reply, _NONCE, REPORT_FUN, now, "openstack_ha_backends/change", quiet)
    if found is None:
        return False
    probed, view = found
    if not ctx.util("decide.valid_view")(view):
        if not quiet:
            ctx.call("records.note_ignored", "malformed report", reporter, "openstack_ha_backends/change")
        return False
    return _keep(ctx, "sites", model["site"], reporter, probed, {"received_at": now, "view": view}, "view", received=arrived)


def probe_time(data):
    """The probe time (epoch seconds) a backend change event's signed report names in its
    nonce, or None. Read it only after :func:`accept` believed that report: the event's own
    ``time`` is the sender's word, the nonce is under its signature."""
    return _claimed(data.get("report") if isinstance(data, dict) else None, _NONCE)[1]


def _keep(ctx, table, site, reporter, when, report, same, received=None):
    """Keep ``report`` (a dict, stamped here with ``time``: ``when``, and ``received``: the
    monotonic ``received``, default now) as ``reporter``'s newest in the store's ``table`` for
    ``site``, and wake the waiters, unless the one kept already is as new or newer. Returns
    True when it is kept: by this call, or already (the same ``time`` and the same value of its
    field ``same``: the intake keeps a report as it arrives, then the event's own turn offers
    it again; the one kept is left as it was)."""
    store = _store(ctx)
    with store["cond"]:
        kept = store.setdefault(table, {}).setdefault(site, {})
        last = kept.get(reporter)
        if last is not None and last["time"] >= when:
            return last["time"] == when and last[same] == report[same]
        kept[reporter] = dict(report, time=when, received=time.monotonic() if received is None else received)
        store["cond"].notify_all()
    return True


# A report's probe time comes from its nonce, written to the microsecond: the event's own copy of
# it may be a rounding later.
NONCE_ROUNDING = 1e-5


def agreeing(ctx, model, keys, wait, max_age, since=None, arrived=None, lacking=None):
    """
    The views of the site's controllers from their signed reports, once a quorum of them
    agrees on every backend of ``keys`` (``service/backend``; each judged up or down by a
    quorum of the reports' probes, see ``decide.judged``).

    wait
        seconds to wait at most for the other controllers' reports (they see the same failure
        a watch round later, at most).
    max_age
        seconds a report counts after it arrived, before the asking event arrived.
    arrived
        when the asking event reached this master (this process's monotonic clock; default
        now). An event that waited for a worker is judged on the reports that were fresh when
        it came, and on any newer: the store holds each controller's newest report, so a
        controller that saw something change since has said so (its report is kept as it
        arrives, never behind the queue). Before, a queue longer than ``max_age`` aged every
        report out, and each such round fell back to a verification publish, which made the
        queue longer still.
    since
        the probe time (epoch seconds) of the report that asks: an older report does not
        count, as a verification believes no probe older than it (reports from before the
        failure, still within ``max_age``, would outvote the one that saw it).

    lacking
        a dict, filled when no agreeing quorum came (see :func:`shortfall`): what the reports
        lacked, for the round's ``timing``.

    Returns ``({controller: view}, received, probed)``: every fresh report, agreeing or not (as
    a verification would return every answer), when the oldest of them reached this master
    (epoch seconds: an action recorded after it is newer than this evidence, whose HAProxy
    states predate it) and the oldest probe time among them (the evidence is no older); or None
    when no agreeing quorum came in time: verify then.
    """
    quorum = ctx.util("model.quorum_size")(model)
    controllers = {c["id"] for c in model["controllers"]}
    judged = ctx.util("decide.judged")
    store = _store(ctx)
    deadline = time.monotonic() + wait
    with store["cond"]:
        while True:
            now = time.monotonic()
            asked = now if arrived is None else min(now, arrived)
            kept = store["sites"].get(model["site"], {})
            fresh = {c: r for c, r in kept.items() if c in controllers and asked - r["received"] <= max_age
                     and (since is None or r["time"] >= since - NONCE_ROUNDING)}
            views = {c: r["view"] for c, r in fresh.items()}
            if len(views) >= quorum and all(judged(key, views, quorum) is not None for key in keys):
                for report in fresh.values():  # what each report has been judged on (see covered)
                    report["judged"] = report.get("judged", frozenset()) | frozenset(keys)
                return views, min(r["received_at"] for r in fresh.values()), min(r["time"] for r in fresh.values())
            if now >= deadline:
                if lacking is not None:
                    lacking.update(shortfall(kept, controllers, asked, max_age, since, len(views), quorum))
                return None
            store["cond"].wait(deadline - now)


def shortfall(kept, controllers, asked, max_age, since, fresh, quorum):
    """Why the kept reports ``kept`` ({controller: report}) of a site's ``controllers`` made no
    agreeing quorum for an event that arrived at ``asked`` (monotonic clock): ``{"quorum":
    needed, "fresh": counted, "none": controllers with no report kept, "old": reports that
    arrived more than ``max_age`` before, "early": reports probed before ``since``}`` (a
    report both old and early counts under both). With ``fresh`` at least ``quorum`` the
    reports disagreed (or did not all judge the backends).
    An operator reading a decision's ``timing`` sees which (the loop then verified)."""
    mine = {c: r for c, r in kept.items() if c in controllers}
    return {"quorum": quorum, "fresh": fresh, "none": len(controllers) - len(mine),
            "old": sum(1 for r in mine.values() if asked - r["received"] > max_age),
            "early": sum(1 for r in mine.values() if since is not None and r["time"] < since - NONCE_ROUNDING)}


def covered(ctx, model, reporter, since, keys):
    """True when ``reporter``'s report probed at ``since`` (the one its change event carries,
    kept) was already part of a quorum of agreeing reports that judged every backend of
    ``keys``: another round decided on what this event says, and its own round would only
    repeat it. Without this, the last of a site's three controllers to see a failure found
    too few reports probed after its own (the others saw the failure earlier) and verified
    with every controller: a Salt job on the whole site after each drain and each restore."""
    if since is None or not keys:
        return False
    store = _store(ctx)
    with store["cond"]:
        report = store.get("sites", {}).get(model["site"], {}).get(reporter)
        return report is not None and abs(report["time"] - since) <= NONCE_ROUNDING \
            and frozenset(keys) <= report.get("judged", frozenset())


# A controller's VIP beacon signs what it holds, in every change and heartbeat event, as the
# answer to this question (never a function anyone can call) with the nonce ``vips:<look time>``.
VIPS_FUN = "openstack_ha_probe.vips_report"
_VIPS_NONCE = re.compile(r"vips:(\d{9,11}(?:\.\d{1,6})?)\Z")


def accept_vips(ctx, model, reporter, data, now=None, quiet=False):
    """
    Keep the signed VIP report in a VIP beacon event's ``data`` from ``reporter`` (a
    controller of ``model``'s site): believed as a backend report is (:func:`accept`), signed
    for :data:`VIPS_FUN` with a look time near this master's clock and newer than the last kept,
    and a list of VIP names. Returns True when it is kept (by this call, or already: the
    intake keeps a report as it arrives, through the runner's ``keep_report``, before the
    event's turn in the loop).
    ``quiet``: a report refused is not counted as ignored (the event's own turn counts it).
    """
    if not isinstance(data, dict):
        return False
    what = "openstack_ha_vip/" + str(data.get("kind"))
    found = _authenticated(ctx, reporter, data.get("report"), _VIPS_NONCE, VIPS_FUN, time.time() if now is None else now,
                           what, quiet)
    if found is None:
        return False
    looked, held = found
    if not ctx.util("decide.valid_vip_list")(held):
        if not quiet:
            ctx.call("records.note_ignored", "malformed VIP report", reporter, what)
        return False
    return _keep(ctx, "vips", model["site"], reporter, looked, {"held": sorted(held)}, "held")


def vip_holders(ctx, model, names, wait, max_age):
    """
    What every controller of the site holds, from their signed VIP reports, once they give
    each VIP of ``names`` exactly one holder: ``{controller: [vip names]}``; or None when a
    controller has no report received within ``max_age`` seconds, or the reports do not give
    one holder per VIP within ``wait`` seconds (a VIP moving is reported by the controller
    losing it and the one gaining it, a moment apart): take a view then.
    """
    controllers = [c["id"] for c in model["controllers"]]
    store = _store(ctx)
    deadline = time.monotonic() + wait
    with store["cond"]:
        while True:
            now = time.monotonic()
            kept = store.get("vips", {}).get(model["site"], {})
            held = {c: kept[c]["held"] for c in controllers if c in kept and now - kept[c]["received"] <= max_age}
            if len(held) == len(controllers) and all(
                    sum(1 for names_held in held.values() if name in names_held) == 1 for name in names):
                return held
            if now >= deadline:
                return None
            store["cond"].wait(deadline - now)
