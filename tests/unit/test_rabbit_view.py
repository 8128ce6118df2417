"""RabbitMQ read from its own metrics endpoint (``_utils/openstack_ha_rabbit_view.py``) and the
node-down rule that takes a node's own word (``decide.rabbit_problems``)."""

from tests.conftest import load_module

view_lib = load_module("_utils/openstack_ha_rabbit_view.py", "openstack_ha_rabbit_view")
decide = load_module("_utils/openstack_ha_decide.py", "openstack_ha_decide")

NODES = ["rabbit@c1", "rabbit@c2", "rabbit@c3"]

# Lines as rabbitmq_prometheus 3.10 writes them (trimmed: a real scrape has ~1,500 lines).
SCRAPE = """# TYPE rabbitmq_alarms_memory_used_watermark gauge
# HELP rabbitmq_alarms_memory_used_watermark is 1 if VM memory watermark alarm is in effect
rabbitmq_alarms_memory_used_watermark {memory}
rabbitmq_alarms_free_disk_space_watermark 0
rabbitmq_alarms_file_descriptor_limit 0
rabbitmq_identity_info{{rabbitmq_node="{me}",rabbitmq_cluster="rabbit@c1"}} 1
{peers}erlang_vm_dist_node_state{{peer="rabbitmqcli-512-{me}"}} 3
erlang_vm_dist_recv_cnt{{peer="rabbitmqcli-512-{me}"}} 12
erlang_vm_dist_recv_cnt{{peer="rabbit@c2"}} 3951
erlang_vm_dist_node_queue_size_bytes{{peer="rabbit@c2"}} 0
"""


def scrape(memory=0, me="rabbit@c1", lost=()):
    """``me``'s scrape: connected to every other node, ``lost`` ones pending (state 1)."""
    peers = "".join('erlang_vm_dist_node_state{{peer="{}"}} {}\n'.format(n, 1 if n in lost else 3) for n in NODES if n != me)
    return SCRAPE.format(memory=memory, me=me, peers=peers)


def test_a_healthy_node_sees_its_connected_peers_and_no_alarm():
    view = view_lib.from_metrics(scrape(), "rabbit@c1", NODES)
    assert view["running"] and view["app_running"]
    assert view["running_nodes"] == NODES  # the CLI tool's connection is not a node
    assert view["alarms"] == [] and view["partitions"] == {} and view["source"] == "metrics"
    assert view["links"] == {"rabbit@c2": 3951}  # packets on each RabbitMQ peer's connection, not the CLI's
    assert decide.rabbit_healthy(view, NODES)


def test_a_peer_not_connected_and_an_alarm_show():
    view = view_lib.from_metrics(scrape(memory=1, lost=["rabbit@c3"]), "rabbit@c1", NODES)
    assert view["running_nodes"] == ["rabbit@c1", "rabbit@c2"]
    assert view["alarms"] == ["memory on rabbit@c1"]
    assert not decide.rabbit_healthy(view, NODES)


def test_an_endpoint_that_does_not_answer_is_a_stopped_app_or_a_dead_node():
    paused = view_lib.from_metrics(None, "rabbit@c3", NODES, vm_running=True)
    dead = view_lib.from_metrics(None, "rabbit@c3", NODES, vm_running=False)
    assert paused["running"] and not paused["app_running"] and paused["running_nodes"] == []
    assert not dead["running"] and not dead["app_running"]


def test_a_paused_node_still_connected_to_its_peers_is_down_by_its_own_word():
    views = {"c1": view_lib.from_metrics(scrape(), "rabbit@c1", NODES),
             "c2": view_lib.from_metrics(scrape(me="rabbit@c2"), "rabbit@c2", NODES),
             "c3": view_lib.from_metrics(None, "rabbit@c3", NODES, vm_running=True)}
    kinds = {p[0]: p[2] for p in decide.rabbit_problems(views, NODES)}
    assert kinds == {"rabbitmq_node_down": ["rabbit@c3"]}
    # Its VM runs: not a node to start again (it resumes by itself when it sees a majority).
    assert decide.rabbit_remedy(["c1", "c2", "c3"], 2, views, {}, 100.0, 30) is None
    views["c3"] = view_lib.from_metrics(None, "rabbit@c3", NODES, vm_running=False)
    assert decide.rabbit_remedy(["c1", "c2", "c3"], 2, views, {}, 100.0, 30) == ("restart", "c3")


def test_a_rabbitmqctl_call_that_timed_out_is_not_a_node_down_when_peers_see_it():
    views = {"c1": {"node": "rabbit@c1", "running": True, "app_running": True, "running_nodes": NODES},
             "c2": {"node": "rabbit@c2", "running": True, "app_running": True, "running_nodes": NODES},
             "c3": {"node": "rabbit@c3", "running": False, "app_running": False, "reason": "timed out"}}
    assert decide.rabbit_problems(views, NODES) == []


def test_a_split_between_running_nodes_is_suspected_only_when_both_sides_run():
    views = {"c1": view_lib.from_metrics(scrape(lost=["rabbit@c3"]), "rabbit@c1", NODES),
             "c2": view_lib.from_metrics(scrape(me="rabbit@c2"), "rabbit@c2", NODES),
             "c3": view_lib.from_metrics(scrape(me="rabbit@c3"), "rabbit@c3", NODES)}
    assert view_lib.split_suspected(views)  # c1 misses c3, whose own endpoint answers
    views["c3"] = view_lib.from_metrics(None, "rabbit@c3", NODES, vm_running=False)
    assert not view_lib.split_suspected(views)  # c3 is down, not split off
    views["c3"] = {"node": ["not", "a", "name"], "app_running": True}  # a hostile answer breaks nothing
    assert not view_lib.split_suspected(views)
    assert not decide.valid_rabbit_view(views["c3"])


def test_malformed_lines_are_skipped():
    text = "erlang_vm_dist_node_state{peer=\"rabbit@c2\"} three\nrabbitmq_alarms_memory_used_watermark 1\n"
    view = view_lib.from_metrics(text, "rabbit@c1", NODES)
    assert view["running_nodes"] == ["rabbit@c1"] and view["alarms"] == ["memory on rabbit@c1"]


def test_a_controller_vouches_only_for_its_own_node():
    own = view_lib.from_metrics(None, "rabbit@lab-ctrl3", NODES, vm_running=False)
    assert view_lib.speaks_for_itself("lab-ctrl3", own)
    assert view_lib.speaks_for_itself("lab-ctrl3.example.org", own)  # node names use the short name
    assert not view_lib.speaks_for_itself("lab-ctrl2", own)  # lab-ctrl2 calling lab-ctrl3 down
    assert not view_lib.speaks_for_itself("lab-ctrl2", {"running": True})


API_NODES = [{"name": "rabbit@c1", "running": True, "partitions": [], "mem_alarm": False, "disk_free_alarm": False},
             {"name": "rabbit@c2", "running": True, "partitions": ["rabbit@c1"]},
             {"name": "rabbit@c3", "running": False}]


def test_the_management_api_view_is_mnesias_with_this_nodes_partitions_and_alarms():
    view = view_lib.from_api(API_NODES, "rabbit@c1", NODES)
    assert view["members"] == NODES and view["running_nodes"] == ["rabbit@c1", "rabbit@c2"]
    assert view["partitions"] == {} and view["alarms"] == [] and view["source"] == "api" and view["app_running"] is True
    # A node speaks for itself: c2's partitions are c2's to report.
    mine = view_lib.from_api(API_NODES, "rabbit@c2", NODES)
    assert mine["partitions"] == {"rabbit@c2": ["rabbit@c1"]}
    alarmed = [dict(API_NODES[0], mem_alarm=True, disk_free_alarm=True)] + API_NODES[1:]
    assert view_lib.from_api(alarmed, "rabbit@c1", NODES)["alarms"] == ["memory on rabbit@c1", "disk on rabbit@c1"]


def test_a_management_answer_that_is_malformed_or_does_not_list_the_node_tells_nothing():
    assert view_lib.from_api(API_NODES, "rabbit@c9", NODES) is None
    assert view_lib.from_api({"error": "not_authorised"}, "rabbit@c1", NODES) is None
    assert view_lib.from_api([{"name": "rabbit@c1", "partitions": "rabbit@c2"}], "rabbit@c1", NODES) is None
    assert view_lib.from_api([{"running": True}], "rabbit@c1", NODES) is None


def test_the_monitor_accounts_password_is_the_cookies_and_its_name_is_reserved():
    module = load_module("_modules/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_module")
    model = load_module("_utils/openstack_ha_model.py", "openstack_ha_model")
    assert module.MONITOR_USER == model.RABBIT_MONITOR_USER
    password = module._monitor_password("CookieOfTheSite000000001")
    # The same from the pillar's cookie and from the cookie file (its newline), another cookie another one.
    assert password == module._monitor_password("CookieOfTheSite000000001\n") and len(password) == 64
    assert password != module._monitor_password("CookieOfTheSite000000002")
    assert "CookieOfTheSite" not in password


def api_view(node, running, app_running=True):
    return {"node": node, "running": True, "app_running": app_running, "running_nodes": running, "partitions": {},
            "alarms": [], "members": NODES, "expected": NODES, "source": "api"}


def test_mnesia_split_is_two_running_nodes_that_drop_each_other():
    majority = ["rabbit@c1", "rabbit@c2"]
    views = {"c1": api_view("rabbit@c1", majority), "c2": api_view("rabbit@c2", majority), "c3": api_view("rabbit@c3", ["rabbit@c3"])}
    assert view_lib.mnesia_split(views) == {"rabbit@c1": ["rabbit@c3"], "rabbit@c2": ["rabbit@c3"], "rabbit@c3": ["rabbit@c1", "rabbit@c2"]}
    problems = decide.rabbit_problems({c: dict(v, split=view_lib.mnesia_split(views).get(v["node"], [])) for c, v in views.items()}, NODES)
    assert problems[0][0] == "rabbitmq_partition" and problems[0][2] == ["c1", "c2", "c3"]
    # A paused or stopped node is down, not split; a node joining is listed by one side first.
    paused = dict(views, c3=api_view("rabbit@c3", [], app_running=False))
    assert view_lib.mnesia_split(paused) == {}
    joining = dict(views, c3=api_view("rabbit@c3", NODES))
    assert view_lib.mnesia_split(joining) == {}
    # Only management-API views count: a metrics view's peers are connections, not Mnesia's.
    assert view_lib.mnesia_split(dict(views, c3=dict(views["c3"], source="metrics"))) == {}
    healthy = {c: api_view("rabbit@" + c, NODES) for c in ("c1", "c2", "c3")}
    assert view_lib.mnesia_split(healthy) == {}


def test_a_split_is_healed_only_once_the_nodes_are_connected_again():
    majority = ["rabbit@c1", "rabbit@c2"]
    views = {"c1": api_view("rabbit@c1", majority), "c2": api_view("rabbit@c2", majority), "c3": api_view("rabbit@c3", ["rabbit@c3"])}
    split = view_lib.mnesia_split(views)
    for view in views.values():
        view["split"] = split.get(view["node"], [])
    # Still cut off (its VM sees no peer): an alert, no restart.
    views["c3"]["connected"] = ["rabbit@c3"]
    assert decide.rabbit_remedy(["c1", "c2", "c3"], 2, views, {}, 100.0, 30) is None
    # Connected again and still split: the minority's app is restarted, the majority's never.
    views["c3"]["connected"] = NODES
    for c in ("c1", "c2"):
        views[c]["connected"] = NODES
    assert decide.rabbit_remedy(["c1", "c2", "c3"], 2, views, {}, 100.0, 30) == ("heal", "c3")
    assert decide.valid_rabbit_view(views["c3"]) and not decide.valid_rabbit_view(dict(views["c3"], connected="rabbit@c1"))


def test_the_beacons_targets_follow_the_pillar_and_carry_no_secret():
    module = load_module("_modules/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_targets")
    module.__utils__ = {"openstack_ha_model.cluster_nodes": lambda model, kind: [{"id": "c1"}, {"id": "c2"}]}
    model = {"rabbitmq": {"port": 5672, "cookie": "CookieOfTheSite000000001", "prometheus": {"enabled": True, "port": 15692},
                          "management": {"enabled": True, "port": 15672}},
             "local": {"id": "c1", "host": "10.0.0.1"}, "paths": {"rabbitmq_cookie": "/var/lib/rabbitmq/.erlang.cookie"}}
    assert module.api_target(model) == {"port": 15672, "node": "rabbit@c1", "expected": ["rabbit@c1", "rabbit@c2"],
                                        "cookie_file": "/var/lib/rabbitmq/.erlang.cookie"}
    assert module.metrics_target(model)["dist"] == "10.0.0.1:25672"
    assert "Cookie" not in repr(module.api_target(model)) + repr(module.metrics_target(model))
    model["rabbitmq"]["management"]["enabled"] = False
    assert module.api_target(model) is None and module.metrics_target(model) is not None
    model["local"] = {"id": "c9", "host": "10.0.0.9"}  # not a RabbitMQ node of the site
    assert module.metrics_target(model) is None


def test_the_management_api_read_tells_nothing_rather_than_fail(tmp_path):
    # A real HTTP server on loopback answering each way a broken or hostile API might.
    import http.server
    import threading

    module = load_module("_modules/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_api")
    module.__utils__ = {"openstack_ha_rabbit_view.from_api": view_lib.from_api,
                        "openstack_ha_rabbit_view.from_metrics": view_lib.from_metrics}
    cookie = tmp_path / "cookie"
    cookie.write_text("CookieOfTheSite000000001\n")
    answers = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            kind = answers.pop(0)
            if kind == "garbage":
                self.wfile.write(b"not http at all\r\n\r\n")
                return
            self.send_response({"ok": 200, "refused": 401, "json": 200}[kind])
            self.end_headers()
            self.wfile.write(b'[{"name": "rabbit@c1", "running": true, "partitions": []}]' if kind == "ok" else b"{not json")

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        answers.extend(["ok", "refused", "json", "garbage"])
        assert module.api_view(port, "rabbit@c1", ["rabbit@c1"], str(cookie), timeout=2)["source"] == "api"
        assert [module.api_view(port, "rabbit@c1", ["rabbit@c1"], str(cookie), timeout=2) for _ in range(3)] == [None] * 3
        assert module.api_view(port, "rabbit@c1", ["rabbit@c1"], str(tmp_path / "no-cookie"), timeout=2) is None
        # The metrics endpoint answering with something that is not HTTP: the app told nothing.
        answers.append("garbage")
        url = "http://127.0.0.1:%d/metrics" % port
        assert module.metrics_view(url, "rabbit@c1", ["rabbit@c1"], timeout=2)["app_running"] is False
    finally:
        server.shutdown()
        server.server_close()


def test_a_nodes_own_word_on_split_is_never_read(tmp_path):
    # c3 (hostile) answers with a metrics view that claims Mnesia split it from c1: the master
    # sets `split` itself on every view, whatever path the views came by; no partition alert.
    import contextlib

    watch = load_module("_utils/openstack_ha_rabbit_watch.py", "openstack_ha_rabbit_watch")
    context = load_module("_utils/openstack_ha_context.py", "openstack_ha_context")
    model_lib = load_module("_utils/openstack_ha_model.py", "openstack_ha_model")
    answers = {c: {"node": "rabbit@" + c, "running": True, "app_running": True, "running_nodes": NODES, "partitions": {},
                   "alarms": [], "members": None, "expected": NODES, "source": "metrics"} for c in ("c1", "c2", "c3")}
    answers["c3"]["split"] = ["rabbit@c1"]
    announced = []
    records = {}
    utils = {
        "openstack_ha_decide.rabbit_healthy": decide.rabbit_healthy, "openstack_ha_decide.valid_rabbit_view": decide.valid_rabbit_view,
        "openstack_ha_decide.rabbit_problems": decide.rabbit_problems, "openstack_ha_decide.rabbit_news": decide.rabbit_news,
        "openstack_ha_decide.rabbit_remedy": decide.rabbit_remedy, "openstack_ha_model.majority": model_lib.majority,
        "openstack_ha_model.cluster_nodes": lambda model, kind: [{"id": c} for c in ("c1", "c2", "c3")],
        "openstack_ha_rabbit_view.speaks_for_itself": view_lib.speaks_for_itself,
        "openstack_ha_rabbit_view.split_suspected": view_lib.split_suspected,
        "openstack_ha_rabbit_view.mnesia_split": view_lib.mnesia_split,
        "openstack_ha_publish.ask": lambda ctx, nodes, fun, **kw: {c: dict(v) for c, v in answers.items()},
        "openstack_ha_records.load": lambda ctx, site: records,
        "openstack_ha_records.lock": lambda ctx, site: contextlib.nullcontext(),
        "openstack_ha_records.store": lambda ctx, site, records: None,
        "openstack_ha_records.announce": lambda ctx, records, site, entry, tag: announced.append(tag),
        "openstack_ha_records.fire": lambda ctx, tag, data: None,
    }
    ctx = context.Context({"id": "master"}, utils, {})
    model = {"site": "lab", "rabbitmq": {}, "remediation": {"heartbeat": 15, "cooldown": 10}}
    assert watch.check(ctx, model, "c3", {"kind": "change", "expected": NODES}) == []
    assert announced == []
