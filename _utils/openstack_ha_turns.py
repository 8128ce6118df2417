"""
The loop engine's workers, shared fairly among the sites: a fixed set of threads that run the
turns submitted to them, each turn under a group (its site), the next free worker taking a
turn of the waiting group that has the fewest turns running (among equals, the one that has
waited longest since its last turn began).

:depends: nothing but the standard library; used by the engine ``_engines/openstack_ha_loop.py``.

Why not a first-come queue: one master drives many sites, and a site whose rounds are slow (a
fault a second there, a controller cut off so its verifications wait out their timeout) would
otherwise fill every worker and the queue in front of them, and a crash at a quiet site would
wait behind all of it. Here a quiet site's turn waits at most for the next worker to come free;
a busy site still gets every worker no other site asks for (no worker idles while a turn waits).
"""

import collections
import itertools
import logging
import threading

log = logging.getLogger(__name__)


class FairPool:
    """``workers`` daemon threads running the turns :meth:`submit` hands them, fairly by group
    (see the module's docstring). Thread-safe; the threads start with the pool."""

    def __init__(self, workers, name="openstack_ha"):
        if int(workers) < 1:
            raise ValueError("a pool needs at least one worker, not {!r}".format(workers))
        self._cv = threading.Condition()
        self._waiting = {}  # group -> deque of (fn, args)
        self._since = {}  # group -> its place in line (smaller: waited longer since its last turn began)
        self._running = collections.Counter()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._serve, name="{}_{}".format(name, i), daemon=True)
                         for i in range(int(workers))]
        for thread in self._threads:
            thread.start()

    def submit(self, group, fn, *args):
        """Run ``fn(*args)`` on a worker, as a turn of ``group`` (any hashable: a site). What it
        raises is logged, never propagated."""
        with self._cv:
            queue = self._waiting.get(group)
            if queue is None:
                queue = self._waiting[group] = collections.deque()
                self._since[group] = next(self._order)
            queue.append((fn, args))
            self._cv.notify()

    def _next(self):
        """The next turn (group, fn, args), taken off its group's queue; the caller holds the lock
        and there is a waiting turn."""
        group = min(self._waiting, key=lambda g: (self._running[g], self._since[g]))
        queue = self._waiting[group]
        fn, args = queue.popleft()
        if queue:
            self._since[group] = next(self._order)  # to the back of the line among its equals
        else:
            del self._waiting[group], self._since[group]
        self._running[group] += 1
        return group, fn, args

    def _serve(self):
        while True:
            with self._cv:
                while not self._waiting:
                    self._cv.wait()
                group, fn, args = self._next()
            try:
                fn(*args)
            except Exception:  # pylint: disable=broad-except
                log.exception("openstack_ha: a turn of %s failed", group)
            finally:
                with self._cv:
                    self._running[group] -= 1
                    if not self._running[group]:
                        del self._running[group]

    def snapshot(self):
        """``{"running": {group: n}, "waiting": {group: n}}``, for tests and diagnostics."""
        with self._cv:
            return {"running": dict(self._running), "waiting": {g: len(q) for g, q in self._waiting.items()}}


def pool(workers, name="openstack_ha"):
    """A new :class:`FairPool` of ``workers`` threads (Salt's loader hands out functions, not classes)."""
    return FairPool(workers, name)
