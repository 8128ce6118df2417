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


def accept(ctx, model, reporter, data, now=None):
    """
    Keep the signed report of a backend change event's ``data`` from ``reporter`` (a
    controller of ``model``'s site).

    Returns True when it was kept: signed by ``reporter``'s accepted key for
    :data:`REPORT_FUN`, its probe time within :data:`SKEW` of ``now`` (default: this master's
    clock) and newer than the last kept from ``reporter``, and a well-formed view. Anything
    else returns False (a report that claims to come from the reporter and does not check out
    is counted as ignored).
    """
    reply = data.get("report") if isinstance(data, dict) else None
    if not isinstance(reply, dict) or not isinstance(reply.get("body"), str):
        return False
    try:
        claimed = json.loads(reply["body"]).get("nonce")
    except (ValueError, AttributeError):
        claimed = None
    match = _NONCE.match(claimed) if isinstance(claimed, str) else None
    now = time.time() if now is None else now
    if match is None or abs(float(match.group(1)) - now) > SKEW:
        ctx.call("records.note_ignored", "report without a probe time near this master's clock", reporter,
                 "openstack_ha_backends/change")
        return False
    ok, view = ctx.call("publish.authenticated_answer", reporter, claimed, REPORT_FUN, reply)
    if not ok or not ctx.util("decide.valid_view")(view):
        ctx.call("records.note_ignored", "unauthenticated or malformed report", reporter, "openstack_ha_backends/change")
        return False
    probed = float(match.group(1))
    store = _store(ctx)
    with store["cond"]:
        kept = store["sites"].setdefault(model["site"], {})
        if reporter in kept and kept[reporter]["probed"] >= probed:
            return False
        kept[reporter] = {"probed": probed, "received": time.monotonic(), "received_at": time.time(), "view": view}
        store["cond"].notify_all()
    return True


def agreeing(ctx, model, keys, wait, max_age):
    """
    The views of the site's controllers from their signed reports, once a quorum of them
    agrees on every backend of ``keys`` (``service/backend``; each judged up or down by a
    quorum of the reports' probes, see ``decide.judged``).

    wait
        seconds to wait at most for the other controllers' reports (they see the same failure
        a watch round later, at most).
    max_age
        seconds a report counts after it arrived.

    Returns ``({controller: view}, received)``: every fresh report, agreeing or not (as a
    verification would return every answer), and when the oldest of them reached this master
    (epoch seconds: an action recorded after it is newer than this evidence, whose HAProxy
    states predate it); or None when no agreeing quorum came in time: verify then.
    """
    quorum = ctx.util("model.quorum_size")(model)
    controllers = {c["id"] for c in model["controllers"]}
    judged = ctx.util("decide.judged")
    store = _store(ctx)
    deadline = time.monotonic() + wait
    with store["cond"]:
        while True:
            now = time.monotonic()
            kept = store["sites"].get(model["site"], {})
            fresh = {c: r for c, r in kept.items() if c in controllers and now - r["received"] <= max_age}
            views = {c: r["view"] for c, r in fresh.items()}
            if len(views) >= quorum and all(judged(key, views, quorum) is not None for key in keys):
                return views, min(r["received_at"] for r in fresh.values())
            if now >= deadline:
                return None
            store["cond"].wait(deadline - now)
