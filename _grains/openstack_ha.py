"""
Grains of openstack_ha. Loaded by the minion at its start, before it runs any job, which
makes this the place for what must be in place in the minion's process first.

``openstack_ha_import_guard``: True once the guard against the import-cache race of jobs run
as threads is installed in this minion's process (``_utils/openstack_ha_import_guard.py``);
``salt '*ctrl*' grains.get openstack_ha_import_guard`` shows it.

``openstack_ha_job_loaders``: True once the loop's questions and HAProxy changes run on the
minion's loaders instead of rebuilding them per job (``_utils/openstack_ha_job_loaders.py``);
``salt '*ctrl*' openstack_ha.job_loaders`` counts the jobs that did. A minion configured with
``openstack_ha_reuse_loaders: False`` leaves Salt's per-job rebuild as it is.
"""


def import_guard():
    """Install the import-cache guard in the minion's process; returns the grain saying so."""
    return {"openstack_ha_import_guard": __utils__["openstack_ha_import_guard.install"]()}


def job_loaders():
    """Let the loop's own jobs reuse the minion's loaders; returns the grain saying whether they
    do (False when the minion's ``openstack_ha_reuse_loaders`` is False, or on a Salt that lacks
    what it needs)."""
    if __opts__.get("openstack_ha_reuse_loaders", True) is False:
        return {"openstack_ha_job_loaders": False}
    return {"openstack_ha_job_loaders": __utils__["openstack_ha_job_loaders.install"]()}
