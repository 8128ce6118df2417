"""The Galera health daemon's process watch, against real processes (no database needed)."""

import importlib.util
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "states", "openstack_ha", "files", "galera_health.py")


@pytest.fixture(scope="module")
def health():
    spec = importlib.util.spec_from_file_location("galera_health", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_live_server_is_not_gone_and_a_killed_one_is_at_once(health, tmp_path):
    pidfile = tmp_path / "mysqld.pid"
    proc = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text("{}\n".format(proc.pid))
        assert health.server_gone(str(pidfile)) is None
        os.kill(proc.pid, signal.SIGKILL)
        # Not reaped yet (a zombie) or gone: both are a dead server.
        deadline = time.monotonic() + 5
        while health.server_gone(str(pidfile)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert health.server_gone(str(pidfile)) == "process {} exited".format(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert health.server_gone(str(pidfile)) == "process {} exited".format(proc.pid)


def test_no_pid_file_or_a_half_written_one_is_no_evidence(health, tmp_path):
    assert health.server_gone(str(tmp_path / "missing.pid")) is None
    (tmp_path / "empty.pid").write_text("")
    assert health.server_gone(str(tmp_path / "empty.pid")) is None


def _serve(health, tmp_path, allow, max_clients=4, client_timeout=1.0, address="127.0.0.1", max_watchers=8, interval=0.2,
           pidfile=None):
    """The daemon's server on a free loopback port, in a thread; returns (server, port)."""
    import threading

    class Args:
        node, socket, datadir, sst_user = "n1", str(tmp_path / "no.sock"), str(tmp_path), "sst"
        maintenance_file, starting_file, starting_max = str(tmp_path / "maint"), None, 60
        interval, pidfile, watch, stale, available_when_donor = 0.2, None, 0.1, 3.0, False
        peer, gcomm_port, evict_confirm = [], 4567, 1.0

    Args.max_watchers, Args.interval, Args.pidfile = max_watchers, interval, pidfile

    server = health.BoundedServer((address, 0), health.make_handler(health.Probe(Args), client_timeout), allow, max_clients)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _get(port, path="/status", timeout=3):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_idle_connections_do_not_stop_it_answering(health, tmp_path):
    import socket

    server, port = _serve(health, tmp_path, allow=[], max_clients=4, client_timeout=1.0)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    try:
        # Every slot is taken by a silent client; they are cut off after the client timeout,
        # and the ones beyond the bound were closed at once. A real check gets its answer.
        deadline = time.monotonic() + 10
        code = None
        while time.monotonic() < deadline and code not in (200, 503):
            try:
                code = _get(port, "/", timeout=3)
            except OSError:
                time.sleep(0.2)
        assert code == 503  # no database here: unhealthy, but answered
        # And the silent clients were cut off by the server (at once beyond the bound, after
        # the client timeout within it), so they cannot pile up threads and sockets.
        for sock in idle:
            sock.settimeout(5)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


def test_only_the_allowed_addresses_may_ask(health, tmp_path):
    server, port = _serve(health, tmp_path, allow=["127.0.0.2"])
    try:
        import urllib.error
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            _get(port)
    finally:
        server.shutdown()
        server.server_close()
    server, port = _serve(health, tmp_path, allow=["127.0.0.1"])
    try:
        assert _get(port) == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_daemon_serves_ipv6_and_matches_allowed_addresses_in_any_spelling(health, tmp_path):
    """An IPv6 node's daemon listens on its IPv6 address; the allow list is compared parsed
    (``0:0::1`` is ``::1``), so HAProxy's checks from the controllers get through."""
    assert health.canonical("FD00:0213::0011") == "fd00:213::11" and health.canonical("::ffff:10.0.0.1") == "10.0.0.1"
    assert health.canonical("fe80::1%eth0") == "fe80::1"
    server, port = _serve(health, tmp_path, allow=["0:0::1"], address="::1")
    try:
        with urllib.request.urlopen("http://[::1]:%d/" % port, timeout=3) as response:
            assert response.status in (200, 503)
    except urllib.error.HTTPError as exc:
        assert exc.code == 503  # no database here: unhealthy, but it answered over IPv6
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ eviction of dead peers


def test_only_a_refused_connection_counts_as_refused(health):
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        assert health.refused("127.0.0.1", port, 1.0) is False  # something listens
    finally:
        listener.close()
    assert health.refused("127.0.0.1", port, 1.0) is True  # closed now: the host refuses


def test_a_port_that_closes_a_moment_later_is_refused_within_the_window(health):
    import socket
    import threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    threading.Timer(0.3, listener.close).start()  # a dying server's last thread closing its socket
    started = time.monotonic()
    assert health.refused_within("127.0.0.1", port, 5.0) is True
    assert time.monotonic() - started < 5.0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        assert health.refused_within("127.0.0.1", listener.getsockname()[1], 0.3) is False  # it listens all along
    finally:
        listener.close()


def test_only_the_uuid_a_nodes_own_view_gives_the_reporting_peer_is_evicted(health):
    view = {"n2": "u2", "n3": "u3"}
    gone = {"running": False, "gone": "process 12 exited", "uuid": "u2"}
    assert health.eviction("n2", gone, view, set()) == "u2"
    assert health.eviction("n2", dict(gone, gone=None, running=True), view, set()) is None  # alive
    assert health.eviction("n3", gone, view, set()) is None  # n3 naming n2's UUID: never
    assert health.eviction("n2", dict(gone, uuid=None), view, set()) is None  # no UUID known
    assert health.eviction("n2", gone, {}, set()) is None  # this node is not Primary
    assert health.eviction("n2", gone, view, {("n2", "u2")}) is None  # evicted already
    assert health.eviction("n2", "garbage", view, set()) is None


def _watch(port):
    """A /watch request to the daemon on ``port``: (the socket, its stream to read from)."""
    import socket
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /watch HTTP/1.0\r\n\r\n")
    return sock, sock.makefile("rb")


def _read_line(stream, deadline):
    import json
    line = stream.readline()
    assert line, "the stream ended"
    assert time.monotonic() < deadline + 5
    return json.loads(line)


def test_watch_streams_the_servers_liveness_at_once_when_it_changes(health, tmp_path):
    server, port = _serve(health, tmp_path, ["127.0.0.1"], interval=3600)  # one look at the (absent) database
    probe = server.RequestHandlerClass.probe
    deadline = time.monotonic() + 10
    while probe.cached is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        sock, stream = _watch(port)
        with sock:
            assert b" 200 " in stream.readline()
            while stream.readline().strip():
                pass
            first = _read_line(stream, time.monotonic())
            assert first["gone"] is None
            with probe.lock:
                probe.server_uuid = "0e1c2b3a-0000-4000-8000-000000000001"
                probe.gone = "process 42 exited"
                probe.changed.notify_all()
            seen = first
            deadline = time.monotonic() + 10
            while seen.get("gone") is None and time.monotonic() < deadline:
                seen = _read_line(stream, deadline)
            assert seen == {"running": False, "gone": "process 42 exited", "uuid": "0e1c2b3a-0000-4000-8000-000000000001"}
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_seen_down_by_the_database_look_first_is_still_reported_gone_with_its_uuid(health, tmp_path):
    """The look at the database (no server here: "not answering") may see a crash before the
    process watch does; the crash is reported all the same, under the UUID last seen running."""
    proc = subprocess.Popen(["sleep", "60"])
    pidfile = tmp_path / "mysqld.pid"
    pidfile.write_text("{}\n".format(proc.pid))
    server, _ = _serve(health, tmp_path, ["127.0.0.1"], interval=3600, pidfile=str(pidfile))
    probe = server.RequestHandlerClass.probe
    try:
        with probe.lock:
            probe.server_uuid = "0e1c2b3a-0000-4000-8000-000000000002"  # as a look had seen it running
        assert probe.liveness()["gone"] is None
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while probe.liveness()["gone"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert probe.liveness() == {"running": False, "gone": "process {} exited".format(proc.pid),
                                    "uuid": "0e1c2b3a-0000-4000-8000-000000000002"}
    finally:
        proc.kill()
        proc.wait()
        server.shutdown()
        server.server_close()




@pytest.mark.parametrize("max_watchers, allowed", [(1, 1), (8, 2)])
def test_watch_streams_are_bounded_and_do_not_take_the_checks_slots(health, tmp_path, max_watchers, allowed):
    """At most two streams per client (one per peer; two let a reconnect overlap) and
    --max-watchers in all; HAProxy's checks are answered meanwhile."""
    import urllib.request
    server, port = _serve(health, tmp_path, ["127.0.0.1"], max_clients=4, max_watchers=max_watchers)
    streams = []
    try:
        for _ in range(allowed):
            sock, stream = _watch(port)
            streams.append(sock)
            assert b" 200 " in stream.readline()
        sock, stream = _watch(port)
        streams.append(sock)
        assert b" 503 " in stream.readline()
        # HAProxy's check is still answered
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 503  # no database here: unhealthy, but answered
        # a stream that ends frees its place
        streams.pop(0).close()
        deadline = time.monotonic() + 10
        while server.RequestHandlerClass.probe.watching.get("127.0.0.1", 0) >= allowed and time.monotonic() < deadline:
            time.sleep(0.05)
        sock, stream = _watch(port)
        streams.append(sock)
        assert b" 200 " in stream.readline()
    finally:
        for sock in streams:
            sock.close()
        server.shutdown()
        server.server_close()


def test_a_peer_argument_names_a_node_and_its_address(health):
    import argparse
    assert health.args_peer("lab-ctrl2=10.213.0.12") == ("lab-ctrl2", "10.213.0.12")
    assert health.args_peer("lab-ctrl2=[FD00:213::12]") == ("lab-ctrl2", "fd00:213::12")
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=ADDRESS"):
        health.args_peer("10.213.0.12")
