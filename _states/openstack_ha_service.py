"""
Keep a controller service running, judged by its own pidfile, and reload it on change.

:depends: the ``openstack_ha`` execution module; Salt's ``service`` module.

.. code-block:: yaml

    haproxy-running:
      openstack_ha_service.running:
        - name: haproxy
        - pidfile: /run/haproxy.pid
        - reload_function: openstack_ha_haproxy.reload
        - reload_kwargs: {socket_path: /run/haproxy/admin.sock}
        - watch:
          - file: haproxy-config

Why not ``service.running``: without systemd, Salt judges a SysV service whose init script has
no ``status`` (keepalived's) by searching process names, which finds other hosts' daemons
wherever PIDs are shared (containers, the lab). And HAProxy must save its server state before
a reload, so a runtime drain survives it: ``reload_function`` does that.

A start is judged by its outcome, not by the init script's exit code: before it, the state
waits (bounded) until the processes of an earlier instance (``pidfile`` and ``companions``,
e.g. keepalived's VRRP child, which outlives a killed parent by a moment and makes a new
keepalived exit with "already running") are gone; after it, it waits (bounded by
``start_timeout``) for a live process in ``pidfile``, starts once more if the first attempt
left none, and on failure shows the init script's output and the tail of ``log_file``.
"""

import os
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_service"

# A process that received its stop signal a moment ago (or a zombie that PID 1 reaps late)
# gets this long to leave before the start goes ahead anyway.
EXIT_GRACE = 10.0


def __virtual__():
    if "openstack_ha.live_pid" not in __salt__:
        return (False, "openstack_ha execution module not loaded")
    return __virtualname__


def _pid_present(pidfile):
    """The PID in ``pidfile`` while that process exists at all (alive, exiting or a zombie
    not reaped yet), else None."""
    try:
        with open(pidfile) as fh:
            pid = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if os.path.exists("/proc/{}".format(pid)) else None


def wait_gone(pidfiles, timeout=EXIT_GRACE, interval=0.1):
    """
    Wait until no file of ``pidfiles`` names an existing process, at most ``timeout`` seconds.
    Returns the ``{pidfile: pid}`` still present when the time ran out (empty: all gone).
    """
    deadline = time.monotonic() + timeout
    while True:
        left = {path: pid for path, pid in ((p, _pid_present(p)) for p in pidfiles) if pid is not None}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(interval)


def wait_live(pidfile, timeout, interval=0.1):
    """Wait (at most ``timeout`` seconds) for a live process in ``pidfile``; return its PID or None."""
    deadline = time.monotonic() + timeout
    while True:
        pid = __salt__["openstack_ha.live_pid"](pidfile)
        if pid is not None or time.monotonic() >= deadline:
            return pid
        time.sleep(interval)


def _log_tail(log_file, lines=8):
    """The last ``lines`` lines of ``log_file`` as one string, or '' when there is none."""
    if not log_file:
        return ""
    try:
        with open(log_file, errors="replace") as fh:
            tail = fh.readlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.rstrip() for line in tail if line.strip())


def _start(name):
    """Start ``name`` through its init system; return what the init script printed (SysV) or ''."""
    script = "/etc/init.d/" + name
    if __grains__.get("init") != "systemd" and os.access(script, os.X_OK):
        out = __salt__["cmd.run_all"]([script, "start"], python_shell=False, ignore_retcode=True, output_loglevel="debug")
        return (out.get("stdout", "") + " " + out.get("stderr", "")).strip()
    __salt__["service.start"](name)
    return ""


def running(name, pidfile, enable=True, reload_function=None, reload_kwargs=None, prepare_function=None,
            prepare_kwargs=None, companions=None, start_timeout=10, log_file=None):
    """
    Ensure service ``name`` runs: a live process in ``pidfile``. Starts it through the init
    system when it does not, after ``prepare_function`` (given ``prepare_kwargs``) when one is
    named (HAProxy: prune the saved server state against the new configuration).

    companions
        other pidfiles of the service (child processes) that an earlier instance may leave
        behind for a moment; the start waits until they are gone.
    start_timeout
        seconds to wait for a live process after each start attempt (two attempts at most).
    log_file
        the service's log, whose tail is shown when the start fails.
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    if __salt__["openstack_ha.live_pid"](pidfile) is not None:
        ret["comment"] = "{} is running".format(name)
        return ret
    ret["changes"] = {name: "started"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "{} would have been started".format(name)
        return ret
    if enable and not __salt__["service.enabled"](name):
        __salt__["service.enable"](name)
    if prepare_function:
        try:
            __salt__[prepare_function](**(prepare_kwargs or {}))
        except CommandExecutionError as exc:
            ret.update(result=False, changes={}, comment="{} not started: {}".format(name, exc))
            return ret
    said = []
    for attempt in (1, 2):
        left = wait_gone([pidfile] + list(companions or []))
        if left:
            said.append("an earlier instance did not exit within {:.0f} s ({})".format(
                EXIT_GRACE, ", ".join("{} in {}".format(pid, path) for path, pid in sorted(left.items()))))
        output = _start(name)
        pid = wait_live(pidfile, float(start_timeout))
        if pid is not None:
            ret["comment"] = "{} started (pid {}{})".format(name, pid, ", second attempt" if attempt == 2 else "")
            return ret
        said.append("attempt {}: no live process in {} after {} s{}".format(
            attempt, pidfile, start_timeout, " (init script: {})".format(output[-300:]) if output else ""))
    tail = _log_tail(log_file)
    ret.update(result=False, changes={}, comment="{} failed to start: {}{}".format(
        name, "; ".join(said), "; last lines of {}: {}".format(log_file, tail) if tail else ""))
    return ret


def mod_watch(name, pidfile, enable=True, reload_function=None, reload_kwargs=None, prepare_function=None,
              prepare_kwargs=None, companions=None, start_timeout=10, log_file=None, **kwargs):
    """
    React to a watched change: start the service if it is down, otherwise reload it with
    ``reload_function`` (given ``reload_kwargs``) or the service module's reload.
    """
    if __salt__["openstack_ha.live_pid"](pidfile) is None:
        return running(name, pidfile, enable=enable, prepare_function=prepare_function, prepare_kwargs=prepare_kwargs,
                       companions=companions, start_timeout=start_timeout, log_file=log_file)
    ret = {"name": name, "result": True, "comment": "", "changes": {name: "reloaded"}}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "{} would have been reloaded{}".format(name, " (server state saved first)" if reload_function else "")
        return ret
    try:
        if reload_function:
            info = __salt__[reload_function](**(reload_kwargs or {}))
            ret["comment"] = "{} reloaded: {}".format(name, info)
        elif __salt__["service.reload"](name):
            ret["comment"] = "{} reloaded".format(name)
        else:
            raise CommandExecutionError("the init script's reload failed")
    except CommandExecutionError as exc:
        ret.update(result=False, changes={}, comment="{} reload failed: {}".format(name, exc))
    return ret
