"""
Report this RabbitMQ node's view of its cluster when it changes: running nodes, partitions,
alarms (memory, disk), and whether its own app runs (a paused minority's does not).

Event tag: ``salt/beacon/<minion id>/openstack_ha_rabbitmq/change`` (and ``.../heartbeat``).

Data keys:
    ``kind``: ``change`` or ``heartbeat``;
    ``node``: this node's RabbitMQ name; ``running``: whether it answers at all;
    ``app_running``; ``members``; ``running_nodes``; ``expected``: the site's nodes;
    ``partitions``: {node: [nodes it is partitioned from]}; ``alarms``: list of text;
    ``time``: epoch seconds.

Each call of ``rabbitmqctl`` starts an Erlang VM (about a second of CPU), so the state
configures a 20 s interval. The master's runner raises ``openstack_ha/alert/rabbitmq_*`` and may heal
a partitioned minority (see the runner).

Options (written by the ``openstack_ha.beacons`` state):

.. code-block:: yaml

    beacons:
      openstack_ha_rabbitmq:
        - interval: 20
        - heartbeat: 60
"""

import concurrent.futures
import time

import salt.utils.beacons

__virtualname__ = "openstack_ha_rabbitmq"

KEYS = ("running", "app_running", "running_nodes", "partitions", "alarms")


def __virtual__():
    return __virtualname__


def validate(config):
    return True, "valid"


def beacon(config):
    """One tick: never waits for rabbitmqctl. A beacon runs inside the minion's main loop,
    where a 2-3 s CLI call would stall every job the master sends meanwhile (the remediation
    loop's verification among them); the report runs in a worker thread and the tick looks at
    the last one that finished."""
    conf = salt.utils.beacons.list_to_dict(config)
    now = time.time()
    memory = __context__.setdefault("openstack_ha_rabbitmq", {"last": None, "heartbeat": 0, "future": None,
                                                              "pool": concurrent.futures.ThreadPoolExecutor(max_workers=1)})
    future = memory["future"]
    if future is None:
        memory["future"] = memory["pool"].submit(__salt__["openstack_ha_rabbitmq.report"])
        return []
    if not future.done():
        return []
    memory["future"] = memory["pool"].submit(__salt__["openstack_ha_rabbitmq.report"])
    try:
        report = future.result()
    except Exception as exc:  # noqa: BLE001 - a failed report is a node that does not answer
        report = {"running": False, "app_running": False, "reason": str(exc)}
    summary = {k: report.get(k) for k in KEYS}
    data = {k: report.get(k) for k in ("node", "running", "app_running", "members", "running_nodes", "expected", "partitions", "alarms")}
    data["time"] = now
    events = []
    if memory["last"] is not None and summary != memory["last"]:
        events.append(dict(data, tag="change", kind="change"))
    memory["last"] = summary
    if now - memory["heartbeat"] >= float(conf.get("heartbeat", 60)):
        memory["heartbeat"] = now
        events.append(dict(data, tag="heartbeat", kind="heartbeat"))
    return events
