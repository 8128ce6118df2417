"""
Backends: verify with every controller, decide, drain or restore on every HAProxy, record,
announce; and the operator's planned drains, under the same last-backend rule.

:depends: runs on the master; every function takes the
    :class:`openstack_ha_context.Context` first. The decision itself is
    ``_utils/openstack_ha_decide.py`` (pure, unit-tested).
"""

import logging
import threading
import time

log = logging.getLogger(__name__)

# Seconds the loop waits at most for the controllers' answers. A probe round takes at most the
# probe timeout and an admin-socket command milliseconds, but each answer is a Salt job: on a
# busy 2-core host a round trip takes 1-3 s, at times 8. The wait ends as soon as every controller not
# known to be cut off answered, or QUORUM_GRACE after a quorum did, so the bound only costs
# when fewer than a quorum answer (and then nothing is decided anyway).
VERIFY_TIMEOUT = 10
ACT_TIMEOUT = 10
# How long a write-ahead record marks its backend as being acted on by the master that wrote
# it: past it (that master died mid-action), another master acts again.
PENDING_LEASE = ACT_TIMEOUT + 2.0


def settled_elsewhere(record, action, started_wall, now):
    """True when ``action`` (a drain or restore of the decision) is already done or being done
    by another round: a record of the same state written after this round began (epoch
    ``started_wall``), or a write-ahead (of any master, this one's other threads included:
    a round that verified while that one's publish was still on its way sees the HAProxies not
    yet changed) whose lease runs past ``now``. Alerts and other actions are never settled here."""
    if action["action"] not in ("drain", "restore") or not record:
        return False
    state = "drain" if action["action"] == "drain" else "ready"
    pending = record.get("pending") or {}
    if pending.get("until", 0) > now:
        return True
    return record.get("time", 0) > started_wall and record.get("state") == state


def verify(ctx, model, service=None, since=None):
    """Every controller's fresh view of ``service`` (or of all services), from the model we
    hold: {controller: view} of those that answered with a well-formed view in time. With the
    beacons' watchers, a controller answers from probes at most two watch rounds old and, with
    ``since`` (the report's probe time, epoch seconds), none older than that: a result from
    before the failure the report is about would outvote it."""
    targets = ctx.util("model.probe_targets")(model, service)
    controllers = [c["id"] for c in model["controllers"]]
    probe = model["remediation"]["probe"]
    # With the beacons' watchers, results at most two rounds old are as good as a new probe.
    fresh = (2 * probe["watch"], model["paths"]["probe_cache"], since) if probe.get("watch") else (None, None, None)
    answers = ctx.call("publish.publish", controllers, "openstack_ha_probe.service_view",
                       (service, targets, probe["timeout"], model["haproxy"]["socket"]) + fresh,
                       timeout=VERIFY_TIMEOUT, wait_for=ctx.call("publish.wait_for", model),
                       quorum=ctx.util("model.quorum_size")(model))
    views = {}
    for ctrl, view in answers.items():
        if ctx.util("decide.valid_view")(view):
            views[ctrl] = view
        else:
            ctx.call("records.note_ignored", "malformed verification answer", ctrl, "openstack_ha_probe.service_view")
    ctx.call("publish.note_answers", model, views)
    return views


def backends(ctx, model, service=None, backend=None):
    """{"service/server": service} for every watched backend in scope (Galera included)."""
    keys = {}
    for name, svc in sorted(ctx.util("model.backend_services")(model).items()):
        if service is None or name == service:
            for ctrl in svc["servers"]:
                if backend is None or ctrl["id"] == backend:
                    keys["{}/{}".format(name, ctrl["id"])] = name
    return keys


def act(ctx, model, actions, who, reporter, parts=None, targets=None):
    """Apply every drain/restore of one decision round in one publish to every controller;
    wait only for the controllers that are not known to be cut off (they catch up when they
    answer again: the next verification sees their HAProxy out of line and re-applies), and
    once a quorum answered, ``publish.QUORUM_GRACE`` at most for the rest (a slow controller
    still applies it; its answer is not awaited: at fleet size, rounds that waited out slow
    controllers held the loop's workers, and other sites' events queued behind them).
    Returns one decision entry per action (``not_applied``: the controllers whose answer did
    not confirm it in that time); fills the dict ``parts`` (when given) with where the
    publish's time went (``publish.split``). ``targets``: only these controllers' HAProxies
    (default: every controller of the site)."""
    controllers = list(targets) if targets else [c["id"] for c in model["controllers"]]
    changes = [[a["service"], a["backend"], "drain" if a["action"] == "drain" else "ready"] for a in actions]
    timing = {}
    # A publish to chosen controllers waits for each of them: they have just answered.
    answers = ctx.call("publish.publish", controllers, "openstack_ha_haproxy.set_servers_state",
                       (changes, model["haproxy"]["socket"], model["haproxy"]["state_file"]),
                       timeout=ACT_TIMEOUT, wait_for=controllers if targets else ctx.call("publish.wait_for", model),
                       timing=timing, quorum=None if targets else ctx.util("model.quorum_size")(model))
    if parts is not None:
        parts.update(ctx.util("publish.split")(timing))
    answers = {c: a for c, a in answers.items() if isinstance(a, dict)}
    entries = []
    for action, (service, backend, state) in zip(actions, changes):
        key = "{}/{}".format(service, backend)
        applied = {c: bool((a.get(key) or {}).get("changed")) for c, a in sorted(answers.items())
                   if isinstance(a.get(key), dict) and "error" not in a[key]}
        entries.append({
            "what": action["action"], "service": service, "backend": backend, "state": state,
            "why": action["reason"], "evidence": action["evidence"], "decided_by": who,
            "reported_by": reporter, "time": time.time(),
            "applied": applied, "not_applied": sorted(set(controllers) - set(applied)),
        })
    return entries


def evidence(ctx, model, service=None, since=None, reported=None, arrived=None, lacking=None):
    """The controllers' views for a decision, where they came from and how old they are:
    ``(views, source, taken, fresh)``. With ``reported`` (the backends a watcher's signed
    report, already kept by ``reports.accept``, says changed), a quorum of the controllers'
    signed reports no older than ``since`` that agree on them, awaited for two watch rounds at
    most (``source`` "signed reports", ``taken`` when the oldest arrived); otherwise, or when
    they do not come or do not agree, a verification publish (``source`` "verification",
    ``taken`` when it was sent). An action recorded after ``taken`` is newer than the views'
    HAProxy states. ``fresh`` (epoch seconds): no probe behind the views is older (the oldest
    report's probe time; a verification's answers are at most two watch rounds old, and none
    older than ``since``). ``arrived``: when the event arrived (see ``reports.agreeing``).
    A verification already in flight for this site whose views answer this event is shared
    (:func:`shared_verification`; ``source`` "verification (shared)"). ``lacking``: a dict,
    filled with what the signed reports lacked when a round that had one verified instead
    (``reports.shortfall``)."""
    watch = model["remediation"]["probe"].get("watch") or 0
    if reported and watch:
        found = ctx.call("reports.agreeing", model, reported, wait=max(0.3, 2 * watch), max_age=max(1.0, 4 * watch),
                         since=since, arrived=arrived, lacking=lacking)
        if found is not None:
            return found[0], "signed reports", found[1], found[2]
    # What the views must be no older than to answer this event: its signed report's probe
    # time (``since``, with ``reported``), else when it arrived (the master's own stamp).
    need = since if reported and since is not None else (
        time.time() - (time.monotonic() - arrived) if arrived is not None else time.time())
    views, taken, fresh, joined = shared_verification(ctx, model, service, since, need)
    return views, "verification (shared)" if joined else "verification", taken, fresh


def _flights(ctx):
    """This process's verifications in flight: a condition and the list of them."""
    return ctx.shared("verifications", lambda: {"cond": threading.Condition(), "flying": []})


def shared_verification(ctx, model, service, since, need):
    """
    One verification (:func:`verify`) for every round that needs it at once: ``(views,
    taken, fresh, joined)``. When a verification of this site is in flight whose scope covers
    ``service`` (the same service, or the whole site) and whose views will be no older than
    ``need`` (epoch seconds: what this round's event says is no newer than them), this round
    waits for it and decides on its views (``joined``; ``taken`` and ``fresh`` are that
    verification's, so an action another round recorded since then settles this one's). Else,
    or when that one fails or outlasts :data:`VERIFY_TIMEOUT`, it verifies itself; rounds may
    join it meanwhile. Before, each of a site's controllers' rounds that could not act on
    signed reports sent a verification of its own, a Salt job on every controller of the site,
    all three asking the same question within the same second.

    ``fresh``: no probe behind the views is older (two watch rounds before ``taken``, or
    ``since``, which the controllers are asked to believe no cached probe older than; never
    later than ``taken``: a probe time in the future, a hostile controller's, must not mark
    these views fresher than the question).
    """
    watch = model["remediation"]["probe"].get("watch") or 0
    site = model["site"]
    book = _flights(ctx)
    with book["cond"]:
        flight = next((f for f in book["flying"] if f["site"] == site and f["scope"] in (None, service)
                       and f["fresh"] >= need), None)
        if flight is not None:
            deadline = time.monotonic() + VERIFY_TIMEOUT + 1.0
            while not flight["done"] and time.monotonic() < deadline:
                book["cond"].wait(max(0.0, deadline - time.monotonic()))
            if flight["views"] is not None:
                return flight["views"], flight["taken"], flight["fresh"], True
        taken = time.time()
        fresh = min(taken, max(since or 0, taken - 2 * watch)) if watch else taken
        mine = {"site": site, "scope": service, "fresh": fresh, "taken": taken, "done": False, "views": None}
        book["flying"].append(mine)
    try:
        mine["views"] = verify(ctx, model, service, since)
    finally:
        with book["cond"]:
            mine["done"] = True
            book["flying"].remove(mine)
            book["cond"].notify_all()
    return mine["views"], taken, fresh, False


def _waits(turn, arrived, started):
    """How an engine turn's ``queued`` time divides (seconds): ``bus``, from the master's stamp
    to the engine's intake; ``turn``, waiting for a worker (and for the same reporter's
    previous turn); ``lock``, from the worker's start to this round's first hold of the site
    lock. Empty outside an engine turn (``turn`` None) or without ``arrived``."""
    if not turn or arrived is None:
        return {}
    received, taken = turn
    return {"bus": round(received - arrived, 3), "turn": round(taken - received, 3), "lock": round(started - taken, 3)}


def reconcile(ctx, model, reporter, service=None, backend=None, who="remediation", arrived=None, since=None, reported=None):
    """Verify every backend in scope with every controller, decide, act, record, announce.
    ``since``: see :func:`verify`; ``reported``: see :func:`evidence`.

    Steps aside when the reporter's signed report (``reported``, probed at ``since``) was part
    of the quorum another round already decided on, for every backend it names
    (``reports.covered``). Coalesces: when another round of the same scope (or of the whole site) gathered views no
    older than this event's arrival (``arrived``, this process's monotonic clock), it saw the
    state this event reports, and this one does nothing. A round only started after the event
    is not enough: signed reports and the watchers' cached probes can predate its start (a
    round that judged a backend on reports from before its failure, and made the rounds of the
    reports that saw the failure step aside, left it undrained until the next heartbeat).

    The site lock is held only to decide and to record, never across a wait for the
    controllers (a cut-off controller must not queue every other decision of its site): the
    verification runs before it, the one publish of all of this round's drains and restores
    after the write-ahead record.
    """
    site = model["site"]
    if reported and ctx.call("reports.covered", model, reporter, since, reported):
        return []  # another round decided on this very report, for every backend it names
    me = ctx.opts.get("id")
    quorum = ctx.util("model.quorum_size")(model)
    last_verify = ctx.shared("last_verify")
    with ctx.call("records.lock", site):
        last = last_verify.get(site, {})
        if arrived is not None and max(last.get(None, 0), last.get(service, 0)) > arrived:
            return []
        started = time.monotonic()
    waits = _waits(ctx.util("admit.current_turn")(), arrived, started)
    lacking = {}
    views, source, started_wall, fresh = evidence(ctx, model, service, since, reported, arrived, lacking)
    verified = time.monotonic()
    with ctx.call("records.lock", site):
        # From when this round's views are fresh, on the monotonic clock ``arrived`` uses.
        seen = last_verify.setdefault(site, {})
        seen[service] = max(seen.get(service, 0), verified - max(0.0, time.time() - fresh))
        records = ctx.call("records.load", site)
        keys = backends(ctx, model, service, backend)
        actions = ctx.util("decide.decide")(
            keys, views, quorum, records["backends"], time.time(),
            model["remediation"]["cooldown"], maintenance=records["maintenance"])
        # Controllers whose HAProxy these views show caught up with the loop's last action;
        # only an action recorded before the views were taken can be confirmed by them.
        caught_up = ctx.util("decide.confirmed")(
            {k: r for k, r in records["backends"].items() if r.get("time", 0) <= started_wall}, views, keys)
        for key, left in caught_up.items():
            records["backends"][key] = {k: v for k, v in records["backends"][key].items() if k != "unconfirmed"}
            if left:
                records["backends"][key]["unconfirmed"] = left
        # Another round (of this master or another) already acted, or is acting, on these.
        now = time.time()
        actions = [a for a in actions if not settled_elsewhere(records["backends"].get(a["key"]), a, started_wall, now)]
        moves = [a for a in actions if a["action"] in ("drain", "restore")]
        for action in moves:
            # Write-ahead: the loop's ownership of this drain is on disk before any HAProxy
            # changes, so a runner killed mid-action (a master restart) still restores it. The
            # pending lease tells another master this one is acting on it until then.
            records["backends"][action["key"]] = {"state": "drain" if action["action"] == "drain" else "ready",
                                                  "by": "remediation", "time": now,
                                                  "pending": {"master": me, "until": now + PENDING_LEASE}}
        if moves or caught_up:
            ctx.call("records.store", site, records)
    publishing, parts, entries = time.monotonic(), {}, []
    # One publish for the round's moves, and one per set of controllers a restore missed
    # (only their HAProxies: the others hold it, and may hold a drain set there since).
    for only in sorted({tuple(a.get("only") or ()) for a in moves}):
        entries += act(ctx, model, [a for a in moves if tuple(a.get("only") or ()) == only], who, reporter, parts, only)
    acted = time.monotonic()
    done = []
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        for entry in entries:
            entry["timing"] = {"queued": round(started - arrived, 3) if arrived else None,
                               "verify": round(verified - started, 3), "act": round(acted - verified, 3),
                               "record": round(publishing - verified, 3), **parts, **waits, "evidence": source}
            if lacking:
                entry["timing"]["reports_lacking"] = lacking
            recorded = {"state": entry["state"], "by": "remediation", "time": entry["time"]}
            if entry.get("not_applied"):
                # Caught up with by the next round that sees their HAProxy (decide.missed).
                recorded["unconfirmed"] = entry["not_applied"]
            records["backends"]["{}/{}".format(entry["service"], entry["backend"])] = recorded
            tag = "openstack_ha/backend/" + ("drained" if entry["what"] == "drain" else "restored")
            ctx.call("records.announce", records, site, entry, tag)
            done.append(entry)
        for action in actions:
            if action["action"] in ("drain", "restore"):
                continue
            entry = {"what": action["action"], "alert": action.get("alert"), "service": action["service"],
                     "backend": action["backend"], "why": action["reason"], "evidence": action["evidence"],
                     "decided_by": who, "reported_by": reporter, "time": time.time()}
            tag = "openstack_ha/alert/" + action["alert"] if action["action"] == "alert" else None
            ctx.call("records.announce", records, site, entry, tag)
            done.append(entry)
        if done:
            ctx.call("records.store", site, records)
    return done


def _loop_drain(record):
    """True when a backend's record is a drain by the remediation loop (one it may undo)."""
    return record.get("by") == "remediation" and record.get("state") == "drain"


def loop_drained(ctx, model, service=None):
    """True when the remediation loop holds a drain (of ``service``) it may have to undo."""
    records = ctx.call("records.load", model["site"])
    return any(_loop_drain(r) and (service is None or key.split("/")[0] == service) for key, r in records["backends"].items())


def unconfirmed_at(ctx, model, reporter, service=None):
    """True when ``reporter``'s answer did not confirm the loop's last action on a backend (of
    ``service``): its HAProxy may have missed it, and its heartbeat is worth a full check."""
    return _unconfirmed(ctx.call("records.load", model["site"])["backends"], reporter, service)


def _unconfirmed(records, reporter, service=None):
    """True when a backend record (of ``service``) lists ``reporter`` as unconfirmed."""
    return any(reporter in (r.get("unconfirmed") or ()) for key, r in records.items()
               if service is None or key.split("/")[0] == service)


def heartbeat_needs_work(ctx, model, data, reporter=None):
    """A heartbeat is worth a full check (a verification publish) where its view and the
    records disagree: a backend reported down that is not recorded drained, or whose drain the
    reporter's own HAProxy does not hold (``admin``, its administrative states of the backends
    it reports down; without it, every backend down is checked); a backend the loop drained
    that is reported up, or not at all (the loop may have to restore it); a loop action the
    ``reporter``'s answer did not confirm (:func:`unconfirmed_at`); or no view. A backend
    down and drained everywhere needs nothing: verifying it at every heartbeat brought a job to
    every controller at each controller's heartbeat for as long as it stayed down.

    Each controller vouches only for its own HAProxy: a controller that lies about it spares
    the check of a drain on the HAProxy it runs itself, nothing else."""
    view = data.get("view")
    if not isinstance(view, dict):
        return True
    admin = data.get("admin") if isinstance(data.get("admin"), dict) else {}
    records = ctx.call("records.load", model["site"])["backends"]
    if reporter is not None and _unconfirmed(records, reporter):
        return True
    for key, state in view.items():
        drained = (records.get(key) or {}).get("state") == "drain"
        if state != "up" and not (drained and admin.get(key) in ("drain", "maint")):
            return True
    # A loop drain reported up, or not reported at all: a restore may be due.
    return any(_loop_drain(r) and view.get(key, "up") == "up" for key, r in records.items())


def operator_drain(ctx, site, host, service, backend, drain, force):
    """
    An operator's drain (``drain`` True) or undrain of ``backend`` (or every backend of
    ``host``), on every HAProxy of the site, recorded as planned maintenance so the loop
    leaves it alone. Returns ``(entries, refused)``: one decision entry per backend, and the
    reasons of the backends it refused (the last serving backend of a service, unless
    ``force``). Raises SaltInvocationError for an unknown site, controller or service.
    """
    from salt.exceptions import SaltInvocationError

    site, sites, model = ctx.call("sites.resolve_site", site)
    backend = backend or host
    if backend is None:
        raise SaltInvocationError("name a backend (host=CONTROLLER, or service=NAME backend=CONTROLLER)")
    if backend not in sites[site]:
        raise SaltInvocationError("{!r} is not a controller of site {}".format(backend, site))
    if service is not None and service not in ctx.util("model.backend_services")(model):
        raise SaltInvocationError("unknown service {!r} in site {}".format(service, site))
    keys = backends(ctx, model, service, backend)
    who = "operator (salt-run openstack_ha.{}{})".format("drain" if drain else "undrain", ", force" if force else "")
    results, refused = [], []
    quorum = ctx.util("model.quorum_size")(model)
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        # Only a guarded drain needs to know which other backends are healthy.
        views = verify(ctx, model, service) if drain and not force else {}
        for key, svc in keys.items():
            if drain and not force and ctx.util("decide.last_serving")(
                    key, list(backends(ctx, model, svc)), views, quorum, records["maintenance"]):
                why = "refused: {} is the last healthy backend of {} (use force=True)".format(backend, svc)
                entry = {"what": "alert", "alert": "last_backend", "service": svc, "backend": backend,
                         "why": why, "decided_by": who, "time": time.time(), "site": site}
                ctx.call("records.announce", records, site, entry, "openstack_ha/alert/last_backend")
                results.append(entry)
                refused.append(why)
                continue
            if force:
                log.warning("openstack_ha: %s of %s forced by the operator", "drain" if drain else "undrain", key)
            entry = act(ctx, model, [{"action": "drain" if drain else "restore", "service": svc, "backend": backend,
                                      "reason": "planned maintenance", "evidence": {}}], who, "operator")[0]
            records["backends"][key] = {"state": entry["state"], "by": "operator", "time": entry["time"]}
            if drain and key not in records["maintenance"]:
                records["maintenance"].append(key)
            if not drain and key in records["maintenance"]:
                records["maintenance"].remove(key)
            ctx.call("records.announce", records, site, entry, "openstack_ha/backend/" + ("drained" if drain else "restored"))
            results.append(entry)
        ctx.call("records.store", site, records)
    return results, refused
