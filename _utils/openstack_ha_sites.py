"""
The sites as the master knows them: each controller's site model from the pillar the master
compiles, the map of controller ids, the fallback to the last valid pillar.

:depends: runs on the master (pillar compilation, the key store); every function takes the
    :class:`openstack_ha_context.Context` first.

Compiling pillar takes a good part of a second, and the loop needs a model for every event:
a model is reused for ``MODEL_TTL`` seconds. When a site's pillar turns invalid, the loop
keeps acting on its last valid model (a typo must not switch remediation off) and raises
``openstack_ha/alert/bad_pillar``.
"""

import logging
import random
import threading
import time

log = logging.getLogger(__name__)

MODEL_TTL = 30  # seconds a compiled site model is reused


class ModelError(Exception):
    """A pillar too broken to build a model from (caught by name, like the model's own)."""


def _expose(value):
    """``value`` with Salt 3008's masked pillar values unwrapped (other releases: unchanged)."""
    try:
        import salt.utils.secret
    except ImportError:
        return value
    return salt.utils.secret.expose(value)


def plain(value):
    """``value`` with every mapping in it a plain dict (lists and scalars as they are). Salt's
    renderers give OrderedDicts, whose equality depends on key order: a pillar written with its
    keys in another order (the same site) made two models unequal, and the loop announced a
    change of keys that had not changed."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# Salt's pillar compilation is not safe to run in several threads of one process at once:
# on Salt 3008.3, 24 compilations of ten sites' pillars in parallel threads returned an empty
# pillar (no error) for 7 of them, which the loop took for a site whose pillar had turned
# invalid (a bad_pillar alert, and no remediation for a site never seen valid). One at a time,
# in the whole process: the lock hangs on ``salt.pillar`` itself, because Salt's loader may load
# this module more than once in a process (each copy would have its own module-level lock).
_COMPILE_LOCK = "_openstack_ha_compile_lock"


def pillar_model(ctx, minion, wait=True):
    """The ``openstack_ha`` pillar the master compiles for ``minion`` (trusted), or {}.
    Compiled one at a time per process (see ``_COMPILE_LOCK``); with ``wait`` False, None
    at once when another compilation is running (the caller has an older model to go on with)."""
    import salt.pillar
    import salt.utils.minions

    lock = vars(salt.pillar).setdefault(_COMPILE_LOCK, threading.Lock())
    if not lock.acquire(blocking=wait):
        return None
    try:
        _, grains, _ = salt.utils.minions.get_minion_data(minion, ctx.opts)
        pillar = salt.pillar.get_pillar(ctx.opts, grains or {}, minion, saltenv="base").compile_pillar()
    finally:
        lock.release()
    return plain(_expose(pillar.get("openstack_ha") or {}))


def defaults(ctx, os_family="Debian"):
    """The project's defaults (``states/openstack_ha/defaults.yaml``), as the master serves
    them, with ``os_family``'s layer merged in (the master judges the remediation settings,
    which no OS layer changes)."""
    import salt.fileclient
    import salt.utils.yaml

    with salt.fileclient.get_file_client(ctx.opts) as client:
        path = client.cache_file("salt://openstack_ha/defaults.yaml")
    with open(path) as fh:
        raw = salt.utils.yaml.safe_load(fh)
    return ctx.util("model.layer_defaults")(raw, os_family)


def _build(ctx, raw):
    return ctx.util("model.build")(defaults(ctx), raw)


def _controllers(ctx):
    return ctx.shared("controllers", lambda: {"map": {}, "time": 0.0})


def site_model(ctx, minion, behind=False):
    """
    The validated model of the site ``minion`` is a controller of, or None if it is not one
    (or its site never had a valid pillar on this master). Reused for ``MODEL_TTL`` seconds,
    and for every controller of the site (one compilation per site and ``MODEL_TTL``); past
    it, while another thread compiles a pillar, the model this minion had serves a little
    longer (up to ``3 * MODEL_TTL``) instead of queueing every event behind the compiler.

    ``behind`` (the loop's events): past ``MODEL_TTL`` the model this minion had serves (up
    to ``3 * MODEL_TTL``) while this process's refresher (:func:`start_refresher`) compiles
    the sites' pillars in a thread of its own: an event compiles a pillar only for a
    controller it has no model of yet.
    """
    cache = ctx.shared("models")
    cached = cache.get(minion)
    now = time.monotonic()
    if cached and now - cached[0] < MODEL_TTL:
        return cached[1]
    known = _controllers(ctx)["map"]
    sibling = ctx.shared("site_models").get(known.get(minion))
    if sibling and now - sibling[0] < MODEL_TTL and minion in [c["id"] for c in sibling[1]["controllers"]]:
        cache[minion] = sibling
        return sibling[1]
    # A fresh model of its site that does not list it (a controller taken out): compiled here,
    # waited for, so that it is no longer acted for.
    dropped = behind and sibling is not None and now - sibling[0] < MODEL_TTL
    if behind:
        start_refresher(ctx)
        if cached and now - cached[0] < 3 * MODEL_TTL and not dropped:
            return cached[1]
    raw = pillar_model(ctx, minion, wait=not cached or now - cached[0] >= 3 * MODEL_TTL or dropped)
    if raw is None:
        return cached[1]
    return _adopt(ctx, minion, raw)


def _adopt(ctx, minion, raw):
    """Build, check and keep the model of ``minion``'s site from its compiled pillar ``raw``
    (a bad pillar: the site's last valid model, alerted); return it (None: not a controller,
    or no valid model known)."""
    cache, known = ctx.shared("models"), _controllers(ctx)["map"]
    listed = raw.get("controllers")
    readable = isinstance(listed, list) and all(isinstance(c, dict) for c in listed)
    ids = [c.get("id") for c in listed] if readable else []
    site = raw.get("site") if isinstance(raw.get("site"), str) else known.get(minion)
    model = None
    if readable and minion not in ids:
        known.pop(minion, None)  # no longer a controller (or never was)
    elif minion in ids or minion in known:
        try:
            if not readable:
                raise ModelError("openstack_ha:controllers: expected a list of mappings")
            model = _build(ctx, raw)
        except Exception as exc:  # ModelError, from a module loaded by Salt's loader
            if type(exc).__name__ != "ModelError":
                raise
            model = _bad_pillar(ctx, site, minion, str(exc))
        else:
            _remember_good(ctx, model["site"], raw)
            previous = ctx.shared("last_good").get(model["site"])
            if previous is not None and previous[1] != model:
                _announce_change(ctx, model["site"], previous[1], model, minion)
            ctx.shared("last_good")[model["site"]] = (time.time(), model)
            ctx.shared("bad_pillar").pop(model["site"], None)
            for ctrl in model["controllers"]:
                known[ctrl["id"]] = model["site"]
    cache[minion] = (time.monotonic(), model)
    if model is not None:
        ctx.shared("site_models")[model["site"]] = cache[minion]
        # Every controller of the site acts on this model from now on: one whose own entry
        # was still fresh would otherwise act on the one before for up to MODEL_TTL after
        # ``openstack_ha/site/changed`` announced this one (the refresher renews a site through
        # one of its controllers).
        for ctrl in model["controllers"]:
            cache[ctrl["id"]] = cache[minion]
    return model


def changed_keys(old, new, depth=2):
    """The dotted key paths (``keystone.endpoint_mode``) where mappings ``old`` and ``new``
    differ, ``depth`` levels down at most, sorted; names only, never a value."""
    paths = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if depth > 1 and isinstance(a, dict) and isinstance(b, dict):
            paths.extend("{}.{}".format(key, sub) for sub in changed_keys(a, b, depth - 1))
        else:
            paths.append(str(key))
    return paths


def _announce_change(ctx, site, old, new, minion):
    """Say that this process now acts on a changed model of ``site``: a log line and an
    ``openstack_ha/site/changed`` event naming the changed keys (no values: the model holds
    the site's secrets). Operators (and the lab's tests) learn from it when a pillar edit
    reached the loop, instead of outwaiting ``MODEL_TTL``."""
    keys = changed_keys(old, new)
    log.info("openstack_ha: site %s: the loop now acts on its changed pillar (%s)", site, ", ".join(keys))
    try:
        ctx.call("records.fire", "openstack_ha/site/changed", {
            "site": site, "changed": keys, "reported_by": minion, "master": ctx.opts.get("id"), "time": time.time()})
    except Exception as exc:  # an announcement; never stop the loop for it
        log.debug("openstack_ha: could not announce the changed model of %s: %s", site, exc)


def bad_pillar(ctx, site):
    """``{"error", "minion", "since"}`` when ``site``'s pillar is invalid now, else None."""
    return ctx.shared("bad_pillar").get(site)


def _remember_good(ctx, site, raw):
    """Keep ``site``'s last valid pillar in the master cache (root-only, where the master's
    pillar cache also lives), so every runner process (the engine's, an operator's
    ``status``) can fall back to it; written only when it changed."""
    try:
        kept = ctx.call("records.fetch", site, "last_valid_pillar") or {}
        if kept.get("pillar") != raw:
            ctx.call("records.keep", site, "last_valid_pillar", {"pillar": raw, "time": time.time()})
    except Exception as exc:  # the fallback is a convenience; never stop the loop for it
        log.debug("openstack_ha: could not keep the last valid pillar of %s: %s", site, exc)


def _recall_good(ctx, site):
    """(time, model) from the last valid pillar kept by :func:`_remember_good`, or None."""
    try:
        kept = ctx.call("records.fetch", site, "last_valid_pillar") or {}
        if kept.get("pillar"):
            return (kept["time"], _build(ctx, kept["pillar"]))
    except Exception as exc:
        log.debug("openstack_ha: no usable last valid pillar of %s: %s", site, exc)
    return None


def _bad_pillar(ctx, site, minion, error):
    """Record that ``site``'s pillar is invalid, alert (at most once per ``MODEL_TTL``), and
    return the site's last valid model or None."""
    now = time.time()
    good = ctx.shared("last_good").get(site) or _recall_good(ctx, site)
    bad = ctx.shared("bad_pillar").setdefault(site, {"since": now, "alerted": 0.0})
    bad.update(error=error, minion=minion)
    if now - bad["alerted"] >= MODEL_TTL:
        bad["alerted"] = now
        log.error("openstack_ha: the pillar of site %s is invalid (%s); %s", site, error,
                  "acting on the last valid model" if good else "no valid model known: remediation stopped")
        ctx.call("records.fire", "openstack_ha/alert/bad_pillar", {
            "site": site, "what": "alert", "alert": "bad_pillar", "why": error, "decided_by": "remediation",
            "reported_by": minion, "time": now,
            "acting_on": "the last valid model, from {}".format(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(good[0])))
                         if good else "nothing: no valid model known since the master started"})
    return good[1] if good else None


def _publish_controller_map(ctx, sites):
    """Write the controllers (``{id: site}``) where the engine's admission
    (``openstack_ha_admit``) reads them: events from anyone else are then dropped before a
    runner call, and each site's events share the engine's workers fairly with the others'."""
    import json
    import os

    path = os.path.join(ctx.opts["cachedir"], ctx.util("admit.map_file")())
    try:
        ctx.util("files.write_atomic")(path, json.dumps({"controllers": sorted(sites), "sites": dict(sites), "time": time.time()}), mode=0o644)
    except OSError as exc:
        log.warning("openstack_ha: could not write the controller map for the intake (%s): %s", path, exc)


def controller_site(ctx, reporter, behind=False):
    """The site ``reporter`` is a controller of, from the cached map, or None. The map is
    rebuilt (every accepted minion's pillar) at most once per ``MODEL_TTL``; an id not in it
    is dropped before any per-reporter pillar work, so a flood of events from (or naming)
    minions that are not controllers costs a dictionary lookup each. ``behind`` (the loop's
    events): once built, the map is rebuilt by this process's refresher, never by the caller."""
    state = _controllers(ctx)
    if behind and state["time"]:
        start_refresher(ctx)
        return state["map"].get(reporter)
    lock = ctx.shared("controllers_lock", threading.Lock)
    # One thread rebuilds; the others go on with the map it replaces (only the first build,
    # with no map yet, is waited for).
    # "Never built" is a time of 0, not an old one: the monotonic clock starts near 0 at boot,
    # and a master started with its host would otherwise ignore every event for MODEL_TTL.
    due = lambda: not state["time"] or time.monotonic() - state["time"] >= MODEL_TTL
    if due() and lock.acquire(blocking=state["time"] == 0):
        try:
            if due():
                _renew_map(ctx, sites(ctx))
        finally:
            lock.release()
    return state["map"].get(reporter)


def _renew_map(ctx, found):
    """Renew the controller map from ``found`` (:func:`sites`) and hand it to the intake; the
    caller holds ``controllers_lock``. A controller its site's pillar no longer lists is no
    controller of it any more (its model goes too)."""
    state = _controllers(ctx)
    for ctrl, site in list(state["map"].items()):
        if site in found and ctrl not in found[site]:
            state["map"].pop(ctrl, None)
            ctx.shared("models").pop(ctrl, None)
    state["map"].update({ctrl: site for site, ids in found.items() for ctrl in ids})
    state["time"] = time.monotonic()
    _publish_controller_map(ctx, state["map"])


def sites(ctx, pillars=None):
    """``{site: [controller ids]}`` from the pillar the master compiles for the accepted
    minions: one per site (the controllers its pillar lists need no compilation of their own).
    With a dict ``pillars``, each site's compiled pillar is kept there: ``{site: (minion, raw)}``.

    A minion found to be no controller is compiled again only when it is due (see
    :data:`OTHERS_EVERY`), when it was a controller of the map, or when the intake dropped its
    beacon events since (:func:`_hinted`): a production master's many other minions cost one
    compilation each every few minutes, not every refresh round."""
    import salt.key

    # One scan at a time per process (the refresher's, a status gather's): they share the memory.
    with ctx.shared("scan_lock", threading.Lock):
        found = {}
        accepted = salt.key.get_key(ctx.opts).list_status("accepted").get("minions", [])
        others = _not_controllers(ctx)  # minion -> (checked, due): wall-clock seconds
        before = dict(others)
        known = _controllers(ctx)["map"]
        hinted = _hinted(ctx, others)
        for minion in accepted:
            if any(minion in ids for ids in found.values()):
                others.pop(minion, None)  # its site's pillar lists it: a controller now
                continue
            checked = others.get(minion)
            if checked and time.time() < checked[1] and minion not in known and minion not in hinted:
                continue
            model = pillar_model(ctx, minion)
            listed = model.get("controllers") if isinstance(model.get("controllers"), list) else []
            ids = [c.get("id") for c in listed if isinstance(c, dict)]
            if minion not in ids:
                now = time.time()
                others[minion] = (now, now + OTHERS_EVERY * random.uniform(0.5, 1.0))
                continue
            others.pop(minion, None)
            if isinstance(model.get("site"), str) and model["site"] not in found:
                found[model["site"]] = ids
                if pillars is not None:
                    pillars[model["site"]] = (minion, model)
        for gone in set(others) - set(accepted):
            others.pop(gone, None)
        if others != before:
            _keep_not_controllers(ctx, others)
    return found


NOT_CONTROLLERS = ("openstack_ha/sites", "not_controllers")  # bank and key in the master cache


def _not_controllers(ctx):
    """This process's memory of the minions found to be no controllers, ``{minion: (checked,
    due)}``; a new process (``salt-run openstack_ha.status``) starts from what the master cache
    keeps of it (:func:`_keep_not_controllers`), so it too compiles only the sites' pillars."""
    def load():
        try:
            import salt.cache

            kept = salt.cache.factory(ctx.opts).fetch(*NOT_CONTROLLERS) or {}
            return {str(m): (float(t[0]), float(t[1])) for m, t in kept.items() if isinstance(t, (list, tuple)) and len(t) == 2}
        except Exception as exc:  # a memory: without it every minion is compiled once more
            log.debug("openstack_ha: no kept list of the minions that are no controllers: %s", exc)
            return {}
    return ctx.shared("not_controllers", load)


def _keep_not_controllers(ctx, others):
    try:
        import salt.cache

        salt.cache.factory(ctx.opts).store(*NOT_CONTROLLERS, {m: list(t) for m, t in list(others.items())})
    except Exception as exc:
        log.debug("openstack_ha: could not keep the list of the minions that are no controllers: %s", exc)


# A minion whose pillar makes it no controller is compiled again after this many seconds (each
# one somewhere between half and all of it, so that a master's other minions are not all due in
# one round). Until 0.7.16 each was compiled every refresh round: on a master with a thousand
# other minions, that kept a core compiling pillars. A controller added to a known site never
# waits for this (its site's pillar lists it), nor does a new site's first controller once its
# beacons report (:func:`_hinted`).
OTHERS_EVERY = 600
HINTED_PER_ROUND = 10


def _hinted(ctx, others):
    """Minions checked before and found no controller whose beacon events the intake dropped
    as a stranger's since (the trace, ``openstack_ha_trace``): a new site's controllers, whose
    pillar came after their key. At most ``HINTED_PER_ROUND``, the latest first (a minion
    firing events in other minions' names hints at no more than that many a round)."""
    why = ctx.util("admit.not_a_controller")()
    try:
        entries = ctx.util("trace.recent")(ctx.opts, within=OTHERS_EVERY)
    except Exception as exc:  # a hint; the minion is due again within OTHERS_EVERY anyway
        log.debug("openstack_ha: no hints from the intake's trace: %s", exc)
        return set()
    hinted = []
    for entry in entries:
        who = entry.get("who")
        if entry.get("why") == why and who in others and entry.get("last", 0) > others[who][0] and who not in hinted:
            hinted.append(who)
    return set(hinted[:HINTED_PER_ROUND])


# The refresher recompiles every site this often: under MODEL_TTL, so that the loop's events
# find the models fresh.
REFRESH_EVERY = 0.75 * MODEL_TTL


def refresh(ctx):
    """One round of the refresher: one pillar compiled per site (the accepted minions', as
    :func:`sites`), the controller map rebuilt and every site's model adopted from those same
    pillars. Returns the sites found."""
    pillars = {}
    found = sites(ctx, pillars)
    with ctx.shared("controllers_lock", threading.Lock):
        _renew_map(ctx, found)
    for minion, raw in pillars.values():
        _adopt(ctx, minion, raw)
    return found


def _refresh_forever(ctx, every):
    warned = None  # monotonic time of the last warning (the clock may start near 0 at boot)
    while True:
        time.sleep(every)
        started = time.monotonic()
        try:
            found = refresh(ctx)
        except Exception:  # pylint: disable=broad-except
            log.exception("openstack_ha: refreshing the sites' models failed (the loop goes on with the ones it has)")
            continue
        took = time.monotonic() - started
        log.debug("openstack_ha: refreshed %d sites' models in %.2f s", len(found), took)
        if took > every and (warned is None or time.monotonic() - warned > 600):
            # Models older than MODEL_TTL are still used, up to 3 x MODEL_TTL; past that an event
            # compiles its site's pillar itself, waiting its turn behind the refresher's.
            warned = time.monotonic()
            log.warning("openstack_ha: compiling the pillars of %d sites took %.1f s, longer than the %.1f s between "
                        "rounds: the loop's site models age (slow ext_pillar or renderers?)", len(found), took, every)


def start_refresher(ctx, every=None):
    """Start, once per process, the thread that compiles the sites' pillars every
    ``REFRESH_EVERY`` seconds (:func:`refresh`), so that the loop's events never wait for a
    compilation (one at a time per process, ``pillar_model``: at ten sites on a busy master,
    events queued for seconds behind it). Returns the thread."""
    return ctx.shared("refresher", lambda: _thread(_refresh_forever, ctx, every or REFRESH_EVERY))


def _thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True, name="openstack_ha-sites")
    thread.start()
    return thread


def resolve_site(ctx, site):
    """The site an operator command means (the only one when ``site`` is None): returns
    ``(site, {site: controller ids}, its model)``. Raises SaltInvocationError, naming what is
    wrong: an unknown site, or one whose pillar is invalid with no earlier valid one."""
    from salt.exceptions import SaltInvocationError

    known = sites(ctx)
    if site is None and len(known) == 1:
        site = next(iter(known))
    if site not in known:
        raise SaltInvocationError("unknown site {!r}; known: {}".format(site, ", ".join(sorted(known)) or "none"))
    model = site_model(ctx, known[site][0])
    if model is None:
        raise SaltInvocationError("the pillar of site {} is invalid and this master knows no earlier valid one: {}".format(
            site, (bad_pillar(ctx, site) or {}).get("error", "no model")))
    return site, known, model
