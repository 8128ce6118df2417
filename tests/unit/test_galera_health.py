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


def _serve(health, tmp_path, allow, max_clients=4, client_timeout=1.0, address="127.0.0.1"):
    """The daemon's server on a free loopback port, in a thread; returns (server, port)."""
    import threading

    class Args:
        node, socket, datadir, sst_user = "n1", str(tmp_path / "no.sock"), str(tmp_path), "sst"
        maintenance_file, starting_file, starting_max = str(tmp_path / "maint"), None, 60
        interval, pidfile, watch, stale, available_when_donor = 0.2, None, 0.1, 3.0, False

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
