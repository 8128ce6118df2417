"""
Grains of openstack_ha. Loaded by the minion at its start, before it runs any job, which
makes this the place for what must be in place in the minion's process first.

``openstack_ha_import_guard``: True once the guard against the import-cache race of jobs run
as threads is installed in this minion's process (``_utils/openstack_ha_import_guard.py``);
``salt '*ctrl*' grains.get openstack_ha_import_guard`` shows it.
"""


def import_guard():
    """Install the import-cache guard in the minion's process; returns the grain saying so."""
    return {"openstack_ha_import_guard": __utils__["openstack_ha_import_guard.install"]()}
