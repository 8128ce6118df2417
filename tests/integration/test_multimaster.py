"""Two masters, hot-hot (``labctl master2 up``): every controller's minion connected to both,
both running the loop on the same records and per-site lock in the lab's redis. A backend
crash is drained once and restored once; a master killed during the fault leaves the other to
finish, and coming back it does nothing twice."""

import json
import os
import signal
import time

import pytest

from lab import labctl
from tests.integration import labtools
from tests.integration.labtools import CTRLS, standin_pid, wait_until


@pytest.fixture(scope="module")
def two_masters(applied):
    try:
        labctl.start_second_master()
        yield
    finally:
        if not labctl.master_pids():
            labctl.start_master()
        labctl.stop_second_master()


def records():
    """The lab site's records as both masters read them, the decision log as ``decisions``."""
    return labctl.redis_records(labctl.REDIS_PORT, "lab", host=labctl.REDIS_HOST)


def moves(since, backend, service="nova"):
    """[(what, master)] of the drains and restores of service/backend decided after ``since``."""
    return [(d["what"], d.get("master")) for d in records()["decisions"]
            if d["time"] >= since and d.get("service") == service and d.get("backend") == backend and d["what"] in ("drain", "restore")]


def admin_states(backend, directory, service="nova"):
    """{controller: HAProxy admin state of service/backend}, asked through the master whose
    directory is ``directory`` (the other may be dead)."""
    proc = labctl.run([os.path.join(labctl.VENV_BIN, "salt"), "-c", os.path.join(directory, "etc"), "--out=json", "--static",
                       "-t", "30", "lab-ctrl*", "openstack_ha_haproxy.servers"], check=False, timeout=90)
    try:
        result = json.loads(proc.stdout or "{}")
    except ValueError:
        return {}
    return {c: result[c].get(service, {}).get(backend, {}).get("admin") if isinstance(result.get(c), dict) else None for c in CTRLS}


def settled(backend, directory, state):
    return set(admin_states(backend, directory).values()) == {state}


def quiet_cooldown(backend):
    """Wait until the last move of nova/backend is out of the remediation cooldown."""
    acted = [d["time"] for d in records()["decisions"] if d.get("backend") == backend and d["what"] in ("drain", "restore")]
    if acted:
        time.sleep(max(0.0, max(acted) + labtools.COOLDOWN + 0.5 - time.time()))


def crash(backend):
    """SIGKILL nova on ``backend`` once it is ready everywhere and out of the cooldown; the
    epoch just before the kill."""
    wait_until(lambda: settled(backend, labctl.MASTER2_DIR, "ready"), 60, "nova/%s ready everywhere" % backend, interval=1)
    quiet_cooldown(backend)
    start = time.time()
    os.kill(standin_pid(backend, "nova"), signal.SIGKILL)
    return start


def test_both_masters_act_once_on_a_fault(two_masters):
    backend = "lab-ctrl2"
    start = crash(backend)
    wait_until(lambda: settled(backend, labctl.MASTER_DIR, "drain"), 20, "nova/lab-ctrl2 drained everywhere", interval=0.3)
    labtools.start_standins(backend)
    wait_until(lambda: settled(backend, labctl.MASTER2_DIR, "ready"), 60, "nova/lab-ctrl2 restored everywhere", interval=1)
    time.sleep(3)  # a duplicate would come within the other master's own round
    done = moves(start, backend)
    assert [what for what, _ in done] == ["drain", "restore"], done
    # Both masters took part in the loop (each saw the events; either may be the one that acted).
    deciders = {d.get("master") for d in records()["decisions"] if d["time"] >= start}
    assert deciders <= {"lab-master", "lab-master-2"} and deciders, deciders


def test_a_master_killed_during_a_fault_leaves_the_other_to_finish(two_masters):
    backend = "lab-ctrl3"
    start = crash(backend)
    time.sleep(0.3)  # the beacon's report is on its way or being verified
    for pid in labctl.master_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        wait_until(lambda: settled(backend, labctl.MASTER2_DIR, "drain"), 60, "nova/lab-ctrl3 drained by the second master", interval=0.5)
        drains = moves(start, backend)
        assert [what for what, _ in drains] == ["drain"], drains
        # The first master comes back while the backend is still down: nothing is done twice.
        labctl.wait_for(lambda: not labctl.master_pids(), 30, "the killed master's processes to be gone")
        labctl.start_master()
        labctl.wait_for(lambda: labctl.masters_answer(CTRLS, [labctl.MASTER_DIR]), 120, "the first master to reach the controllers again")
        time.sleep(5)  # heartbeats reach both masters meanwhile
        assert [what for what, _ in moves(start, backend)] == ["drain"]
    finally:
        labtools.start_standins(backend)
        if not labctl.master_pids():
            labctl.start_master()
    wait_until(lambda: settled(backend, labctl.MASTER_DIR, "ready"), 60, "nova/lab-ctrl3 restored everywhere", interval=1)
    time.sleep(3)
    assert [what for what, _ in moves(start, backend)] == ["drain", "restore"], moves(start, backend)
