"""The RabbitMQ beacon's two paths (``_beacons/openstack_ha_rabbitmq.py``): the metrics view
every tick, ``rabbitmqctl`` in a worker thread now and then. Its I/O is replaced here by
scripted answers; the real endpoint and CLI run in the lab (test_rabbitmq.py)."""

import time

from salt.exceptions import CommandExecutionError

from tests.conftest import load_module

beacon = load_module("_beacons/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_beacon")

NODES = ["rabbit@c1", "rabbit@c2", "rabbit@c3"]
TARGET = {"url": "http://c1:15692/metrics", "node": "rabbit@c1", "expected": NODES, "dist": "c1:25672"}
CONFIG = [{"interval": 1}, {"full_interval": 120}, {"timeout": 0.5}, {"heartbeat": 60}, {"metrics": TARGET}]


class Node:
    """Scripted answers: ``view`` for the metrics endpoint (an exception to raise instead),
    ``full`` for rabbitmqctl; counts the rabbitmqctl calls."""

    def __init__(self):
        self.view = {"node": "rabbit@c1", "running": True, "app_running": True, "members": None, "running_nodes": NODES,
                     "partitions": {}, "alarms": [], "expected": NODES, "source": "metrics"}
        self.full = {"node": "rabbit@c1", "running": True, "app_running": True, "members": NODES, "running_nodes": NODES,
                     "partitions": {}, "alarms": [], "expected": NODES}
        self.full_calls = 0

    def metrics_view(self, url, node, expected, dist, timeout):
        if isinstance(self.view, Exception):
            raise self.view
        return dict(self.view)

    def report(self):
        self.full_calls += 1
        return dict(self.full)


def ticking(node):
    beacon.__context__ = {}
    beacon.__salt__ = {"openstack_ha_rabbitmq.metrics_view": node.metrics_view, "openstack_ha_rabbitmq.report": node.report}

    def tick():
        return beacon.beacon(CONFIG)

    return tick


def settle():
    """Wait (bounded) for the worker thread's rabbitmqctl report to finish."""
    memory = beacon.__context__["openstack_ha_rabbitmq"]
    deadline = time.monotonic() + 5
    while memory["future"] is not None and not memory["future"].done() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_first_tick_sends_the_heartbeat_and_a_stopped_app_is_news_at_the_next():
    node = Node()
    tick = ticking(node)
    assert [e["tag"] for e in tick()] == ["heartbeat"]
    node.view = dict(node.view, app_running=False, running_nodes=[])
    (event,) = tick()
    assert event["tag"] == "change" and event["app_running"] is False and event["source"] == "metrics"
    assert tick() == []  # no news twice


def test_rabbitmqctl_runs_rarely_and_its_partitions_ride_on_the_metrics_view():
    node = Node()
    tick = ticking(node)
    tick()
    settle()
    for _ in range(5):
        tick()
    assert node.full_calls == 1  # not every tick: every full_interval
    node.full = dict(node.full, partitions={"rabbit@c1": ["rabbit@c3"]})
    beacon.__context__["openstack_ha_rabbitmq"]["full_time"] = 0  # full_interval elapsed
    tick()
    settle()
    (event,) = tick()
    assert event["tag"] == "change" and event["partitions"] == {"rabbit@c1": ["rabbit@c3"]}


def test_peers_coming_or_going_ask_rabbitmqctl_at_once():
    node = Node()
    tick = ticking(node)
    tick()
    settle()
    calls = node.full_calls
    node.view = dict(node.view, running_nodes=["rabbit@c1", "rabbit@c2"])
    tick()  # the change, and the next full report scheduled
    tick()
    settle()
    assert node.full_calls == calls + 1


def test_a_peer_met_again_within_a_tick_asks_rabbitmqctl_at_once():
    # The same peers in both views, but c2's connection was made anew (its packet count fell):
    # a partition may have formed, which only rabbitmqctl tells.
    node = Node()
    node.view = dict(node.view, links={"rabbit@c2": 5000, "rabbit@c3": 7000})
    tick = ticking(node)
    tick()
    settle()
    calls = node.full_calls
    node.view = dict(node.view, links={"rabbit@c2": 5100, "rabbit@c3": 7050})  # the same connections
    tick()
    tick()
    settle()
    assert node.full_calls == calls
    node.view = dict(node.view, links={"rabbit@c2": 4, "rabbit@c3": 7100})
    assert tick() == []  # no news for the master: the same peers
    tick()
    settle()
    assert node.full_calls == calls + 1


def test_an_endpoint_too_busy_to_answer_is_not_a_node_down():
    node = Node()
    tick = ticking(node)
    tick()
    settle()
    node.view = CommandExecutionError("http://c1:15692/metrics did not answer within 0.5 s")
    events = tick()
    # The last rabbitmqctl report stands in: still running, so no change is reported.
    assert events == []


API = {"port": 15672, "node": "rabbit@c1", "expected": NODES, "cookie_file": "/nonexistent/cookie"}


def api_ticking(node, api_answers):
    """``tick`` with the management API path on: ``api_answers`` (a list) gives each tick's
    ``api_view`` answer in turn (None: the API could not tell); the metrics and rabbitmqctl
    paths as in :func:`ticking`."""
    ticking(node)  # sets the context and the scripted metrics and rabbitmqctl
    calls = []

    def api_view(port, name, expected, cookie_file, timeout):
        calls.append((port, name, cookie_file))
        return api_answers.pop(0)
    beacon.__salt__["openstack_ha_rabbitmq.api_view"] = api_view
    config = CONFIG + [{"api": API}]
    return (lambda: beacon.beacon(config)), calls


def api_view_of(**changes):
    view = {"node": "rabbit@c1", "running": True, "app_running": True, "members": NODES, "running_nodes": NODES,
            "partitions": {}, "alarms": [], "expected": NODES, "source": "api", "links": {}}
    view.update(changes)
    return view


def test_the_management_api_tells_a_partition_at_the_next_tick_without_rabbitmqctl():
    node = Node()
    answers = [api_view_of(), api_view_of(partitions={"rabbit@c1": ["rabbit@c3"]}, running_nodes=NODES[:2])]
    tick, calls = api_ticking(node, answers)
    assert [e["tag"] for e in tick()] == ["heartbeat"]
    settle()
    (event,) = tick()
    assert event["tag"] == "change" and event["partitions"] == {"rabbit@c1": ["rabbit@c3"]} and event["source"] == "api"
    settle()
    # Only the backstop's first rabbitmqctl report: the peers that went did not ask for another.
    assert node.full_calls == 1
    assert calls == [(15672, "rabbit@c1", "/nonexistent/cookie")] * 2


def test_rabbitmqctls_partitions_never_overwrite_the_apis_own():
    node = Node()
    node.full = dict(node.full, partitions={"rabbit@c1": ["rabbit@c2"]})  # an old rabbitmqctl report
    tick, _ = api_ticking(node, [api_view_of(), api_view_of()])
    tick()
    settle()
    assert tick() == []  # the API's view (no partition) stands: no change


def test_when_the_api_cannot_tell_the_metrics_endpoint_does():
    node = Node()
    node.view = dict(node.view, app_running=False, running_nodes=[])  # paused: its plugins stop with its app
    tick, calls = api_ticking(node, [api_view_of(), None])
    tick()
    (event,) = tick()
    assert event["app_running"] is False and event["source"] == "metrics" and len(calls) == 2
