"""
Report this RabbitMQ node's view of its cluster when it changes: running nodes, partitions,
alarms (memory, disk), and whether its own app runs (a paused minority's does not).

Event tag: ``salt/beacon/<minion id>/openstack_ha_rabbitmq/change`` (and ``.../heartbeat``).

Data keys:
    ``kind``: ``change`` or ``heartbeat``;
    ``node``: this node's RabbitMQ name; ``running``: whether its Erlang VM runs at all;
    ``app_running``; ``members``; ``running_nodes``; ``expected``: the site's nodes;
    ``partitions``: {node: [nodes it is partitioned from]}; ``alarms``: list of text;
    ``source``: ``api``, ``metrics`` or absent (``rabbitmqctl``); ``time``: epoch seconds.

Three paths:

- every tick (``api`` set: the ``rabbitmq_management`` plugin is on), the node's own
  management API on 127.0.0.1 (milliseconds): everything ``rabbitmqctl`` tells, partitions
  included, so a partition left standing is reported within about a second; when it cannot
  tell (the app stopped or paused: its plugins stop with it), the next path;
- every tick (``metrics`` set: the ``rabbitmq_prometheus`` plugin is on), the node's own
  ``/metrics`` endpoint (milliseconds, bounded by ``timeout``): a node that stops, pauses,
  loses a peer or raises an alarm is reported within about a second;
- in a worker thread, ``rabbitmqctl cluster_status`` (each call starts an Erlang VM: seconds,
  and half a second of CPU): the Mnesia partitions, which the endpoint does not export. With
  ``metrics`` it runs at the next tick whenever a partition can have formed (a peer came or
  went, or its distribution connection was made anew: :func:`_links_remade`), and every
  ``full_interval`` seconds as a backstop (600 by default: its cost, not the detection, sets
  it). Without ``metrics`` it is the only path, every ``full_interval`` (20) seconds.

The master's watch (``openstack_ha_rabbit_watch``) raises ``openstack_ha/alert/rabbitmq_*``,
starts a dead node and may heal a partitioned minority.

Options (written by the ``openstack_ha.beacons`` state):

.. code-block:: yaml

    beacons:
      openstack_ha_rabbitmq:
        - interval: 1
        - full_interval: 600      # 20 without metrics
        - timeout: 0.5
        - heartbeat: 60
        - metrics: {url: "http://10.213.0.11:15692/metrics", node: rabbit@lab-ctrl1,
                    expected: [rabbit@lab-ctrl1, ...], dist: "10.213.0.11:25672"}
        - api: {port: 15672, node: rabbit@lab-ctrl1, expected: [rabbit@lab-ctrl1, ...],
                cookie_file: /var/lib/rabbitmq/.erlang.cookie}   # a path, never the password
"""

import concurrent.futures
import time

import salt.utils.beacons
from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_rabbitmq"

KEYS = ("running", "app_running", "running_nodes", "partitions", "alarms")


def __virtual__():
    return __virtualname__


def validate(config):
    conf = salt.utils.beacons.list_to_dict(config)
    target = conf.get("metrics")
    if target is not None and not (isinstance(target, dict) and {"url", "node", "expected"} <= set(target)):
        return False, "openstack_ha_rabbitmq: metrics needs url, node and expected"
    api = conf.get("api")
    if api is not None and not (isinstance(api, dict) and {"port", "node", "expected"} <= set(api)):
        return False, "openstack_ha_rabbitmq: api needs port, node and expected"
    return True, "valid"


def _full(memory, now, every):
    """The last finished ``rabbitmqctl`` report (None before the first), starting the next one
    in the worker thread when ``every`` seconds have passed. Never waits."""
    future = memory["future"]
    if future is not None and future.done():
        try:
            memory["full"] = future.result()
        except Exception as exc:  # noqa: BLE001 - a failed report is a node that does not answer
            memory["full"] = {"running": False, "app_running": False, "reason": str(exc)}
        memory["future"] = future = None
    if future is None and now - memory["full_time"] >= every:
        memory["full_time"] = now
        memory["future"] = memory["pool"].submit(__salt__["openstack_ha_rabbitmq.report"])
    return memory["full"]


def _links_remade(before, now):
    """True when a peer's distribution connection was made anew between two views' ``links``
    (``before``, ``now``: ``{peer: packets received}``): its count went down. A Mnesia
    partition forms only when two nodes meet again after losing each other; a loss shorter
    than a tick leaves the peer connected in both views, and only this count tells it."""
    return any(peer in before and count < before[peer] for peer, count in (now or {}).items())


def beacon(config):
    """One tick. A beacon runs inside the minion's main loop, where a 2-3 s CLI call would
    stall every job the master sends meanwhile (the remediation loop's verification among
    them): ``rabbitmqctl`` runs in a worker thread and the tick uses the last report that
    finished; the endpoint scrape is bounded by ``timeout``."""
    conf = salt.utils.beacons.list_to_dict(config)
    now = time.time()
    memory = __context__.setdefault("openstack_ha_rabbitmq", {"last": None, "heartbeat": 0, "future": None, "full": None,
                                                              "full_time": 0,
                                                              "pool": concurrent.futures.ThreadPoolExecutor(max_workers=1)})
    full = _full(memory, now, float(conf.get("full_interval", 20)))
    target, api = conf.get("metrics"), conf.get("api")
    report = None
    if api:
        where = {"cookie_file": api["cookie_file"]} if api.get("cookie_file") else {}  # else the module's default
        report = __salt__["openstack_ha_rabbitmq.api_view"](api["port"], api["node"], api["expected"],
                                                           timeout=float(conf.get("timeout", 0.5)), **where)
    if report is None and target:
        try:
            report = __salt__["openstack_ha_rabbitmq.metrics_view"](target["url"], target["node"], target["expected"],
                                                                   target.get("dist"), timeout=float(conf.get("timeout", 0.5)))
        except CommandExecutionError:
            report = None  # too busy to answer this tick: the last rabbitmqctl report stands in
    if report is not None:
        if full and report["app_running"] and report.get("source") == "metrics":
            report["partitions"] = full.get("partitions") or {}
            report["members"] = full.get("members")
    elif full is None:
        return []
    else:
        report = full
    summary = {k: report.get(k) for k in KEYS}
    links, memory["links"] = memory.get("links") or {}, report.get("links") or {}
    if (target and report.get("source") == "metrics" and memory["last"] is not None
            and (summary["running_nodes"] != memory["last"]["running_nodes"] or _links_remade(links, memory["links"]))):
        # Peers came or went, or met again within a tick: a partition forms only then. Ask
        # rabbitmqctl at the next tick (full_interval is only the backstop).
        memory["full_time"] = 0
    data = {k: report.get(k) for k in ("node", "running", "app_running", "members", "running_nodes", "expected", "partitions",
                                       "alarms", "source")}
    data["time"] = now
    events = []
    if memory["last"] is not None and summary != memory["last"]:
        events.append(dict(data, tag="change", kind="change"))
    memory["last"] = summary
    if now - memory["heartbeat"] >= float(conf.get("heartbeat", 60)):
        memory["heartbeat"] = now
        events.append(dict(data, tag="heartbeat", kind="heartbeat"))
    return events
