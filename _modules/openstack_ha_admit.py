"""
The reactor's admission of beacon events, on the master: is this event worth a runner call?

:depends: runs in the master's reactor (``salt['openstack_ha_admit.admit'](tag)`` in
    ``reactor/openstack_ha_beacon.sls``); the controller map the runner keeps.

Salt's reactor hands an event to a runner in a pool of a few threads, and each call costs
tens of milliseconds before the runner even starts: a minion that fires thousands of events a
second would fill that queue and delay the real reports behind it. An event whose reporter
(the id in its tag) is not a controller of any site is dropped here, while the reactor file
renders, at the cost of a dictionary lookup. The map of controllers is the runner's (written
to the master's cachedir whenever it rebuilds it, at most every 30 s); while there is none
yet, or it is older than ``MAP_MAX_AGE``, every event is admitted and the runner decides.
Events in a controller's name (real or forged: they are hints) are coalesced while one of the
same reporter and beacon waits for the runner (see :func:`_coalesce`); the runner then
coalesces what reaches it by the time the master received each event.
"""

import json
import os

__virtualname__ = "openstack_ha_admit"

MAP_FILE = "openstack_ha-controllers.json"
MAP_MAX_AGE = 600.0
_MAP = {"mtime": None, "ids": None}


def __virtual__():
    return __virtualname__


def _controllers():
    """The controller ids of the runner's map, or None when there is no fresh one."""
    import time

    path = os.path.join(__opts__["cachedir"], MAP_FILE)
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    if time.time() - mtime > MAP_MAX_AGE:
        return None
    if _MAP["mtime"] != mtime:
        try:
            with open(path) as fh:
                _MAP.update(mtime=mtime, ids=frozenset(json.load(fh)["controllers"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return _MAP["ids"]


def pending():
    """The reactor process's table of admitted events not yet taken up by the runner:
    ``{(reporter, beacon): {"since", "kinds", "services"}}``. Shared with the runner (which
    the reactor runs in threads of the same process) through a plain module, since Salt loads
    each of them in a loader of its own."""
    import salt

    return salt.__dict__.setdefault("_openstack_ha_pending", {})


PENDING_MAX_AGE = 60.0  # an admitted event never taken up (the reactor's queue overflowed)


def _coalesce(reporter, beacon, data):
    """True when an event of ``reporter``'s ``beacon`` is already waiting for the runner: this
    one is folded into it (its kind and services), and the waiting one, when it runs, checks
    everything afresh, after this event arrived. So a flood in a controller's name costs one
    queued runner call per (reporter, beacon), never a queue that hides the real reports."""
    import threading
    import time

    import salt

    lock = salt.__dict__.setdefault("_openstack_ha_pending_lock", threading.Lock())
    kind = data.get("kind") if isinstance(data, dict) else None
    services = set()
    for change in (data.get("changes") or []) if isinstance(data, dict) and isinstance(data.get("changes"), list) else []:
        if isinstance(change, dict) and isinstance(change.get("service"), str):
            services.add(change["service"][:64])
    with lock:
        table = pending()
        entry = table.get((reporter, beacon))
        now = time.monotonic()
        if entry is not None and now - entry["since"] < PENDING_MAX_AGE:
            entry["kinds"].add(kind)
            entry["services"] |= services
            entry["folded"] += 1
            return True
        table[(reporter, beacon)] = {"since": now, "kinds": {kind}, "services": services, "folded": 0}
        return False


def admit(tag, data=None):
    """
    True when the beacon event ``tag`` (``salt/beacon/<id>/openstack_ha_<beacon>/...``, with
    its ``data``) should reach the runner: its reporter is a known controller (or no fresh
    controller map exists) and no event of the same reporter and beacon is already waiting.
    An event from a minion that is not a controller is counted in the trace ``status`` shows.

    CLI Example (on the master):

    .. code-block:: bash

        salt-call --local openstack_ha_admit.admit salt/beacon/lab-ctrl1/openstack_ha_backends/change
    """
    parts = str(tag).split("/")
    if len(parts) < 4 or parts[:2] != ["salt", "beacon"]:
        return False
    known = _controllers()
    if known is not None and parts[2] not in known:
        __utils__["openstack_ha_trace.note"](__opts__, "reactor", "event from a minion that is not a controller", parts[2], tag)
        return False
    return not _coalesce(parts[2], parts[3], data)
