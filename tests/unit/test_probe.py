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


class KeepAliveAPI:
    """An HTTP/1.1 API on 127.0.0.1 that keeps connections open, one thread per connection.
    ``accepted`` counts connections; ``mode`` says how each request is answered: ``answer``,
    ``close once`` (the connection closed unanswered, as by a server whose keep-alive time ran
    out; the next ones answered)
    or ``hang`` (read, never answered)."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port, self.accepted, self.mode, self.requests = self.server.getsockname()[1], 0, "answer", []
        self.conns, self.stop = [], threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            while not self.stop.is_set():
                try:
                    request = conn.recv(4096)
                except OSError:
                    return
                if not request:
                    return
                self.requests.append(request)
                if self.mode == "close once":
                    self.mode = "answer"
                    return
                if self.mode == "answer":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    def shut(self):
        """Everything closed: the listener (new connections refused) and every connection."""
        self.stop.set()
        for conn in [self.server] + self.conns:  # shutdown wakes the accept, which close alone does not
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.close()


@pytest.fixture
def keepalive_api():
    api = KeepAliveAPI()
    yield api
    api.shut()


def test_kept_connections_carry_the_next_probes_and_a_crash_is_seen_on_them(keepalive_api):
    targets = [target("ka", keepalive_api.port)]
    state = {}
    try:
        for _ in range(5):
            assert probe.probe_round(state, targets, timeout=1, budget=1) == {"nova/ka": {"up": True, "detail": "status 200"}}
        assert keepalive_api.accepted == 1, "each probe opened its own connection"
        assert all(b"Connection: keep-alive" in r for r in keepalive_api.requests)
        keepalive_api.shut()  # the API dies: its connections close, its port refuses
        started = time.monotonic()
        assert probe.probe_round(state, targets, timeout=1, budget=1) == {"nova/ka": {"up": False, "detail": "refused"}}
        assert time.monotonic() - started < 0.5
    finally:
        probe.close_probes(state)


def test_a_kept_connection_the_server_closed_is_replaced_not_judged(keepalive_api, monkeypatch):
    targets = [target("ka", keepalive_api.port)]
    state = {}
    try:
        assert probe.probe_round(state, targets, timeout=1, budget=1)["nova/ka"]["up"] is True
        # The server closes the kept connection as the next request arrives (the look before
        # sending saw it open): the probe goes again on a new connection, within its deadline.
        monkeypatch.setattr(probe, "_still_open", lambda sock: True)
        keepalive_api.mode = "close once"
        assert probe.probe_round(state, targets, timeout=1, budget=1) == {"nova/ka": {"up": True, "detail": "status 200"}}
        assert keepalive_api.accepted == 2 and len(keepalive_api.requests) == 3
    finally:
        probe.close_probes(state)


def test_a_kept_connection_is_renewed_and_a_hang_on_it_is_a_timeout(keepalive_api, monkeypatch):
    monkeypatch.setattr(probe, "REUSE_FOR", 0.3)
    targets = [target("ka", keepalive_api.port)]
    state = {}
    try:
        probe.probe_round(state, targets, timeout=1, budget=1)
        time.sleep(0.4)
        assert probe.probe_round(state, targets, timeout=1, budget=1)["nova/ka"]["up"] is True
        assert keepalive_api.accepted == 2, "a connection older than REUSE_FOR was used again"
        keepalive_api.mode = "hang"
        assert probe.probe_round(state, targets, timeout=0.3, budget=1) == {"nova/ka": {"up": False, "detail": "timeout"}}
        assert state["idle"] == {}, "a connection that timed out was kept"
    finally:
        probe.close_probes(state)


def test_without_keep_every_probe_has_its_own_connection(keepalive_api):
    targets = [target("ka", keepalive_api.port)]
    state = {}
    try:
        for _ in range(3):
            assert probe.probe_round(state, targets, timeout=1, budget=1, keep=False)["nova/ka"]["up"] is True
        assert keepalive_api.accepted == 3 and state["idle"] == {}
        assert not any(b"keep-alive" in r for r in keepalive_api.requests)
    finally:
        probe.close_probes(state)
    assert probe.probe_targets([targets[0]], timeout=1)["nova/ka"]["up"] is True  # one-shot: never kept
    assert keepalive_api.accepted == 4


@pytest.mark.parametrize("answer, expected", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 40),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no", None),          # the body still coming
    (b"HTTP/1.1 200 OK\r\nContent-Le", None),                           # the headers still coming
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 0),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0),             # 1.0 closes unless it says so
    (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", 64),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 0),
    (b"HTTP/1.1 200 OK\r\n\r\nok", 0),                                  # no length: read to the end
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1", 0),     # more than asked for
])
def test_what_makes_a_connection_reusable(answer, expected):
    assert probe._reusable(answer) == expected


def test_rounds_too_far_apart_to_reuse_a_connection_keep_none(keepalive_api, monkeypatch):
    monkeypatch.setattr(probe, "REUSE_FOR", 0.3)
    targets = [target("ka", keepalive_api.port)]
    state = {}
    try:
        for _ in range(3):
            assert probe.probe_round(state, targets, timeout=1, budget=1)["nova/ka"]["up"] is True
            time.sleep(0.4)
        assert state["idle"] == {} and keepalive_api.accepted == 3
        assert not any(b"keep-alive" in r for r in keepalive_api.requests[1:])
    finally:
        probe.close_probes(state)
