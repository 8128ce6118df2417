"""
A RabbitMQ node's view of its cluster read from its own ``rabbitmq_prometheus`` endpoint
(``/metrics``) instead of ``rabbitmqctl``: a scrape takes milliseconds, a ``rabbitmqctl`` call
starts an Erlang VM (seconds of wall time, about half a second of CPU).

What the endpoint tells, and what it does not:

- it answers only while the node's ``rabbit`` application runs (a stopped or paused node's
  plugins stop with it): ``app_running``;
- ``erlang_vm_dist_node_state{peer=...} 3`` for every peer the node's Erlang VM is connected
  to: the peers it sees (a peer whose app is paused stays connected: its own view says so);
- ``rabbitmq_alarms_*`` gauges: this node's resource alarms;
- nothing about Mnesia partitions: a partition left standing after the network healed shows
  only in ``rabbitmqctl cluster_status`` or the management API's ``/api/nodes``
  (:func:`from_api`: milliseconds too, with ``rabbitmq:management``).

Pure functions: the module and the beacon do the I/O.
"""

import re

ALARMS = {
    "rabbitmq_alarms_memory_used_watermark": "memory",
    "rabbitmq_alarms_free_disk_space_watermark": "disk",
    "rabbitmq_alarms_file_descriptor_limit": "file descriptors",
}
CONNECTED = 3  # erlang_vm_dist_node_state: 1 pending, 2 up_pending, 3 up
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text, names):
    """``[(name, {label: value}, float)]`` for the samples of the metric families in
    ``names`` in a Prometheus text exposition; other lines and malformed values are skipped."""
    found, prefixes = [], tuple(names)
    for line in text.splitlines():
        if not line.startswith(prefixes):  # also skips comments: most of a scrape is other metrics
            continue
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in names:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        found.append((match.group(1), dict(_LABEL.findall(match.group(2) or "")), value))
    return found


def from_metrics(text, node, expected, vm_running=True):
    """
    The view ``openstack_ha_rabbitmq.report`` gives, from the ``/metrics`` text of ``node``
    (``rabbit@host``; ``text`` None: the endpoint did not answer). ``expected``: the site's
    node names. ``vm_running``: whether the node's Erlang VM runs at all (its distribution
    port accepts connections); a node whose VM runs but whose endpoint does not answer is
    stopped or paused, not dead.

    Returns ``{node, running, app_running, members, running_nodes, partitions, alarms,
    expected, source, links}`` with ``source`` ``"metrics"``; ``members`` is None (not
    exported), ``partitions`` is always empty (see the module's note). ``links``: ``{peer:
    packets received}`` on each RabbitMQ peer's distribution connection (a count that starts
    again from zero when the connection is made anew: the RabbitMQ beacon's ``_links_remade``).
    """
    view = {"node": node, "running": bool(vm_running or text is not None), "app_running": text is not None,
            "members": None, "running_nodes": [], "partitions": {}, "alarms": [],
            "expected": sorted(expected), "source": "metrics", "links": {}}
    if text is None:
        return view
    peers, alarms = {node}, []
    for name, labels, value in samples(text, set(ALARMS) | {"erlang_vm_dist_node_state", "erlang_vm_dist_recv_cnt"}):
        peer = labels.get("peer", "")
        if name == "erlang_vm_dist_node_state":
            # CLI tools (rabbitmqctl-123@host) connect too: only RabbitMQ nodes count.
            if value == CONNECTED and peer.startswith("rabbit@"):
                peers.add(peer)
        elif name == "erlang_vm_dist_recv_cnt":
            if peer.startswith("rabbit@"):
                view["links"][peer] = value
        elif value:
            alarms.append("{} on {}".format(ALARMS[name], node))
    view["running_nodes"] = sorted(peers)
    view["alarms"] = sorted(alarms)
    return view


def from_api(nodes, node, expected):
    """
    The view ``openstack_ha_rabbitmq.report`` gives, from ``node``'s own management API
    (``nodes``: the ``/api/nodes`` answer, a list of ``{name, running, partitions, mem_alarm,
    disk_free_alarm}``). Members and running nodes are Mnesia's, as ``rabbitmqctl
    cluster_status`` tells them (a paused peer is not running, unlike in the metrics view);
    partitions and alarms are this node's own (it speaks for itself only). ``source``:
    ``"api"``: partitions included, nothing left for ``rabbitmqctl`` to tell.

    Returns None when the answer is malformed or does not list ``node`` (not this cluster's
    API, or a node that left it): the caller asks elsewhere.
    """
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("name"), str) for n in nodes):
        return None
    mine = [n for n in nodes if n["name"] == node]
    if not mine:
        return None
    mine = mine[0]
    partitions = mine.get("partitions") or []
    if not isinstance(partitions, list) or not all(isinstance(p, str) for p in partitions):
        return None
    alarms = [what + " on " + node for key, what in (("mem_alarm", "memory"), ("disk_free_alarm", "disk")) if mine.get(key) is True]
    return {"node": node, "running": True, "app_running": mine.get("running") is True,
            "members": sorted(n["name"] for n in nodes), "running_nodes": sorted(n["name"] for n in nodes if n.get("running") is True),
            "partitions": {node: sorted(partitions)} if partitions else {}, "alarms": alarms,
            "expected": sorted(expected), "source": "api", "links": {}}


def split_suspected(views):
    """True when an answering node misses a peer whose own view says its app runs: the two do
    not see each other (a network split, or a partition forming). ``views``: ``{controller:
    view}``. Only ``rabbitmqctl`` can tell a partition; the caller asks it then."""
    running = [v for v in views.values() if v.get("app_running") and isinstance(v.get("node"), str)]
    up = {v["node"] for v in running}
    return any(not up <= set(v.get("running_nodes") or []) for v in running)


def mnesia_split(views):
    """
    ``{node: [peers]}``: the running nodes that Mnesia has split apart, from management-API
    views (``views``: ``{controller: view}``; other views are ignored). Two nodes whose apps
    both run, each by its own word, and neither of which lists the other among its running
    nodes do not form one cluster any more: a partition, seen the moment Mnesia drops the
    peer, where the nodes' own partition lists (what ``rabbitmqctl`` and the API's
    ``partitions`` tell) come 5-10 s later, with the management statistics. Mutual only: a
    node joining is listed by one side before the other.
    """
    api = {v["node"]: set(v.get("running_nodes") or []) for v in views.values()
           if v.get("source") == "api" and v.get("app_running") and isinstance(v.get("node"), str)}
    split = {}
    for node, seen in api.items():
        apart = sorted(peer for peer, theirs in api.items() if peer != node and peer not in seen and node not in theirs)
        if apart:
            split[node] = apart
    return split


def speaks_for_itself(controller, view):
    """True when ``view`` (a controller's answer) is about that controller's own RabbitMQ node
    (``rabbit@<short name>``): a controller can only vouch for its own node; one that names
    another node (confused, or hostile and trying to get a healthy node called down) is
    not believed."""
    return view.get("node") == "rabbit@" + str(controller).split(".")[0]
