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

import time

import salt.utils.beacons

__virtualname__ = "openstack_ha_rabbitmq"

KEYS = ("running", "app_running", "running_nodes", "partitions", "alarms")


def __virtual__():
    return __virtualname__


def validate(config):
    return True, "valid"


def beacon(config):
    conf = salt.utils.beacons.list_to_dict(config)
    now = time.time()
    report = __salt__["openstack_ha_rabbitmq.report"]()
    summary = {k: report.get(k) for k in KEYS}
    memory = __context__.setdefault("openstack_ha_rabbitmq", {"last": None, "heartbeat": 0})
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
