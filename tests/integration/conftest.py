"""The lab as a pytest fixture: brought up once per session, torn down after, also on failure."""

import os
import signal
import time

import pytest

from lab import labctl
from tests.integration import labtools
from tests.integration.labtools import CTRLS, standin_pid, wait_until


BESIDE_WAIT = 1800  # seconds the lab waits at most for the tests run beside this one


def wait_for_the_tests_beside(bound=BESIDE_WAIT):
    """Block until the process ``OHA_BESIDE_PID`` names has ended (scripts/test.sh runs the other
    Salt releases' tests there, beside the unit tests, the files that need no lab, the lab's
    start and its first apply; the lab's timing-sensitive tests must not share the host's two
    cores with them). Returns the seconds waited; gives up after ``bound`` seconds (their own
    timeouts end them long before)."""
    pid = int(os.environ.get("OHA_BESIDE_PID") or 0)
    started = time.monotonic()
    while pid and labctl.alive(pid) and time.monotonic() - started < bound:
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture(scope="session")
def lab():
    if os.environ.get("OHA_REUSE_LAB") == "1":  # development: run against a lab that is already up
        yield labctl
        return
    labctl.down()  # whatever an earlier crashed run left behind
    try:
        labctl.up()
        yield labctl
    finally:
        labctl.down()


@pytest.fixture(scope="session")
def applied(lab):
    """The lab after `salt '*ctrl*' state.apply openstack_ha` succeeded on every controller."""
    rc, result = labtools.apply("*ctrl*")
    # The lab's start, the foundation tests and this apply run beside the other Salt releases'
    # tests (scripts/test.sh); what follows is timing-sensitive and waits for them to end.
    wait_for_the_tests_beside()
    assert rc == 0, labtools.failed_states(result) or result
    assert sorted(result) == labtools.CTRLS
    return result


@pytest.fixture
def remediating(applied):
    """The lab with the beacons running and every nova backend up, ready and out of cooldown."""
    for ctrl in CTRLS:
        pid = standin_pid(ctrl, "nova")
        if pid and labtools.labctl.alive(pid):
            os.kill(pid, signal.SIGCONT)
        labtools.start_standins(ctrl)
    for backend in CTRLS:
        labtools.wait_restored(backend, 45)
    # HAProxy is set before the decision is stored: a restore seen in HAProxy may reach the
    # records seconds later on a busy master. Wait for it, then out of the cooldown it starts
    # (in which a new drain is only suppressed).
    def restores_recorded():
        last = {}
        for d in labtools.decisions():
            if d.get("service") == "nova" and d["what"] in ("drain", "restore"):
                last[d.get("backend")] = d["what"]
        return all(last.get(backend) != "drain" for backend in CTRLS)
    wait_until(restores_recorded, 15, "the restores of nova in the records", interval=0.5)
    labtools.wait_out_cooldown("nova")
    yield
    for ctrl in CTRLS:
        pid = standin_pid(ctrl, "nova")
        if pid and labtools.labctl.alive(pid):
            os.kill(pid, signal.SIGCONT)
        labtools.start_standins(ctrl)
    # The next test (of any file) finds every backend serving: a drain the test provoked is
    # restored by the loop once its cooldown is over, which can outlast the test itself.
    for backend in CTRLS:
        labtools.wait_restored(backend, 90)


def log_tail(path, tail=2 * 1024 * 1024):
    """The lines of the last ``tail`` bytes of the file ``path``; [] when there is none."""
    try:
        with open(path, errors="replace") as fh:
            fh.seek(max(0, os.path.getsize(path) - tail))
            return fh.readlines()
    except OSError:
        return []


def cut(lines, width):
    """``lines`` joined, each cut to ``width`` characters (a cut one ends in "[...]")."""
    return "".join(line if len(line) <= width else line[:width] + " [...]\n" for line in lines)


def loop_log_tail(lines=40, width=400):
    """The last ``lines`` lines of the lab master's log that are the loop's (``openstack_ha:``),
    warnings or errors, each cut to ``width`` characters; "" when there is no log."""
    kept = [line for line in log_tail(os.path.join(labctl.MASTER_DIR, "log", "master"), 4 * 1024 * 1024)
            if "openstack_ha:" in line or "[WARNING" in line or "[ERROR" in line]
    # A decision's line carries every controller's evidence: cut, so that CI's shortened
    # output still shows many of them rather than a few whole.
    return cut(kept[-lines:], width)


def controller_log(name, *parts):
    """The lines of the last 2 MiB of a file in lab controller ``name`` (its path under the
    controller's root given as ``parts``); [] when there is none."""
    return log_tail(os.path.join(labctl.state_dir(name), "upper", *parts))


def minion_errors(lines=30):
    """{controller: text}: the last ``lines`` lines of each lab controller's minion log that are
    errors and the tracebacks under them (the one place a state's exception is shown whole)."""
    found = {}
    for name, _ in labctl.CONTROLLERS + [labctl.SPARE]:
        kept, inside = [], False
        for line in controller_log(name, "var", "log", "salt", "minion"):
            if line[:2] == "20":  # a new record (its date)
                inside = "[ERROR" in line or "[CRITICAL" in line
            if inside:
                kept.append(line)
        if kept:
            found[name] = "".join(kept[-lines:])
    return found


_SHOWN = {}


def mariadb_log_tails(lines=25, width=300):
    """{controller: text}: the last ``lines`` lines of each lab controller's MariaDB error log
    that are WSREP's, warnings or errors (a join, a state transfer, a recovery: why a node did
    not become Synced), each cut to ``width`` characters."""
    found = {}
    for name, _ in labctl.CONTROLLERS + [labctl.SPARE]:
        kept = [line for line in controller_log(name, "var", "log", "mysql", "error.log")
                if "WSREP" in line or "[ERROR]" in line or "[Warning]" in line]
        if kept:
            found[name] = cut(kept[-lines:], width)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed lab test's report carries what the loop logged just before (the one clue CI's
    output keeps of why a drain did not come), what keepalived said (why a VIP moved), the
    controllers' minion errors and, for a test on the applied lab, MariaDB's WSREP lines (why a
    node did not join)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        tail = loop_log_tail()
        if tail:
            report.sections.append(("lab master log (loop, warnings)", tail))
        said = labctl.syslog_tail(40, match="Keepalived")
        if said:
            report.sections.append(("lab syslog (keepalived: VRRP states, track script)", said))
        for name, text in minion_errors().items():
            report.sections.append(("minion log of {} (errors)".format(name), text))
        if "applied" in item.fixturenames:
            for name, text in mariadb_log_tails().items():
                # Shown once: a failed session fixture fails every test after it the same way.
                seen = _SHOWN.setdefault(("mariadb", name, text), item.nodeid)
                report.sections.append(("MariaDB error log of {} (WSREP, warnings, errors)".format(name),
                                        text if seen == item.nodeid else "unchanged since the report of {}\n".format(seen)))
