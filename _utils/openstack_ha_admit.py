"""
Which beacon events reach the runner, and how many at once: the loop's admission, on the master.

:depends: the controller map the runner writes to the master's cachedir
    (``openstack_ha-controllers.json``); used by the engine ``_engines/openstack_ha_loop.py``.

An accepted minion may be hostile, and Salt lets it choose the tag (so the reporter's id) of
every beacon event it fires: a flood of events in its own name or in a controller's must not
delay the real reports. Two rules, each a dictionary operation per event:

- an event whose reporter (the id in its tag) is not a controller of any site is dropped
  (while no fresh map exists yet, every event is admitted and the runner decides);
- an event of a (reporter, beacon) that already waits for a worker is folded into the waiting
  one (its kind, the services it names, when the master received it). The waiting one, when a
  worker takes it, checks everything afresh after the newest event folded into it arrived.

So a flood costs at most one running and one waiting runner call per (reporter, beacon) of a
real controller, and the events of every other controller are never queued behind it.
"""

import json
import os
import threading
import time

MAP_FILE = "openstack_ha-controllers.json"
MAP_MAX_AGE = 600.0
# At most this many distinct (reporter, beacon) keys wait at once; only reachable while no
# controller map exists (before that, every reporter id is admitted).
MAX_WAITING = 512
# Seconds between the starts of two runner calls of one (reporter, beacon). Salt runs a beacon
# at most once a second, so a controller's own events never come closer than this.
MIN_GAP = 0.5
# Why an event of a reporter the map does not list is dropped: the intake's and the runner's
# trace say it in these words, and the refresher reads them as a hint (a new site's controller).
NOT_A_CONTROLLER = "event from a minion that is not a controller"


def parse_tag(tag):
    """``(reporter, beacon)`` of a ``salt/beacon/<id>/openstack_ha_<beacon>/...`` tag, or None."""
    parts = str(tag).split("/")
    if len(parts) < 4 or parts[:2] != ["salt", "beacon"] or not parts[3].startswith("openstack_ha_") or not parts[2]:
        return None
    return parts[2], parts[3]


def report_to_keep(key, data):
    """True when an event of ``key`` (``(reporter, beacon)``) carries a signed report that is
    kept as it arrives, before the event's turn: a VIP event's, or a backend change event's."""
    return isinstance(data, dict) and data.get("report") is not None and (
        key[1] == "openstack_ha_vip" or (key[1] == "openstack_ha_backends" and data.get("kind") == "change"))


def _named_services(data):
    """The service names an event's ``changes`` list names (at most 64 characters each)."""
    changes = data.get("changes") if isinstance(data, dict) else None
    return {c["service"][:64] for c in changes or [] if isinstance(c, dict) and isinstance(c.get("service"), str)} \
        if isinstance(changes, list) else set()


def merge(data, entry):
    """``data`` (the first event of a waiting entry) with what was folded into it: a change
    among them makes this a change, the services they named are checked too (several, or a
    kind that is neither change nor heartbeat: the whole site), and ``_stamp`` is the newest
    event's, so the runner's check starts after every folded event arrived."""
    if not isinstance(data, dict):
        return data
    merged = dict(data)
    if entry.get("stamp") is not None:
        merged["_stamp"] = entry["stamp"]
    if not entry.get("folded"):
        return merged
    kinds = entry["kinds"]
    if "change" in kinds:
        merged["kind"] = "change"
    named = _named_services(data) | entry["services"]
    merged["changes"] = [{"service": name} for name in sorted(named)]
    if len(named) != 1 or any(k not in ("change", "heartbeat") for k in kinds):
        merged["changes"] = []  # several services or unknown kinds: the whole site is checked
        merged["kind"] = "change"
    return merged


class Admission:
    """The admission state of one master process: the controller map (re-read when its file
    changes) and the table of waiting (reporter, beacon) entries. Thread-safe."""

    def __init__(self, cachedir, clock=time.monotonic):
        self.path = os.path.join(cachedir, MAP_FILE)
        self.clock = clock
        self.lock = threading.Lock()
        self.waiting = {}
        self.running = {}  # key -> when its call started
        self.reports = {}  # (reporter, beacon) -> (tag, data): its newest signed report not yet kept
        self._map = (None, None)  # (mtime, frozenset of ids)
        self._sites = {}  # id -> its site, from the same map

    def controllers(self):
        """The controller ids of the runner's map, or None when there is no fresh one."""
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return None
        if time.time() - mtime > MAP_MAX_AGE:
            return None
        if self._map[0] != mtime:
            try:
                with open(self.path) as fh:
                    document = json.load(fh)
                ids = document["controllers"]
                sites = document.get("sites")
                self._sites = {i: s for i, s in sites.items() if isinstance(s, str)} if isinstance(sites, dict) else {}
                self._map = (mtime, frozenset(i for i in ids if isinstance(i, str)))
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self._map[1]

    def offer(self, tag, data):
        """
        One event off the bus. Returns ``("queue", key)`` when a worker must take it up (the
        caller submits ``take(key)``), ``("later", key)`` when it waits for the call of the
        same key that runs now (:meth:`finish` hands it on), ``("folded", key)`` when it joined
        a waiting entry, or ``("drop", why)`` when it must not reach the runner.
        """
        key = parse_tag(tag)
        if key is None:
            return "drop", "not an openstack_ha beacon tag"
        known = self.controllers()
        if known is not None and key[0] not in known:
            return "drop", NOT_A_CONTROLLER
        stamp = data.get("_stamp") if isinstance(data, dict) else None
        with self.lock:
            entry = self.waiting.get(key)
            if entry is not None:
                entry["kinds"].add(data.get("kind") if isinstance(data, dict) else None)
                entry["services"] |= _named_services(data)
                entry["folded"] += 1
                entry["stamp"] = stamp
                entry["received"] = self.clock()  # as ``stamp``: the newest event's
                return "folded", key
            if len(self.waiting) >= MAX_WAITING:
                return "drop", "too many reporters waiting"
            self.waiting[key] = {"tag": tag, "data": data, "stamp": stamp, "received": self.clock(),
                                 "kinds": {data.get("kind") if isinstance(data, dict) else None},
                                 "services": set(), "folded": 0}
            # One runner call at a time per key: while one runs, this entry waits (and takes
            # in what follows) until :meth:`finish` hands it on.
            return ("later" if key in self.running else "queue"), key

    def group(self, reporter):
        """Whose turn an event of ``reporter`` is, for the engine's workers
        (``openstack_ha_turns``): ``("site", name)`` of the controller's site in the map, else
        ``("reporter", reporter)`` (no map yet, or a map without sites)."""
        self.controllers()  # the map read afresh when its file changed
        site = self._sites.get(reporter)
        return ("site", site) if site is not None else ("reporter", reporter)

    def offer_report(self, key, tag, data):
        """An event of ``key`` (``(reporter, beacon)``, admitted by :meth:`offer`) that carries a
        signed report, to be kept at once. Returns True when the caller submits
        :meth:`take_report` for it; False when one is already waiting, which now carries this
        newer event instead (so a flood in a controller's name costs one waiting entry per
        beacon, never a queue)."""
        with self.lock:
            waiting = key in self.reports
            self.reports[key] = (tag, data)
        return not waiting

    def take_report(self, key):
        """``(tag, data)`` of the newest report of ``key`` waiting to be kept, or None."""
        with self.lock:
            return self.reports.pop(key, None)

    def take(self, key):
        """The waiting entry ``key`` as ``(tag, data, received)`` for the runner: ``data`` with
        everything folded into it merged (see :func:`merge`), ``received`` when this admission
        received the entry's newest event (its clock; the merged ``_stamp`` is that event's
        too), so the caller can tell how long it waited for its turn. None when it is gone.
        From now on a new event of the same key waits for this call to finish (it arrived
        after this one's check may have begun)."""
        with self.lock:
            entry = self.waiting.pop(key, None)
            if entry is not None:
                self.running[key] = self.clock()
        if entry is None:
            return None
        return entry["tag"], merge(entry["data"], entry), entry["received"]

    @staticmethod
    def mark_turn(received, taken):
        """:func:`mark_turn` (for the engine's workers, which have no loader of their own)."""
        mark_turn(received, taken)

    def finish(self, key):
        """The runner call of ``key`` is over. Returns None, or, when an entry of the same key
        waited for it, the seconds after which the caller submits ``take(key)`` for it: calls
        of one key start at least ``MIN_GAP`` apart (a beacon reports at most once a tick, so
        only a flood in a controller's name ever waits)."""
        with self.lock:
            started = self.running.pop(key, None)
            if key not in self.waiting:
                return None
        return max(0.0, MIN_GAP - (self.clock() - started)) if started is not None else 0.0


def mark_turn(received, taken):
    """On the worker thread about to run an event's turn: when the intake received it and when
    the worker took it (monotonic clock; None for both clears it). The round's ``timing``
    reads it back (:func:`current_turn`) to split the event's wait into its parts."""
    threading.current_thread().openstack_ha_turn = (received, taken) if received is not None else None


def current_turn():
    """``(received, taken)`` set by :func:`mark_turn` on this thread, or None (a call from
    ``salt-run``, or outside a turn)."""
    return getattr(threading.current_thread(), "openstack_ha_turn", None)


def map_file():
    """The controller map's file name in the master's cachedir (the runner writes it)."""
    return MAP_FILE


def not_a_controller():
    """The words the trace counts an event of a minion the controller map does not list under."""
    return NOT_A_CONTROLLER


def admission(cachedir):
    """A new :class:`Admission` reading the controller map in ``cachedir`` (Salt's loader
    hands out functions, not classes)."""
    return Admission(cachedir)
