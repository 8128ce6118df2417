"""
What the master remembers per site, and how it says what it did: records in the master cache,
one lock per site, events on the master's bus, the trace of what it ignored.

:depends: runs on the master (``salt.cache``, the master's event bus); every function takes
    the :class:`openstack_ha_context.Context` first.

Records live in the master cache, bank ``openstack_ha/<site>``, key ``records``:
``{"backends": {key: last action}, "maintenance": [keys], "rabbitmq": {...}, "catalog":
{...}}``, and the latest ``MAX_DECISIONS`` decisions, oldest first, under the key
``decisions`` of the same bank (:func:`history`). Every read-modify-write happens under
:func:`lock`. The log has its own key since 0.7.24: every event's round reads the records
several times, and with the log in them each read decoded about 120 KB (5 ms of CPU, under the
site lock); the log is read only to append to it and for ``history`` and ``status``. Records
written before keep their log in them until the next :func:`store` moves it.

Where: the Salt cache driver named by the master option ``openstack_ha_cache`` (default: the
master's ``cache``, ``localfs``). With more than one master (hot-hot multi-master), every master
names the same shared store, ``redis``, configured as Salt's redis cache is
(``cache.redis.host``, ``cache.redis.port``, ``cache.redis.db``, ``cache.redis.password`` or
``cache.redis.unix_socket_path``): then the records and the per-site lock are one across the
masters. ``localfs`` is one master's alone; the lock there is a file lock.
"""

import contextlib
import fcntl
import os
import threading
import time
import uuid

MAX_DECISIONS = 200
# Drivers whose lock openstack_ha knows: a record store without a lock that every master shares
# would let two masters drain the same backend on their own.
LOCKING_DRIVERS = ("localfs", "redis")
# The redis lock: a key set only when absent (SET NX PX) holding this holder's token, its lease
# renewed every third of LOCK_LEASE while held, so a master that dies frees it within the lease.
LOCK_LEASE = 15.0
LOCK_WAIT = 300.0
_CACHES = {}
_CACHES_LOCK = threading.Lock()


def driver(opts):
    """The cache driver of the records: ``openstack_ha_cache``, else the master's ``cache``.
    Raises CommandExecutionError for a driver openstack_ha has no shared lock for."""
    from salt.exceptions import CommandExecutionError

    name = opts.get("openstack_ha_cache") or opts.get("cache") or "localfs"
    if name not in LOCKING_DRIVERS:
        raise CommandExecutionError(
            "openstack_ha_cache: {!r} is not supported (records need a lock every master shares: "
            "{})".format(name, ", ".join(LOCKING_DRIVERS)))
    return name


def _redis_options(opts):
    return {"host": opts.get("cache.redis.host", "localhost"), "port": int(opts.get("cache.redis.port", 6379)),
            "db": int(opts.get("cache.redis.db", 0)), "password": opts.get("cache.redis.password") or None,
            "unix_socket_path": opts.get("cache.redis.unix_socket_path")}


def _cache(ctx):
    """One ``salt.cache.Cache`` per driver and store in this process (a redis one keeps its
    connection pool). Not ``salt.cache.factory``: its MemCache would keep records a second
    master already changed."""
    import salt.cache

    name = driver(ctx.opts)
    key = (name, ctx.opts.get("cachedir"), tuple(sorted(_redis_options(ctx.opts).items())) if name == "redis" else None)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = salt.cache.Cache(ctx.opts, driver=name)
        return cache


def redis_client(opts):
    """This process's redis client of the records' store (``cache.redis.*`` options)."""
    import redis

    key = tuple(sorted(_redis_options(opts).items()))
    with _CACHES_LOCK:
        client = _CACHES.get(("client",) + key)
        if client is None:
            client = _CACHES[("client",) + key] = redis.Redis(socket_timeout=5, socket_connect_timeout=5, **_redis_options(opts))
        return client


def load(ctx, site):
    """``site``'s records, with every part present. Their ``decisions`` are the ones this
    read-modify-write adds (:func:`announce`), which :func:`store` appends to the log: empty,
    but for records written before 0.7.24, whose log is handed on that way."""
    data = _cache(ctx).fetch("openstack_ha/" + site, "records") or {}
    data.setdefault("backends", {})
    data.setdefault("maintenance", [])
    data.setdefault("decisions", [])
    return data


def store(ctx, site, data):
    """Write ``site``'s records; the decisions announced into them since :func:`load` go to the
    end of the log (the latest ``MAX_DECISIONS`` kept) and are taken out of ``data``, so
    storing it again adds none twice. The caller holds the site's :func:`lock`."""
    cache, bank = _cache(ctx), "openstack_ha/" + site
    added = data.get("decisions") or []
    cache.store(bank, "records", {k: v for k, v in data.items() if k != "decisions"})
    if added:
        cache.store(bank, "decisions", (history(ctx, site) + added)[-MAX_DECISIONS:])
    data["decisions"] = []


def history(ctx, site):
    """``site``'s latest decisions, oldest first (at most ``MAX_DECISIONS``). A site whose log
    was never written apart (records from before 0.7.24) has it in its records."""
    cache, bank = _cache(ctx), "openstack_ha/" + site
    log = cache.fetch(bank, "decisions")
    if isinstance(log, list):
        return log
    return list((cache.fetch(bank, "records") or {}).get("decisions") or [])


def fetch(ctx, site, key):
    """Another key of ``site``'s bank (e.g. ``last_valid_pillar``), or None."""
    return _cache(ctx).fetch("openstack_ha/" + site, key)


def keep(ctx, site, key, value):
    """Store ``value`` under ``key`` in ``site``'s bank."""
    _cache(ctx).store("openstack_ha/" + site, key, value)


@contextlib.contextmanager
def lock(ctx, name):
    """One holder at a time of ``name`` (a site, or ``<site>-catalog``): with ``localfs`` a file
    lock on this master (an operator's ``salt-run`` and the engine's threads exclude each other
    too); with ``redis`` one lock across every master sharing the store."""
    if driver(ctx.opts) == "redis":
        with redis_lock(redis_client(ctx.opts), "openstack_ha:lock:" + name):
            yield
        return
    path = os.path.join(ctx.opts["cachedir"], "openstack_ha-{}.lock".format(name))
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"


@contextlib.contextmanager
def redis_lock(client, key, lease=LOCK_LEASE, wait=LOCK_WAIT):
    """Hold ``key`` in redis: taken with SET NX PX and a token of this holder, renewed every
    ``lease``/3 s by a thread while held, released only if still ours (a holder that outlived
    its lease does not free the next one's). Raises CommandExecutionError after ``wait`` s."""
    from salt.exceptions import CommandExecutionError

    token = uuid.uuid4().hex
    lease_ms = int(lease * 1000)
    deadline = time.monotonic() + wait
    pause = 0.002
    while not client.set(key, token, nx=True, px=lease_ms):
        if time.monotonic() > deadline:
            raise CommandExecutionError("openstack_ha: lock {} still held by another master or process after {:.0f} s".format(key, wait))
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    done = threading.Event()

    def renew():
        while not done.wait(lease / 3):
            try:
                client.eval(_RENEW, 1, key, token, lease_ms)
            except Exception:  # pylint: disable=broad-except
                pass  # the store is away: the lease runs out, as the holder's death would

    keeper = threading.Thread(target=renew, name="openstack_ha lock " + key, daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        client.eval(_RELEASE, 1, key, token)


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
    """Append one decision to the site's ``records`` (with the site and the deciding master's
    id) and, when it has a ``tag``, fire it."""
    entry = dict(entry, site=site, master=ctx.opts.get("id"))
    records["decisions"].append(entry)
    if tag:
        fire(ctx, tag, entry)


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
