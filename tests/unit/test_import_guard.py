"""The guard against the import-cache race of Salt jobs run as threads
(``_utils/openstack_ha_import_guard.py``), on Python's own ``PathFinder.invalidate_caches``.

The race is made deterministic: a finder whose invalidation deletes the next entry of the
cache stands for a second thread's ``invalidate_caches`` that ran between the first one's copy
of the cache and its deletion of that entry."""

import importlib.machinery
import sys

import pytest

from tests.conftest import load_module

guard = load_module("_utils/openstack_ha_import_guard.py", "openstack_ha_import_guard")


class OtherThread:
    """A path entry finder whose invalidation deletes ``victim`` from the cache, as another
    thread's ``importlib.invalidate_caches()`` would at that moment."""

    def __init__(self, victim):
        self.victim = victim

    def invalidate_caches(self):
        del sys.path_importer_cache[self.victim]


@pytest.fixture
def plain_cache():
    """``sys.path_importer_cache`` as Python makes it (a plain dict) for the test, and after it."""
    sys.path_importer_cache = dict(sys.path_importer_cache)
    yield
    for path in ("/oha-race/a", "/oha-race/b"):
        sys.path_importer_cache.pop(path, None)
    sys.path_importer_cache = dict(sys.path_importer_cache)


def race():
    """One interleaving of two threads' invalidations over a missing path entry (None)."""
    sys.path_importer_cache["/oha-race/a"] = OtherThread("/oha-race/b")
    sys.path_importer_cache["/oha-race/b"] = None  # a sys.path entry that does not exist
    importlib.machinery.PathFinder.invalidate_caches()


def test_without_the_guard_the_second_deletion_raises_as_salt_jobs_saw(plain_cache):
    with pytest.raises(KeyError, match="/oha-race/b"):
        race()


def test_with_the_guard_the_race_is_harmless_and_the_entries_are_kept(plain_cache):
    sys.path_importer_cache["/oha-kept"] = None
    before = dict(sys.path_importer_cache)
    assert guard.installed() is False
    assert guard.install() is True and guard.installed() is True
    assert dict(sys.path_importer_cache) == before  # the same entries, in the tolerant dict
    replaced = sys.path_importer_cache
    assert guard.install() is True and sys.path_importer_cache is replaced  # idempotent
    race()
    assert "/oha-race/b" not in sys.path_importer_cache and "/oha-kept" not in sys.path_importer_cache
    assert importlib.machinery.PathFinder.find_spec("tomllib") is not None  # imports still find their way
    assert isinstance(sys.path_importer_cache, guard.TolerantImporterCache)
