"""The health probe (``_modules/openstack_ha_probe.py``) against real sockets on loopback: an
API that answers, one that refuses, one that accepts and never answers. The backend beacon
calls it one target at a time (its own pool runs them concurrently); the verification calls it
with many: both answer the same."""

import socket
import threading
import time

import pytest

from tests.conftest import load_module

probe = load_module("_modules/openstack_ha_probe.py", "openstack_ha_probe")


@pytest.fixture
def apis():
    """``{kind: port}`` for an answering (200), a refusing and a hung API on 127.0.0.1."""
    stop, sockets = threading.Event(), []

    def listener(backlog=8):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        sockets.append(sock)
        return sock

    good, hung = listener(), listener()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()  # bound then closed: nothing listens there

    def answer():
        good.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = good.accept()
            except OSError:
                continue
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield {"good": good.getsockname()[1], "refused": refused_port, "hung": hung.getsockname()[1]}
    stop.set()
    thread.join(5)
    for sock in sockets:
        sock.close()


def target(name, port):
    return {"service": "nova", "backend": name, "address": "127.0.0.1", "port": port, "path": "/", "status": 200}


def test_one_target_and_many_are_judged_alike(apis):
    expected = {"nova/good": (True, "status 200"), "nova/refused": (False, "refused"), "nova/hung": (False, "timeout")}
    many = probe.probe_targets([target(k, p) for k, p in apis.items()], timeout=0.3)
    assert {k: (v["up"], v["detail"]) for k, v in many.items()} == expected
    for name, port in apis.items():
        started = time.monotonic()
        one = probe.probe_targets([target(name, port)], timeout=0.3)
        assert {k: (v["up"], v["detail"]) for k, v in one.items()} == {"nova/" + name: expected["nova/" + name]}
        assert time.monotonic() - started < 5, "a probe outlived its timeout by far"


def test_a_wrong_status_is_down_with_the_status_named(apis):
    wrong = dict(target("good", apis["good"]), status=204)
    assert probe.probe_targets([wrong], timeout=0.3) == {"nova/good": {"up": False, "detail": "status 200"}}


def test_a_round_carries_a_hung_probe_over_without_holding_the_others_back(apis):
    targets = [target(k, p) for k, p in apis.items()]
    state = {}
    try:
        started = time.monotonic()
        first = probe.probe_round(state, targets, timeout=0.6, budget=0.2)
        assert time.monotonic() - started < 0.5, "the round waited past its budget"
        assert {k: (v["up"], v["detail"]) for k, v in first.items()} == {"nova/good": (True, "status 200"),
                                                                          "nova/refused": (False, "refused")}
        assert list(state["probes"]) == ["nova/hung"]  # still in flight, not started again
        second = probe.probe_round(state, targets, timeout=0.6, budget=1.0)
        assert second["nova/hung"] == {"up": False, "detail": "timeout"}
        assert second["nova/good"]["up"] is True and second["nova/refused"]["detail"] == "refused"
    finally:
        probe.close_probes(state)
    assert state == {}


def test_ipv6_and_a_name_instead_of_an_address_are_probed_too():
    server = socket.socket(socket.AF_INET6)
    server.bind(("::1", 0))
    server.listen(4)

    def answer():
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        six = dict(target("six", server.getsockname()[1]), address="::1")
        assert probe.probe_targets([six], timeout=2) == {"nova/six": {"up": False, "detail": "status 503"}}
    finally:
        thread.join(5)
        server.close()
    named = dict(target("named", 9), address="localhost")  # resolved and probed by the blocking path
    assert probe.probe_targets([named], timeout=0.5)["nova/named"]["up"] is False


def test_an_answer_that_came_while_the_thread_was_held_up_is_not_a_timeout(apis):
    # A minion runs Salt's jobs as threads: the beacon's thread may not run for longer than a
    # probe's timeout. What arrived meanwhile counts; only a backend still silent is a timeout.
    targets = [target("good", apis["good"]), target("hung", apis["hung"])]
    state = {}
    try:
        assert probe.probe_round(state, targets, timeout=0.2, budget=0.0) == {}
        time.sleep(0.5)  # the thread held up past every deadline
        late = probe.probe_round(state, targets, timeout=0.2, budget=1.0)
        assert late["nova/good"] == {"up": True, "detail": "status 200"}, late
        assert late["nova/hung"] == {"up": False, "detail": "timeout"}
    finally:
        probe.close_probes(state)
