"""
The trace of what the master ignored: events from minions that are not controllers, forged
tags, answers whose signature does not check out.

:depends: Salt's cache (``salt.cache.factory``), on the master.

Counted per (why, who), logged at most once a minute per source, the counts kept in the
master cache (bank ``openstack_ha/ignored``, one key per process kind: the engine's
intake and the runner) and shown by ``salt-run openstack_ha.status``. Cheap enough to call
for every event of a flood: a dictionary update, and a cache write at most every 5 s (or for
a source seen for the first time).
"""

import logging
import time

log = logging.getLogger(__name__)

LOG_EVERY = 60.0
STORE_EVERY = 5.0
_STATE = {}
MAX_SOURCES = 500


def note(opts, where, why, who, tag):
    """Count one ignored event or answer. ``where`` names the counter's key in the cache
    (``intake`` or ``runner``). Never raises."""
    state = _STATE.setdefault(where, {"counts": {}, "logged": {}, "stored": 0.0})
    now = time.time()
    key = "{} | {}".format(why, who)
    if key not in state["counts"] and len(state["counts"]) >= MAX_SOURCES:
        key, who = "{} | (others)".format(why), "(others)"  # an intruder inventing names
    entry = state["counts"].setdefault(key, {"why": why, "who": str(who)[:120], "count": 0, "first": now})
    entry.update(count=entry["count"] + 1, last=now, tag=str(tag)[:200])
    if now - state["logged"].get(key, 0) >= LOG_EVERY:
        state["logged"][key] = now
        log.warning("openstack_ha: ignored %s from %r (%s); %d so far", why, who, tag, entry["count"])
    if entry["count"] == 1 or now - state["stored"] >= STORE_EVERY:
        state["stored"] = now
        try:
            import salt.cache

            counts = sorted(state["counts"].values(), key=lambda e: -e["last"])[:50]
            salt.cache.factory(opts).store("openstack_ha/ignored", where, {"counts": counts, "time": now})
        except Exception as exc:  # never let the trace of an intruder stop the loop
            log.debug("openstack_ha: could not store the ignored-event counts: %s", exc)


def recent(opts, within=3600):
    """Every counter (intake and runner) seen in the last ``within`` seconds, newest first."""
    import salt.cache

    cache, found = salt.cache.factory(opts), []
    for where in ("intake", "runner"):
        try:
            found += (cache.fetch("openstack_ha/ignored", where) or {}).get("counts") or []
        except Exception:
            continue
    return sorted([e for e in found if time.time() - e.get("last", 0) < within], key=lambda e: -e["last"])
