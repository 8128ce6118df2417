"""
A guard against a race in Python's import cache that fails Salt jobs run as threads.

Salt's loader calls ``importlib.invalidate_caches()`` after every module it loads. That
function walks a copy of ``sys.path_importer_cache`` and deletes each entry whose finder is
None (a ``sys.path`` entry that does not exist, such as ``python311.zip``, which every import
of a new module puts back). Two threads loading modules at once both find the entry in their
copy and both delete it: the second one raises ``KeyError`` and the job that happened to load
a module fails with it before it did anything (Salt issue 61734). Controllers run their jobs
as threads (``multiprocessing: False``, README), so a ``state.apply`` beside one of the
loop's questions could fail that way: seen on the lab, where one controller's apply returned
``KeyError: '.../python311.zip'`` in 0.2 s and left its RabbitMQ node stopped.

:func:`install` replaces ``sys.path_importer_cache`` (the same entries) with a dictionary
that takes the deletion of an entry already gone as done. Python's import system looks the
cache up on ``sys`` at every use, so the replacement is seen at once by every thread. The
minion installs it from the ``openstack_ha`` grains module (loaded at its start, before any
job), the master from the engine and the runner.
"""

import sys
import threading

_lock = threading.Lock()


class TolerantImporterCache(dict):
    """``sys.path_importer_cache`` whose ``del cache[path]`` of an entry already deleted (by
    another thread) does nothing instead of raising ``KeyError``."""

    def __delitem__(self, path):
        self.pop(path, None)


def installed():
    """True when ``sys.path_importer_cache`` is the tolerant dictionary."""
    return isinstance(sys.path_importer_cache, TolerantImporterCache)


def install():
    """Put the tolerant dictionary in place of ``sys.path_importer_cache`` (its entries kept);
    idempotent and safe to call from any thread. Returns True (installed)."""
    with _lock:
        if not installed():
            # dict(...) copies in one step under the GIL; an entry another thread adds to the
            # old dictionary meanwhile is only a cache entry, made again when next needed.
            sys.path_importer_cache = TolerantImporterCache(sys.path_importer_cache)
    return True
