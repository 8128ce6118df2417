"""The Galera health daemon's process watch, against real processes (no database needed)."""

import importlib.util
import os
import signal
import subprocess
import time

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
