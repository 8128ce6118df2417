"""Helpers for the Galera tests: SQL on a node or through the VIP, node status, kill helpers."""

import os
import signal
import subprocess

from tests.integration import labtools
from tests.integration.labtools import CTRLS, VIPS, wait_until

DB_USER, DB_PASSWORD, DB = "keystone", "lab-keystone-db-secret", "keystone"  # pillar/openstack_ha/sites/lab.sls


def node_sql(ctrl, query):
    """Run ``query`` on one node as root over its own socket; return rows (lists of strings)."""
    out = labtools.labctl.ctrl_run(ctrl, ["mariadb", "-N", "-B", "-e", query]).stdout
    return [line.split("\t") for line in out.splitlines()]


def vip_sql(query, timeout=3):
    """Run ``query`` through HAProxy's Galera listener on the internal VIP, from the host.
    Returns (ok, output)."""
    try:
        proc = subprocess.run(["mariadb", "--no-defaults", "-h", VIPS["internal"], "-u", DB_USER, "-p" + DB_PASSWORD,
                               "--connect-timeout=%d" % timeout, "-N", "-B", DB, "-e", query],
                              capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return False, "timeout"
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def status(ctrl):
    """The node's health-daemon status (None when it does not answer)."""
    return labtools.salt(ctrl, "openstack_ha_galera.local_status")[1].get(ctrl)


def statuses():
    # Asked from inside each controller: the health daemon answers only the controllers.
    return {c: labtools.http_json(labtools.ADDRESS[c], 9200, "/status", inside=c) for c in CTRLS}


def all_synced(size=3):
    found = statuses()
    return all(s and s.get("state_code") == 4 and s.get("cluster_status") == "Primary" and s.get("cluster_size") == size
               for s in found.values()) and found


def mariadbd_pid(ctrl):
    return labtools.pidfile_pid(ctrl, "/run/mysqld/mysqld-%s.pid" % ctrl)


def kill_node(ctrl, with_safe=False):
    """SIGKILL the node's mariadbd (and first its mysqld_safe, so nothing restarts it)."""
    pid = mariadbd_pid(ctrl)
    assert pid, "no mariadbd on %s" % ctrl
    if with_safe:
        parent = labtools.labctl.parent_of(pid)
        if parent and "mysqld_safe" in open("/proc/%d/cmdline" % parent).read():
            os.kill(parent, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not labtools.labctl.alive(pid), 10, "mariadbd %d to die" % pid)
    return pid


def table_digest(ctrl, table="oha_rows"):
    """(row count, checksum) of the test table on one node."""
    rows = node_sql(ctrl, "SELECT COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT(id, ':', note))), 0) FROM keystone.%s" % table)
    return tuple(rows[0])
