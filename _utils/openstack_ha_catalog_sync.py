"""
The Keystone catalog from the master: made to match the model, repointed when the VIPs move
(``active_controller`` mode) or repaired on drift (``vip`` mode), and shown in the status.

:depends: runs on the master, which alone holds the Keystone admin account
    (``openstack_ha_keystone:<site>`` in its configuration); ``_utils/openstack_ha_keystone.py``
    (the API) and ``_utils/openstack_ha_catalog.py`` (the pure plan). Every function takes
    the :class:`openstack_ha_context.Context` first.
"""

import concurrent.futures
import time

from salt.exceptions import SaltInvocationError


def keystone_admin(ctx, site):
    """The site's Keystone admin account from the master config (``openstack_ha_keystone:
    <site>``), or None when this master does not manage that site's catalog."""
    admin = (ctx.opts.get("openstack_ha_keystone") or {}).get(site)
    return admin if isinstance(admin, dict) else None


def _keystone_urls(model, admin):
    """Where the runner reaches Keystone: ``auth_url`` from the admin config, else the
    identity service on its VIP (through HAProxy), then on each controller directly."""
    if admin.get("auth_url"):
        return admin["auth_url"] if isinstance(admin["auth_url"], list) else [admin["auth_url"]]
    identity = [n for n, svc in sorted(model["services"].items()) if svc["catalog"]["type"] == "identity"]
    if not identity:
        raise SaltInvocationError("site {} has no service of catalog type identity: set openstack_ha_keystone:{}:auth_url".format(
            model["site"], model["site"]))
    svc, scheme = model["services"][identity[0]], model["keystone"]["scheme"]
    urls = ["{}://{}:{}/v3".format(scheme, host, svc["port"]) for host in model["vips"][svc["vip"]]["hosts"]]
    return urls + ["{}://{}:{}/v3".format(scheme, c["host"], svc["backend_port"]) for c in model["controllers"]]


def _keystone(ctx, model):
    """The site's Keystone session, kept between calls (its token too). Raises
    SaltInvocationError when the master config has no admin account for the site."""
    site = model["site"]
    admin = keystone_admin(ctx, site)
    if admin is None or not admin.get("username") or not admin.get("password"):
        raise SaltInvocationError("no Keystone admin account for site {0} in the master config: set "
                                  "openstack_ha_keystone:{0}:username and :password (and :project)".format(site))
    urls = _keystone_urls(model, admin)
    key = (tuple(urls), admin["username"], str(admin["password"]), admin.get("project", "admin"),
           admin.get("user_domain", "Default"), admin.get("project_domain", "Default"), model["keystone"]["timeout"])
    sessions = ctx.shared("keystone")
    cached = sessions.get(site)
    if cached is None or cached[0] != key:
        cached = sessions[site] = (key, ctx.util("keystone.connect")(
            urls, admin["username"], str(admin["password"]), key[3], key[4], key[5], key[6]))
    return cached[1]


def failure_kind(ctx, exc):
    """The kind of an expected failure of :func:`_catalog_sync`: ``auth``, ``unreachable`` or
    ``api`` for a Keystone error, ``unplanned`` for no holder of a VIP (ValueError) or no
    admin account / identity service (SaltInvocationError). Re-raises anything else."""
    kind = ctx.util("keystone.error_kind")(exc)
    if kind is not None:
        return kind
    if isinstance(exc, (ValueError, SaltInvocationError)):
        return "unplanned"
    raise exc


def _remembered(services, endpoints, updates=(), done=()):
    """The parts of Keystone's catalog a later repoint needs (service ids, names and types;
    endpoint ids, services, interfaces, regions and URLs), with the ``updates`` whose keys are
    in ``done`` applied: what Keystone holds after them."""
    moved = {e["id"]: e["new"] for e in updates if "{}/{}".format(e["service"], e["interface"]) in done}
    return {"services": [{k: s.get(k) for k in ("id", "name", "type")} for s in services],
            "endpoints": [dict({k: e.get(k) for k in ("id", "service_id", "interface", "region_id", "enabled")},
                               url=moved.get(e["id"], e.get("url")), enabled=True if e["id"] in moved else e.get("enabled"))
                          for e in endpoints]}


def sync(ctx, model, holders, test=False, repoint_only=False, known=None):
    """
    Make the site's Keystone catalog match the model (``holders``: {vip: controller} for the
    ``active_controller`` mode). Reads the whole catalog before it changes anything, so a
    refused token or an unreachable Keystone changes nothing. With ``repoint_only`` only the
    URLs of existing endpoints are changed; with ``known`` too (a ``seen`` of an earlier
    sync) the catalog is not read first: the updates go out at once, by endpoint id (an
    endpoint deleted since fails with 404 and the next, reading, sync finds it).

    Returns ``{"result", "changes", "comment", "repointed": [{service, interface, region,
    old, new}], "failed": {what: why}, "timings": {keystone_read, keystone_write, keystone_url},
    "seen": the catalog as Keystone holds it afterwards (for ``known``)}`` (timings and seen
    only when it got to Keystone's answers); ``result`` is None in test mode when something
    would change. Raises KeystoneError (the util's) and ValueError (no holder for a VIP).
    """
    wanted = ctx.util("model.catalog_endpoints")(model, holders)
    client = _keystone(ctx, model)
    started = time.monotonic()
    if known is not None and repoint_only:
        client.prefer_first()
        client.authenticate()
        services, endpoints, regions = known["services"], known["endpoints"], []
    else:
        read = read_catalog(ctx, model, regions=True)
        services, endpoints, regions = read["services"], read["endpoints"], read["regions"]
    timings = {"keystone_read": round(time.monotonic() - started, 3), "keystone_url": client.url}
    changes = ctx.util("catalog.plan")(wanted, regions, services, endpoints)
    if repoint_only:
        # The automatic path only moves URLs of endpoints that exist; creating the catalog (and
        # removing duplicates) is the catalog state's job, run by an operator.
        changes = dict(changes, regions=[], services=[], create=[], delete=[])
    described = ctx.util("catalog.describe")(changes)
    summary = "{} endpoints of {} services in region {} ({} mode)".format(
        len(wanted), len(model["services"]), model["keystone"]["region"], model["keystone"]["endpoint_mode"])
    if not described:
        return {"result": True, "changes": {}, "comment": "the catalog is as wanted: " + summary, "repointed": [], "failed": {},
                "seen": _remembered(services, endpoints)}
    if test:
        return {"result": None, "changes": described, "repointed": [], "failed": {},
                "comment": "{} catalog change(s) would be made: {}".format(len(described), summary)}
    started = time.monotonic()
    before = dict(client.counts)
    outcome = ctx.util("catalog.apply")(client, changes)
    timings["keystone_write"] = round(time.monotonic() - started, 3)
    # What the updates had to work around (new tokens, reset connections, resent requests).
    timings["keystone_retries"] = {k: v - before.get(k, 0) for k, v in client.counts.items() if v != before.get(k, 0)}
    done = set(outcome["done"])
    applied = {k: v for k, v in described.items() if k in done}
    repointed = [{k: e[k] for k in ("service", "interface", "region", "old", "new")}
                 for e in changes["update"] if "{}/{}".format(e["service"], e["interface"]) in done]
    if outcome["failed"]:
        comment = "{} of {} catalog change(s) failed (the next check retries them): {}".format(
            len(outcome["failed"]), len(described), "; ".join("{}: {}".format(k, v) for k, v in sorted(outcome["failed"].items())))
        return {"result": False, "changes": applied, "comment": comment, "repointed": repointed, "failed": outcome["failed"], "timings": timings}
    # Endpoints created or deleted (the state's path) are not in what was read: no memory then.
    seen = _remembered(services, endpoints, changes["update"], done) if not (changes["create"] or changes["delete"]) else None
    return {"result": True, "changes": applied, "repointed": repointed, "failed": {}, "timings": timings, "seen": seen,
            "comment": "{} catalog change(s) made: {}".format(len(applied), summary)}


def read_catalog(ctx, model, regions=False):
    """The site's catalog as Keystone holds it now: ``{"services", "endpoints", "took"}`` and,
    with ``regions``, ``"regions"`` (the lists read side by side, from the VIP on new
    connections; ``took`` in seconds). Raises KeystoneError."""
    client = _keystone(ctx, model)
    started = time.monotonic()
    client.prefer_first()
    client.authenticate()  # once, before the reads run side by side
    reads = {"services": client.services, "endpoints": client.endpoints}
    if regions:
        reads["regions"] = client.regions
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(reads)) as pool:
        futures = {name: pool.submit(read) for name, read in reads.items()}
        found = {name: future.result() for name, future in futures.items()}
    return dict(found, took=round(time.monotonic() - started, 3))


def _guarded_sync(ctx, model, holders, known):
    """:func:`sync` of a repoint from ``known`` (a catalog read earlier, or a
    sync's memory); an expected failure (``known`` may be that failure) becomes an outcome
    with ``result`` False and the ``alert`` to raise."""
    try:
        if isinstance(known, Exception):
            raise known
        return sync(ctx, model, holders, repoint_only=True, known=known)
    except Exception as exc:
        return {"result": False, "comment": str(exc), "repointed": [], "alert": "catalog_" + failure_kind(ctx, exc)}


def _record_sync(ctx, model, holders, entry, last, outcome, parts):
    """Store a loop's catalog sync (under the catalog lock): the site's catalog record (its
    ``generation`` one up), a ``repoint`` decision when endpoints moved, an alert when the
    catalog could not be brought in line (once per distinct failure). Returns the
    decisions and the new generation."""
    site = model["site"]
    decisions = []
    # The decision records are shared with the backend decisions: their lock for the update.
    with ctx.call("records.lock", site):
        records = ctx.call("records.load", site)
        generation = (records.get("catalog") or {}).get("generation", 0) + 1
        records["catalog"] = {"holders": holders, "ok": outcome["result"] is True, "checked": time.time(),
                              "comment": outcome["comment"], "mode": model["keystone"]["endpoint_mode"],
                              "seen": outcome.get("seen"), "generation": generation}
        if outcome["repointed"]:
            decisions.append(dict(entry, what="repoint", service="keystone", time=time.time(), **parts,
                                  **outcome.get("timings", {}), endpoints=outcome["repointed"], mode=model["keystone"]["endpoint_mode"],
                                  why="{} endpoint(s) repointed: {}".format(len(outcome["repointed"]), ", ".join(sorted(
                                      {"{} -> {}".format(e["old"], e["new"]) for e in outcome["repointed"]})))))
            ctx.call("records.announce", records, site, decisions[-1], "openstack_ha/endpoint/repointed")
        # One alert per failure, not one per retry: the VIP heartbeats retry every few seconds.
        if outcome["result"] is not True and (last.get("ok", True) or last.get("comment") != outcome["comment"]):
            kind = outcome.get("alert") or "catalog_api"
            decisions.append(dict(entry, what="alert", alert=kind, service="keystone", time=time.time(),
                                  why="catalog not brought in line (retried on the next event): " + outcome["comment"]))
            ctx.call("records.announce", records, site, decisions[-1], "openstack_ha/alert/" + kind)
        ctx.call("records.store", site, records)
    return decisions, generation


def follow(ctx, model, holders, evidence, reporter, data, timings=None):
    """
    After a quorum agreed on one holder per VIP: sync the catalog when the holders changed
    since the last sync, when the last sync failed, or on a VIP change event (a VIP moved:
    drift is repaired then too). Only URLs of existing endpoints are changed (creating the
    catalog is the catalog state's job). Fires ``openstack_ha/endpoint/repointed`` with the
    old and new URLs, or an alert (``catalog_auth``, ``catalog_unreachable``, ``catalog_api``)
    when Keystone could not be brought in line; the next event retries.

    Two steps. When the holders moved and the last sync went through, the endpoints are
    repointed at once from that sync's memory of the catalog (ids and URLs: no read first,
    the clients are waiting). Then the catalog is read, without holding the catalog lock (a
    slow read must never hold up the next repoint), and what is still not as wanted is put
    right, unless another sync was recorded meanwhile (its own read judges the catalog then).

    The record of a repoint says how long Keystone took (``took``), when the endpoints were
    repointed (``repointed_at``, epoch) and, from ``timings``, when the beacon saw the change
    (``reported_at``), how long its event took to reach the runner (``event_lag``) and the
    controllers to agree on the holders (``view_took``), and how long it waited for another
    catalog sync to finish (``lock_wait``).
    """
    site = model["site"]
    if keystone_admin(ctx, site) is None:
        return []  # this master does not manage the site's catalog
    entry = {"decided_by": "remediation", "reported_by": reporter, "evidence": evidence, "holders": holders, "site": site}
    decisions = []
    waiting = time.monotonic()
    with ctx.call("records.lock", site + "-catalog"):
        lock_wait = round(time.monotonic() - waiting, 3)
        last = ctx.call("records.load", site).get("catalog") or {}
        if last.get("holders") == holders and last.get("ok") and data.get("kind") != "change":
            return []
        generation = last.get("generation", 0)
        known = last.get("seen") if last.get("ok") and last.get("holders") != holders else None
        if known is not None:
            started = time.monotonic()
            outcome = _guarded_sync(ctx, model, holders, known)
            parts = dict(timings or {}, took=round(time.monotonic() - started, 3), repointed_at=time.time(), lock_wait=lock_wait)
            done, generation = _record_sync(ctx, model, holders, entry, last, outcome, parts)
            decisions.extend(done)
    try:
        fresh = read_catalog(ctx, model)
    except Exception as exc:
        fresh = exc
    waiting = time.monotonic()
    with ctx.call("records.lock", site + "-catalog"):
        lock_wait = round(time.monotonic() - waiting, 3)
        last = ctx.call("records.load", site).get("catalog") or {}
        if last.get("generation", 0) != generation:
            return decisions
        started = time.monotonic()
        outcome = _guarded_sync(ctx, model, holders, fresh)
        if not isinstance(fresh, Exception):
            outcome.setdefault("timings", {})["keystone_read"] = fresh["took"]
        parts = dict(timings or {}, took=round(time.monotonic() - started, 3), repointed_at=time.time(), lock_wait=lock_wait,
                     read_back=known is not None)
        done, _ = _record_sync(ctx, model, holders, entry, last, outcome, parts)
        decisions.extend(done)
    return decisions


def view(ctx, model, holders):
    """For the status table: the catalog as Keystone holds it against what the model wants.
    Returns None when this master does not manage the site's catalog."""
    if keystone_admin(ctx, model["site"]) is None:
        return None
    try:
        outcome = sync(ctx, model, holders, test=True)
    except Exception as exc:
        failure_kind(ctx, exc)
        return {"ok": False, "mode": model["keystone"]["endpoint_mode"], "problem": str(exc), "endpoints": {}}
    return {"ok": outcome["result"] is True, "mode": model["keystone"]["endpoint_mode"], "comment": outcome["comment"],
            "drift": outcome["changes"],
            "endpoints": {"{}/{}".format(e["service"], e["interface"]): e["url"]
                          for e in ctx.util("model.catalog_endpoints")(model, holders)}}


def operator_sync(ctx, model, holders, test):
    """The operator's catalog sync (``salt-run openstack_ha.catalog``) of ``model``'s site to
    ``holders``: ``{"result", "changes", "comment", "repointed"}``; recorded (and the loop's
    memory of the catalog dropped) when something changed. Raises SaltInvocationError when
    the master is not set up for the site's catalog."""
    site = model["site"]
    try:
        with ctx.call("records.lock", site + "-catalog"):
            outcome = sync(ctx, model, holders, test=bool(test))
    except SaltInvocationError:
        raise  # the master is not set up for this site's catalog: an operator error, shown as such
    except Exception as exc:
        failure_kind(ctx, exc)
        outcome = {"result": False, "changes": {}, "comment": "nothing changed: " + str(exc), "repointed": []}
    if outcome["changes"] and not test:
        with ctx.call("records.lock", site):
            records = ctx.call("records.load", site)
            # The loop's memory of endpoint ids (for a repoint without reading first) is out of
            # date, and so is any catalog the loop read before this change.
            if records.get("catalog"):
                records["catalog"].pop("seen", None)
                records["catalog"]["generation"] = records["catalog"].get("generation", 0) + 1
            if outcome["repointed"]:
                entry = {"what": "repoint", "service": "keystone", "endpoints": outcome["repointed"],
                         "decided_by": "operator (salt-run openstack_ha.catalog)", "holders": holders, "time": time.time(),
                         "why": "{} endpoint(s) repointed by the operator".format(len(outcome["repointed"]))}
                ctx.call("records.announce", records, site, entry, "openstack_ha/endpoint/repointed")
            ctx.call("records.store", site, records)
    return outcome
