"""RabbitMQ in the lab: a real 3-node cluster formed by the state, losing a node, a partition."""

import json
import os
import signal
import subprocess
import time

import pika
import pytest

from tests.integration import labtools
from tests.integration.labtools import ADDRESS, CTRLS, changed_states, sh, wait_until

USER, PASSWORD, VHOST = "openstack", "lab-rabbit-secret-0001", "/openstack"  # pillar/openstack_ha/sites/lab.sls
QUORUM_Q, MIRRORED_Q, COUNT = "oha-quorum-test", "notifications.oha-test", 1000


def ctl(ctrl, *args):
    """rabbitmqctl on one controller; parsed JSON output."""
    out = labtools.labctl.ctrl_run(ctrl, ["rabbitmqctl", "-q"] + list(args) + ["--formatter", "json"]).stdout
    return json.loads(out) if out.strip() else None


def running_nodes(ctrl):
    try:
        return sorted(ctl(ctrl, "cluster_status").get("running_nodes") or [])
    except Exception:  # noqa: BLE001 - a paused or stopped node does not answer
        return []


ALL = sorted("rabbit@" + c for c in CTRLS)


@pytest.fixture(scope="module")
def cluster(applied):
    for ctrl in CTRLS:
        wait_until(lambda: running_nodes(ctrl) == ALL, 120, "RabbitMQ on %s to see all three nodes" % ctrl, interval=2)
    return ALL


def channel(ctrl):
    params = pika.ConnectionParameters(host=ADDRESS[ctrl], port=5672, virtual_host=VHOST,
                                       credentials=pika.PlainCredentials(USER, PASSWORD), connection_attempts=3, retry_delay=1,
                                       socket_timeout=5, blocked_connection_timeout=30)
    conn = pika.BlockingConnection(params)
    return conn, conn.channel()


def test_one_cluster_with_users_vhosts_and_policies(cluster):
    users = {u["user"] for u in ctl("lab-ctrl2", "list_users")}
    assert "openstack" in users
    policies = {p["name"]: p for p in ctl("lab-ctrl3", "list_policies", "-p", VHOST)}
    definition = policies["notifications-ha"]["definition"]
    assert (json.loads(definition) if isinstance(definition, str) else definition) == {"ha-mode": "all", "ha-sync-mode": "automatic"}
    assert sh("lab-ctrl1", "stat -c '%a %U' /var/lib/rabbitmq/.erlang.cookie").split() == ["400", "rabbitmq"]
    rc, result = labtools.salt("lab-ctrl*", "state.apply", "openstack_ha.rabbitmq")
    assert rc == 0
    assert {c: changed_states(result[c]) for c in CTRLS} == {c: [] for c in CTRLS}
    url = labtools.salt("lab-ctrl1", "openstack_ha_rabbitmq.transport_url")[1]["lab-ctrl1"]
    assert url == "rabbit://" + ",".join("openstack:lab-rabbit-secret-0001@%s:5672" % ADDRESS[c] for c in CTRLS) + "/openstack"
    oslo = labtools.salt("lab-ctrl2", "openstack_ha_rabbitmq.oslo_messaging")[1]["lab-ctrl2"]
    assert oslo == {"transport_url": url, "rabbit_quorum_queue": True, "amqp_durable_queues": True, "rabbit_ha_queues": False}


def beam_pid(ctrl):
    """The node's Erlang VM: from its pid file, else the beam.smp living in this controller's
    network namespace (PIDs are shared between controllers; namespaces are not)."""
    pid = labtools.pidfile_pid(ctrl, "/run/rabbitmq/pid")
    if pid:
        return pid
    netns = os.stat("/run/netns/" + labtools.labctl.netns(ctrl)).st_ino
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = open("/proc/%s/cmdline" % entry, "rb").read().split(b"\0")[0]
                same_ns = os.stat("/proc/%s/ns/net" % entry).st_ino == netns
            except OSError:
                continue
            if exe.endswith(b"beam.smp") and same_ns:
                return int(entry)
    return None


def test_messages_survive_the_loss_of_the_leaders_node(cluster):
    conn, ch = channel("lab-ctrl2")
    try:
        ch.confirm_delivery()
        ch.queue_declare(QUORUM_Q, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_declare(MIRRORED_Q, durable=True)
        ch.queue_purge(QUORUM_Q)
        ch.queue_purge(MIRRORED_Q)
        for queue in (QUORUM_Q, MIRRORED_Q):
            for i in range(COUNT):
                ch.basic_publish("", queue, ("%s-%d" % (queue, i)).encode(), pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()
    leaders = {q["name"]: q.get("leader") or q.get("pid", "") for q in ctl("lab-ctrl1", "list_queues", "-p", VHOST, "name", "leader", "pid")}
    leader = str(leaders[QUORUM_Q]).split("@")[-1].split(".")[0].strip("<>'")
    assert leader in CTRLS, leaders
    victim_pid = beam_pid(leader)
    events = labtools.MasterEvents()
    try:
        os.kill(victim_pid, signal.SIGKILL)
        # The loop hears of it from the nodes' own management API and metrics endpoints (the
        # beacon's every-tick paths), not from a rabbitmqctl report: the evidence says so.
        alert = events.wait("openstack_ha/alert/rabbitmq_node_down", 60, lambda e: leader in json.dumps(e["data"].get("why")))
    finally:
        events.close()
    assert alert is not None, "no openstack_ha/alert/rabbitmq_node_down naming " + leader
    sources = {c: v.get("source") for c, v in alert["data"]["evidence"].items()}
    # The survivors answer from their management API; the killed node's API and endpoint refuse.
    assert sources[leader] == "metrics" and set(sources.values()) == {"api", "metrics"}, alert["data"]["evidence"]
    assert alert["data"]["evidence"][leader]["running"] is False
    wait_until(lambda: not labtools.labctl.alive(victim_pid), 10, "the killed node's VM to exit")
    survivor = next(c for c in CTRLS if c != leader)
    got = {QUORUM_Q: set(), MIRRORED_Q: set()}
    deadline = time.monotonic() + labtools.scaled(90)
    while time.monotonic() < deadline and any(len(v) < COUNT for v in got.values()):
        # A client does what oslo.messaging does: reconnect and retry while the survivors
        # elect a new leader (quorum queue) or promote a mirror (classic mirrored queue).
        try:
            conn, ch = channel(survivor)
            try:
                for queue, seen in got.items():
                    while len(seen) < COUNT:
                        method, _, body = ch.basic_get(queue, auto_ack=False)
                        if method is None:
                            break
                        seen.add(body)
                        ch.basic_ack(method.delivery_tag)
            finally:
                if conn.is_open:
                    conn.close()
        except pika.exceptions.AMQPError:
            pass
        if any(len(v) < COUNT for v in got.values()):
            time.sleep(1)
    got = {q: len(v) for q, v in got.items()}
    assert got == {QUORUM_Q: COUNT, MIRRORED_Q: COUNT}
    # The killed node comes back without anyone touching it: the loop sees RabbitMQ down on a
    # controller that answers, starts it, and it rejoins its cluster.
    wait_until(lambda: running_nodes(survivor) == ALL, 120, "%s back in the cluster" % leader, interval=3)
    wait_until(lambda: "restart" in [d["what"] for d in labtools.decisions() if d.get("service") == "rabbitmq" and d.get("backend") == leader],
               20, "the loop's restart of %s in the records" % leader, interval=1)


def test_a_partitioned_node_pauses_alerts_and_heals(cluster):
    link = "oha-ctrl3-h"
    events = labtools.MasterEvents()
    try:
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        try:
            # pause_minority: lab-ctrl3, alone, stops its app; the majority carries on.
            wait_until(lambda: running_nodes("lab-ctrl1") == sorted(["rabbit@lab-ctrl1", "rabbit@lab-ctrl2"]), 90,
                       "the majority to drop lab-ctrl3", interval=2)
            wait_until(lambda: running_nodes("lab-ctrl3") == [], 90, "lab-ctrl3 to pause", interval=2)
            alert = events.wait("openstack_ha/alert/rabbitmq_", 90, lambda e: "lab-ctrl3" in json.dumps(e["data"].get("why")))
            assert alert is not None, "no openstack_ha/alert/rabbitmq_* naming lab-ctrl3"
        finally:
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        for ctrl in CTRLS:
            wait_until(lambda: running_nodes(ctrl) == ALL, 180, "the cluster to heal on %s" % ctrl, interval=3)
    finally:
        events.close()


def rabbit_story(since):
    """What a failed heal test needs to be understood from CI's output alone: the loop's RabbitMQ
    decisions since ``since`` (what, node, why, result), and each node's running nodes and
    partitions as ``rabbitmqctl`` tells them now."""
    lines = []
    try:
        for d in labtools.decisions():
            if d.get("service") == "rabbitmq" and d.get("time", 0) >= since:
                lines.append("%.1f %s %s %s -> %s" % (d["time"] - since, d.get("what"), d.get("backend") or d.get("alert"),
                                                      str(d.get("why"))[:160], json.dumps(d.get("result"))[:200]))
    except Exception as exc:  # the story is a diagnostic: never hide the failure behind it
        lines.append("decisions unreadable: %r" % exc)
    for ctrl in CTRLS:
        try:
            status = ctl(ctrl, "cluster_status")
            lines.append("%s: running %s, partitions %s" % (ctrl, status.get("running_nodes"), status.get("partitions")))
        except Exception as exc:
            lines.append("%s: cluster_status failed: %r" % (ctrl, exc))
    return "\n".join(lines)


def set_partition_handling(mode):
    """Set ``cluster_partition_handling`` in every running node's VM (no restart; the node
    monitor reads it when it meets a partition). The files keep the pillar's value."""
    for ctrl in CTRLS:
        labtools.labctl.ctrl_run(ctrl, ["rabbitmqctl", "-q", "eval"],
                                 input_text="application:set_env(rabbit, cluster_partition_handling, %s)." % mode)


def test_a_partition_left_standing_is_healed_by_restarting_the_minoritys_app(cluster):
    # A site with `partition_handling: ignore` (allowed by the pillar): nobody pauses, both
    # sides keep running after the link returns, and the loop (heal_partitions) restarts the
    # app of the minority node, one node only.
    link = "oha-ctrl3-h"
    events = labtools.MasterEvents()
    start = time.time()
    set_partition_handling("ignore")
    try:
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        try:
            # Past net_ticktime (15 s): each side declares the other down, lab-ctrl3 runs alone.
            wait_until(lambda: running_nodes("lab-ctrl1") == sorted(["rabbit@lab-ctrl1", "rabbit@lab-ctrl2"]), 90,
                       "the majority to drop lab-ctrl3", interval=2)
        finally:
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        healed = events.wait("openstack_ha/rabbitmq/healed", 150, lambda e: e["data"].get("backend") == "lab-ctrl3")
        assert healed is not None, "no openstack_ha/rabbitmq/healed for lab-ctrl3:\n" + rabbit_story(start)
        for ctrl in CTRLS:
            wait_until(lambda: running_nodes(ctrl) == ALL, 120, "the cluster to be whole on %s" % ctrl, interval=3)
        heals = wait_until(lambda: [d for d in labtools.decisions() if d.get("what") == "heal" and d.get("service") == "rabbitmq"],
                           20, "the heal in the records", interval=1)
        assert {d["backend"] for d in heals[-1:]} == {"lab-ctrl3"}, heals[-3:]
        assert all(not (ctl(c, "cluster_status").get("partitions") or []) for c in CTRLS)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=False)
        set_partition_handling("pause_minority")
        events.close()


def test_a_split_from_an_instants_loss_is_seen_in_the_management_api_and_healed(cluster):
    # lab-ctrl3's node drops its peers for an instant (a loss shorter than a beacon tick):
    # they reconnect at once and Mnesia splits. The loop sees it in the nodes' management API
    # views (Mnesia's running nodes: `split`), not from rabbitmqctl, and heals the minority
    # once it is connected to its peers again, until the cluster is whole.
    events = labtools.MasterEvents()
    start = time.time()
    set_partition_handling("ignore")
    try:
        labtools.labctl.ctrl_run("lab-ctrl3", ["rabbitmqctl", "-q", "eval"],
                                 input_text='[erlang:disconnect_node(N) || N <- nodes(), lists:prefix("rabbit@", atom_to_list(N))].')
        alert = events.wait("openstack_ha/alert/rabbitmq_partition", 60)
        assert alert is not None, "no openstack_ha/alert/rabbitmq_partition:\n" + rabbit_story(start)
        evidence = alert["data"]["evidence"]
        assert any(v.get("split") for v in evidence.values()) or any(v.get("partitions") for v in evidence.values()), evidence
        assert "api" in {v.get("source") for v in evidence.values()}, evidence
        # Usually lab-ctrl3 alone is split off. But a peer that reconnected to it at once may
        # tell the other peer it still sees lab-ctrl3, and RabbitMQ's partial-partition guard
        # then disconnects that other peer from it too: the minority is then another node (or
        # every node stands alone). The loop heals whichever node is on the minority side, one
        # per cooldown, until the cluster is whole.
        healed = events.wait("openstack_ha/rabbitmq/healed", 120)
        assert healed is not None, "no openstack_ha/rabbitmq/healed after the alert ({}, {:.1f} s in):\n{}".format(
            alert["data"].get("why"), alert["data"].get("time", 0) - start, rabbit_story(start))
        assert healed["data"].get("backend") in CTRLS, healed["data"]
        for ctrl in CTRLS:
            wait_until(lambda: running_nodes(ctrl) == ALL, 180, "the cluster to be whole on %s" % ctrl, interval=3)
        wait_until(lambda: all(not (ctl(c, "cluster_status").get("partitions") or []) for c in CTRLS), 60,
                   "no partition listed", interval=3)
    finally:
        set_partition_handling("pause_minority")
        events.close()


COOKIE_FILE = "/var/lib/rabbitmq/.erlang.cookie"
NEW_COOKIE = "LabRotatedErlangCookie00000002"


def cookie_state(result):
    (ret,) = [r for key, r in result.items() if key.startswith("openstack_ha_rabbitmq_|-openstack_ha-rabbitmq-cookie_|-")]
    return ret


def cookie_digests():
    return {c: sh(c, "sha256sum " + COOKIE_FILE).split()[0] for c in CTRLS}


def apply_cookie(ctrl, cookie=None, *extra):
    args = ["state.apply", "openstack_ha.rabbitmq"] + list(extra)
    if cookie:
        args.append("pillar=" + json.dumps({"openstack_ha": {"rabbitmq": {"cookie": cookie}}}))
    rc, result = labtools.salt(ctrl, *args)
    return rc, cookie_state(result[ctrl])


def test_a_changed_cookie_is_rolled_out_node_by_node_without_a_restart(cluster):
    import hashlib

    old = cookie_digests()
    assert len(set(old.values())) == 1
    pids = {c: beam_pid(c) for c in CTRLS}
    try:
        rc, ret = apply_cookie("lab-ctrl2", NEW_COOKIE, "test=True")
        assert ret["result"] is None and "would be rolled out" in json.dumps(ret["changes"]), ret
        assert cookie_digests() == old, "test=True changed a cookie file"
        # Applied on one node only: every running member takes the new cookie, files and VMs.
        rc, ret = apply_cookie("lab-ctrl2", NEW_COOKIE)
        assert rc == 0 and ret["result"] is True, ret
        assert NEW_COOKIE not in json.dumps(ret), "the cookie appeared in the state's output"
        assert set(cookie_digests().values()) == {hashlib.sha256(NEW_COOKIE.encode()).hexdigest()}
        assert {c: sh(c, "stat -c '%a %U' " + COOKIE_FILE).split() for c in CTRLS} == {c: ["400", "rabbitmq"] for c in CTRLS}
        # Every node answers a new CLI connection (the new cookie) and sees the whole cluster;
        # no VM was restarted.
        for ctrl in CTRLS:
            assert running_nodes(ctrl) == ALL
        assert {c: beam_pid(c) for c in CTRLS} == pids
        # The other nodes' states find the cookie already in place.
        rc, ret = apply_cookie("lab-ctrl3", NEW_COOKIE)
        assert rc == 0 and ret["result"] is True and ret["changes"] == {}, ret
    finally:
        # Back to the pillar's cookie, the same way.
        rc, ret = apply_cookie("lab-ctrl1")
        assert rc == 0 and ret["result"] is True, ret
    assert cookie_digests() == old
    for ctrl in CTRLS:
        wait_until(lambda: running_nodes(ctrl) == ALL, 30, "RabbitMQ on %s to see all three nodes" % ctrl, interval=2)
    assert {c: beam_pid(c) for c in CTRLS} == pids


def test_bad_pillar_fails_before_anything_is_written(cluster):
    before = sh("lab-ctrl1", "sha256sum /etc/rabbitmq/rabbitmq.conf /var/lib/rabbitmq/.erlang.cookie")
    for bad, message in (({"cookie": "short"}, "openstack_ha:rabbitmq:cookie: too short"),
                         ({"policies": {"bad": {"vhost": VHOST, "pattern": "^x", "definition": {"ha-mode": "most"}}}},
                          "openstack_ha:rabbitmq:policies:bad:definition:ha-mode: expected one of all, exactly, nodes")):
        rc, result = labtools.salt("lab-ctrl1", "state.apply", "openstack_ha.rabbitmq", "pillar=" + json.dumps({"openstack_ha": {"rabbitmq": bad}}))
        assert rc != 0 and message in str(result["lab-ctrl1"]), result
    assert sh("lab-ctrl1", "sha256sum /etc/rabbitmq/rabbitmq.conf /var/lib/rabbitmq/.erlang.cookie") == before
