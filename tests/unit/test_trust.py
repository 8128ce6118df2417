"""What the master believes and what it lets out: signed answers, malformed views, redaction,
root writes that never follow a link, the Galera start marker."""

import os
import time

import pytest

from tests.conftest import REPO, defaults, example_pillar, load_module, minion_keys, model_lib

files = load_module("_utils/openstack_ha_files.py", "openstack_ha_files")
signed = load_module("_modules/openstack_ha_signed.py", "openstack_ha_signed")
publish = load_module("_utils/openstack_ha_publish.py", "openstack_ha_publish")
decide = load_module("_utils/openstack_ha_decide.py", "openstack_ha_decide")
status = load_module("_utils/openstack_ha_status.py", "openstack_ha_status")
plan = load_module("_utils/openstack_ha_galera_plan.py", "openstack_ha_galera_plan")
health = load_module("states/openstack_ha/files/galera_health.py", "galera_health")


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """Two minions' key pairs (a controller and an intruder), and the master's key store
    answering with the controller's accepted public key."""
    from cryptography.hazmat.primitives import serialization

    pems = minion_keys(tmp_path, ("lab-ctrl1", "intruder"))
    monkeypatch.setattr(publish, "_accepted_key", lambda ctx, minion: serialization.load_pem_public_key(pems[minion])
                        if minion == "lab-ctrl1" else None)
    return tmp_path


def answer_as(keys, minion, nonce, fun, answer, claimed_id=None):
    signed.__opts__ = {"pki_dir": str(keys / minion), "id": claimed_id or minion}
    signed.__salt__ = {fun: lambda: answer}
    signed._KEY.clear()
    return signed.call(fun, nonce=nonce)


NONCE = "0123456789abcdef0123"
VIEW = {"probes": {"nova/lab-ctrl2": {"up": True}}, "admin": {"nova/lab-ctrl2": "ready"}}


def test_a_signed_answer_is_believed(keys):
    reply = answer_as(keys, "lab-ctrl1", NONCE, "openstack_ha_probe.service_view", VIEW)
    assert publish.authenticated_answer(None, "lab-ctrl1", NONCE, "openstack_ha_probe.service_view", reply) == (True, VIEW)


def test_a_signed_answer_says_when_it_ran_and_a_malformed_time_is_left_out(keys):
    fun = "openstack_ha_probe.service_view"
    before = time.time()
    reply = answer_as(keys, "lab-ctrl1", NONCE, fun, VIEW)
    ran = {}
    assert publish.authenticated_answer(None, "lab-ctrl1", NONCE, fun, reply, ran) == (True, VIEW)
    began, ended = ran["lab-ctrl1"]
    assert before - 0.001 <= began <= ended <= time.time() + 0.001
    # Signed by the controller itself, but not two numbers: believed as an answer, not as a time.
    import json
    for times in (["x", 1], [True, 2], [1], "now"):
        data = json.loads(signed.body("lab-ctrl1", NONCE, fun, VIEW))
        text = json.dumps(dict(data, ran=times)).encode()
        forged_time = {"body": text.decode(), "sig": signed.sign(text)}
        ran = {}
        assert publish.authenticated_answer(None, "lab-ctrl1", NONCE, fun, forged_time, ran) == (True, VIEW)
        assert ran == {}


def test_a_publish_time_is_split_by_the_slowest_controller():
    timing = {"asked": 100.0, "sent": 100.02, "ran": {"c1": (100.1, 100.12), "c2": (100.3, 100.31)},
              "received": {"c1": 100.15, "c2": 100.4}}
    assert publish.split(timing) == {"publish": 0.02, "reach": 0.28, "run": 0.02, "back": 0.09}
    # No answer: only what the master saw itself.
    assert publish.split({"asked": 1.0, "sent": 1.5, "ran": {}, "received": {}}) == {"publish": 0.5}
    assert publish.split({}) == {}


def test_job_returns_reach_only_the_publish_waiting_for_their_jid():
    hub = publish.Returns()
    arrived = hub.expect("20261206133500123456_ab12cd34")
    ret = {"id": "lab-ctrl1", "return": {"body": "{}", "sig": ""}}
    assert hub.deliver("salt/job/20261206133500123456_ab12cd34/ret/lab-ctrl1", ret)
    assert arrived.get_nowait() == ret
    # Another job's return, the job's own announcement, a tag too short: not handed on.
    assert not hub.deliver("salt/job/20261206133500999999/ret/lab-ctrl1", ret)
    assert not hub.deliver("salt/job/20261206133500123456_ab12cd34/new", {"jid": "x"})
    assert not hub.deliver("salt/job/20261206133500123456_ab12cd34", ret)
    assert arrived.empty()
    hub.forget("20261206133500123456_ab12cd34")
    assert not hub.deliver("salt/job/20261206133500123456_ab12cd34/ret/lab-ctrl1", ret)


def test_a_jid_given_to_the_master_is_a_salt_jid_and_never_shared():
    import salt.utils.jid

    jids = [publish._new_jid() for _ in range(2000)]
    assert len(set(jids)) == len(jids)
    assert all(salt.utils.jid.is_jid(j) for j in jids)


class _Ignored:
    """A context whose ``records.note_ignored`` is remembered (the records store is not what
    these tests are about)."""

    def __init__(self):
        self.ignored = []
        self.state = {}

    def call(self, name, *args):
        assert name == "records.note_ignored"
        self.ignored.append(args)


def test_a_publish_takes_its_signed_answers_from_the_bus_reader_and_no_forged_one(keys, caplog, monkeypatch, request):
    import queue
    import threading

    fun = "openstack_ha_probe.service_view"
    ctx, hub = _Ignored(), publish.Returns()
    jid = publish._new_jid()
    arrived = hub.expect(jid)

    def job():
        # What the bus reader hands on once the job is out: a forged answer in the
        # controller's name first, then the controller's own, late.
        def answers():
            forged = answer_as(keys, "intruder", "n" * 32, fun, {"probes": {}}, claimed_id="lab-ctrl1")
            hub.deliver("salt/job/{}/ret/lab-ctrl1".format(jid), {"id": "lab-ctrl1", "return": forged})
            time.sleep(0.2)
            hub.deliver("salt/job/{}/ret/lab-ctrl1".format(jid), {"id": "lab-ctrl1", "return": answer_as(keys, "lab-ctrl1", "n" * 32, fun, VIEW)})
        threading.Thread(target=answers, daemon=True).start()
        return {"jid": jid, "minions": ["lab-ctrl1"]}

    timing = {}
    got = publish._gather(ctx, job, publish._queued(arrived, jid), ["lab-ctrl1"], fun, "n" * 32, 10, None, None, timing)
    assert got == {"lab-ctrl1": VIEW}
    assert [a[:2] for a in ctx.ignored] == [("unauthenticated answer", "lab-ctrl1")]
    assert set(timing) >= {"asked", "sent", "ran", "received"}
    # A master that published the job under another jid: nothing is awaited from the queue.
    # (Said to this test's handler alone: Salt's own handlers on the root logger would print
    # it again as the interpreter exits.)
    monkeypatch.setattr(publish.log, "propagate", False)
    publish.log.addHandler(caplog.handler)
    request.addfinalizer(lambda: publish.log.removeHandler(caplog.handler))
    assert publish._gather(ctx, lambda: {"jid": "20261206000000000000", "minions": ["lab-ctrl1"]},
                           publish._queued(queue.SimpleQueue(), jid), ["lab-ctrl1"], fun, "n" * 32, 10, None, None, {}) == {}
    assert "published job {} as 20261206000000000000".format(jid) in caplog.text


def test_a_controller_without_the_modules_is_told_apart_and_nothing_it_sent_is_logged():
    from salt.utils.lazy import LazyDict

    # Salt's own answer for a function the minion lacks (a master started before the first apply).
    missing = LazyDict.missing_fun_string(None, "openstack_ha_signed.call")
    assert publish.ignored_because(missing) == "answer without openstack_ha's modules (state.apply not run there yet)"
    for other in (missing + " \n[ERROR] forged line", {"body": "{}", "sig": ""}, None, "'cmd.run' is not available."):
        assert publish.ignored_because(other) == "unauthenticated answer"


@pytest.mark.parametrize("tamper", ["other_nonce", "other_fun", "intruder_key", "altered_body", "bare_answer", "garbage_sig"])
def test_forged_replayed_or_altered_answers_count_as_none(keys, tamper):
    fun = "openstack_ha_probe.service_view"
    if tamper == "intruder_key":
        reply = answer_as(keys, "intruder", NONCE, fun, VIEW, claimed_id="lab-ctrl1")
    else:
        reply = answer_as(keys, "lab-ctrl1", NONCE, fun, VIEW)
    nonce, asked = NONCE, fun
    if tamper == "other_nonce":
        nonce = "fedcba9876543210fedcba"
    elif tamper == "other_fun":
        asked = "openstack_ha_probe.vips_held"
    elif tamper == "altered_body":
        reply = dict(reply, body=reply["body"].replace("true", "false"))
    elif tamper == "bare_answer":
        reply = VIEW
    elif tamper == "garbage_sig":
        reply = dict(reply, sig="Zm9yZ2Vk")
    assert publish.authenticated_answer(None, "lab-ctrl1", nonce, asked, reply) == (False, None)


def test_only_the_runners_functions_are_signed(keys):
    signed.__opts__ = {"pki_dir": str(keys / "lab-ctrl1"), "id": "lab-ctrl1"}
    with pytest.raises(Exception, match="not a function the runner asks"):
        signed.call("cmd.run", ["id"], nonce=NONCE)


@pytest.mark.parametrize("view", [
    None, [], "up", {"probes": []}, {"probes": {"nova/x": {"up": "yes"}}}, {"probes": {"nova/x": True}},
    {"probes": {}, "admin": {"nova/x": 3}}, {"probes": {"nova/x": {"up": True}}, "admin": []},
])
def test_a_malformed_view_is_not_a_vote(view):
    assert decide.valid_view(view) is False


def test_a_well_formed_view_is_a_vote():
    assert decide.valid_view({"probes": {"nova/x": {"up": False, "detail": "refused"}}, "admin": {"nova/x": "ready"}, "haproxy": True})


def test_redaction_hides_every_secret_of_a_real_site():
    merged = model_lib.build(defaults(), example_pillar("eqiad1"))
    text = repr(model_lib.redact(merged))
    for secret in (merged["galera"]["root_password"], merged["galera"]["sst_password"], merged["rabbitmq"]["cookie"]):
        assert secret not in text
    assert "**********" in text
    assert model_lib.redact(merged)["galera"]["sst_user"] == merged["galera"]["sst_user"]


def test_write_atomic_replaces_a_planted_link_instead_of_following_it(tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0\n")
    cookie = tmp_path / ".erlang.cookie"
    os.symlink(victim, cookie)
    files.write_atomic(str(cookie), "NEWCOOKIE", mode=0o400)
    assert victim.read_text() == "root:x:0\n"
    assert not cookie.is_symlink() and cookie.read_text() == "NEWCOOKIE"
    assert (cookie.stat().st_mode & 0o777) == 0o400
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".openstack-ha")]


def test_read_nofollow_refuses_a_link(tmp_path):
    os.symlink("/etc/hostname", tmp_path / "link")
    with pytest.raises(OSError):
        files.read_nofollow(str(tmp_path / "link"))
    assert files.read_nofollow(str(tmp_path / "missing")) is None


def test_a_bootstrap_in_flight_is_waited_for_not_refused():
    uuid = "5f1c9a3e-1111-11ef-8000-0123456789ab"
    bootstrapping = {"running": False, "starting": {"bootstrap": True, "age": 2.0},
                     "grastate": {"uuid": uuid, "seqno": -1, "safe_to_bootstrap": False}}
    fresh = {"running": False, "grastate": None}
    action, reason = plan.start_plan("n2", ["n1", "n2", "n3"], {"n1": bootstrapping, "n2": fresh, "n3": fresh})
    assert action == "wait" and "n1 is bootstrapping" in reason
    # The same history with no start under way is a dead cluster: only galera_recover may act.
    dead = dict(bootstrapping, starting=None)
    assert plan.start_plan("n2", ["n1", "n2", "n3"], {"n1": dead, "n2": fresh, "n3": fresh})[0] == "refuse"


def test_the_health_daemon_reports_a_start_marker_until_it_is_stale(tmp_path):
    marker = tmp_path / "starting"
    assert health.start_in_flight(str(marker), 60) is None
    marker.write_text('{"bootstrap": true, "since": %f}' % (time.time() - 5))
    found = health.start_in_flight(str(marker), 60)
    assert found["bootstrap"] is True and 4 <= found["age"] <= 30
    assert health.start_in_flight(str(marker), 1) is None
    marker.write_text("not json")
    assert health.start_in_flight(str(marker), 60) is None


def test_no_pillar_is_under_the_file_root():
    from lab import labctl

    roots = labctl.project_master_config()["file_roots"]["base"]
    assert roots == [os.path.join(REPO, "states")]
    for root in roots:
        for dirpath, _, names in os.walk(root, followlinks=True):
            assert not [n for n in names if n.endswith(".sls") and "pillar" in os.path.relpath(dirpath, REPO)], dirpath
        assert not os.path.exists(os.path.join(root, "pillar"))


@pytest.mark.parametrize("view", [None, [], {"running": "yes"}, {"running_nodes": "rabbit@a"}, {"partitions": []},
                                  {"alarms": [1]}, {"running": True, "members": [["x"]]}])
def test_a_malformed_rabbitmq_report_is_not_a_view(view):
    assert decide.valid_rabbit_view(view) is False


def test_a_rabbitmq_report_is_a_view():
    assert decide.valid_rabbit_view({"running": True, "app_running": True, "running_nodes": ["rabbit@a"], "members": ["rabbit@a"],
                                     "partitions": {"rabbit@a": []}, "alarms": [], "expected": ["rabbit@a"]})


def _report(cells, galera_ok=True):
    """A controller_report whose HAProxy shows nova's servers in ``cells`` ({server: (status, admin)})."""
    servers = {"nova": {srv: {"status": st, "admin": adm} for srv, (st, adm) in cells.items()}}
    return {"haproxy": {"serving": True, "servers": servers}, "keepalived": {"running": True}, "vips": []}


def test_status_is_never_healthy_while_a_service_has_no_server_in_rotation():
    drained = {c: ("UP", "drain") for c in ("c1", "c2", "c3")}
    views = {c: _report(drained) for c in ("c1", "c2", "c3")}
    views["c1"]["vips"] = ["public"]
    summary = status.summarise("lab", ["c1", "c2", "c3"], views)
    assert summary["healthy"] is False
    assert "backend nova has no UP server on any HAProxy" in summary["problems"]
    one_up = dict(drained, c2=("UP", "ready"))
    summary = status.summarise("lab", ["c1", "c2", "c3"], {c: _report(one_up) for c in ("c1", "c2", "c3")})
    assert not [p for p in summary["problems"] if "nova" in p]
