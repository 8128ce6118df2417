"""
What the master remembers per site, and how it says what it did: records in the master cache,
one lock per site, events on the master's bus, the trace of what it ignored.

:depends: runs on the master (``salt.cache``, the master's event bus); every function takes
    the :class:`openstack_ha_context.Context` first.

Records live in the master cache, bank ``openstack_ha/<site>``, key ``records``:
``{"backends": {key: last action}, "maintenance": [keys], "decisions": [latest first...],
"rabbitmq": {...}, "catalog": {...}}``. Every read-modify-write happens under :func:`lock`.
"""

import contextlib
import fcntl
import os

MAX_DECISIONS = 200


def _cache(ctx):
    import salt.cache

    return salt.cache.factory(ctx.opts)


def load(ctx, site):
    """``site``'s records, with every part present."""
    data = _cache(ctx).fetch("openstack_ha/" + site, "records") or {}
    data.setdefault("backends", {})
    data.setdefault("maintenance", [])
    data.setdefault("decisions", [])
    return data


def store(ctx, site, data):
    """Write ``site``'s records (the latest ``MAX_DECISIONS`` decisions kept)."""
    data["decisions"] = data["decisions"][-MAX_DECISIONS:]
    _cache(ctx).store("openstack_ha/" + site, "records", data)


def fetch(ctx, site, key):
    """Another key of ``site``'s bank (e.g. ``last_valid_pillar``), or None."""
    return _cache(ctx).fetch("openstack_ha/" + site, key)


def keep(ctx, site, key, value):
    """Store ``value`` under ``key`` in ``site``'s bank."""
    _cache(ctx).store("openstack_ha/" + site, key, value)


@contextlib.contextmanager
def lock(ctx, name):
    """One holder at a time of ``name`` (a site, or ``<site>-catalog``) on this master: a file
    lock, so an operator's ``salt-run`` and the engine's threads exclude each other too."""
    path = os.path.join(ctx.opts["cachedir"], "openstack_ha-{}.lock".format(name))
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


TRUSTED_PREFIX = "salt/run/"


def fire(ctx, tag, data):
    """Fire ``data`` under ``tag`` on the master's event bus, and a copy under
    ``salt/run/<tag>``: Salt drops ``salt/run/*`` events a minion sends in a batch (its
    ``MINION_EVENT_BLACKLIST``) and a minion's single event carries ``cmd: _minion_event``,
    so the engine's Alertmanager delivery can tell the master's own events from a hostile
    minion's forgeries (see ``openstack_ha_alerting.trusted``)."""
    import salt.utils.event

    with salt.utils.event.get_master_event(ctx.opts, ctx.opts["sock_dir"], listen=False) as bus:
        bus.fire_event(data, tag)
        if tag.startswith("openstack_ha/"):
            bus.fire_event(data, TRUSTED_PREFIX + tag)


def announce(ctx, records, site, entry, tag=None):
    """Append one decision to the site's ``records`` and, when it has a ``tag``, fire it."""
    records["decisions"].append(dict(entry, site=site))
    if tag:
        fire(ctx, tag, dict(entry, site=site))


def record(ctx, site, entries):
    """Announce ``[(entry, tag)]`` and store them, under the site's lock."""
    if not entries:
        return
    with lock(ctx, site):
        records = load(ctx, site)
        for entry, tag in entries:
            announce(ctx, records, site, entry, tag)
        store(ctx, site, records)


def note_ignored(ctx, why, who, tag):
    """Keep a trace of an ignored event or answer (see ``_utils/openstack_ha_trace.py``)."""
    ctx.util("trace.note")(ctx.opts, "runner", why, who, tag)
