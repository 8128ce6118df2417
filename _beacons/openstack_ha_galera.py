"""
Report this Galera node's wsrep state when it changes (Synced, Donor/Desynced, Joining,
Joined, non-Primary, down), from the node's own health daemon.

Event tag: ``salt/beacon/<minion id>/openstack_ha_galera/change`` (and ``.../heartbeat``).

Data keys:
    ``kind``: ``change`` or ``heartbeat``;
    ``state``: ``Synced``, ``Donor/Desynced``, ``Joining``, ``Joined``, ``non-Primary``,
    ``down`` (MariaDB not answering) or ``unknown`` (the health daemon not answering);
    ``previous`` (change only): the state before;
    ``healthy``: whether the node takes writes (Synced, Primary, writable, not in maintenance);
    ``reason``: the health daemon's one-line reason; ``cluster_size``; ``cluster_uuid``;
    ``time``: epoch seconds.

The master's remediation loop answers a change by verifying the node's health through every
controller and draining it from (or restoring it to) the Galera listener on every HAProxy.

Options (written by the ``openstack_ha.beacons`` state):

.. code-block:: yaml

    beacons:
      openstack_ha_galera:
        - interval: 1
        - url: http://10.0.0.11:9200/status
        - timeout: 0.5
        - heartbeat: 15
"""

import json
import time
import urllib.error
import urllib.request

import salt.utils.beacons

__virtualname__ = "openstack_ha_galera"


def __virtual__():
    return __virtualname__


def validate(config):
    conf = salt.utils.beacons.list_to_dict(config)
    if not str(conf.get("url", "")).startswith("http://"):
        return False, "openstack_ha_galera: 'url' must be the node health daemon's http://ADDRESS:PORT/status"
    return True, "valid"


def _label(status):
    if status is None:
        return "unknown"
    if not status.get("running"):
        return "down"
    if status.get("cluster_status") != "Primary":
        return "non-Primary"
    return status.get("state") or "unknown"


def beacon(config):
    conf = salt.utils.beacons.list_to_dict(config)
    now = time.time()
    try:
        with urllib.request.urlopen(conf["url"], timeout=float(conf.get("timeout", 0.5))) as response:
            status = json.loads(response.read().decode())
    except (OSError, ValueError, urllib.error.URLError):
        status = None
    state = _label(status)
    memory = __context__.setdefault("openstack_ha_galera", {"state": None, "healthy": None, "heartbeat": 0})
    report = {"state": state, "healthy": bool(status and status.get("healthy")), "time": now,
              "reason": (status or {}).get("reason", "health daemon not answering"),
              "cluster_size": (status or {}).get("cluster_size"), "cluster_uuid": (status or {}).get("cluster_uuid")}
    events = []
    if memory["state"] is not None and (state != memory["state"] or report["healthy"] != memory["healthy"]):
        events.append(dict(report, tag="change", kind="change", previous=memory["state"]))
    memory["state"], memory["healthy"] = state, report["healthy"]
    if now - memory["heartbeat"] >= float(conf.get("heartbeat", 30)):
        memory["heartbeat"] = now
        events.append(dict(report, tag="heartbeat", kind="heartbeat"))
    return events
