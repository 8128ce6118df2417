"""
Planned work on one controller, its controller-side half: the markers that make keepalived
give this controller's VIPs away and Galera's health daemon report the node unavailable, the
restart of one component, and the components whose running process is older than its
configuration or program (a restart is pending).

The master's side (``salt-run openstack_ha.maintenance``, ``salt-run
openstack_ha.rolling_restart``) decides when each of these may run and waits for its effect.

:depends: the ``openstack_ha``, ``openstack_ha_galera`` and ``openstack_ha_rabbitmq`` modules.
"""

import glob
import os
import subprocess
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_maintenance"

COMPONENTS = ("haproxy", "keepalived", "galera", "rabbitmq")


def __virtual__():
    return __virtualname__


def _model():
    return __salt__["openstack_ha.model"]()


def _galera_node(model):
    return any(n["id"] == __grains__["id"] for n in __utils__["openstack_ha_model.galera_nodes"](model))


def _markers(model):
    """``{component: marker path}`` of this controller: keepalived's always, Galera's on a node."""
    found = {"keepalived": model["paths"]["keepalived_maintenance_file"]}
    if _galera_node(model):
        found["galera"] = model["paths"]["galera_maintenance_file"]
    return found


def _keepalived_drop(path):
    """The priority drop keepalived reads from its maintenance file (0: none, or no file)."""
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _write(path, text):
    tmp = "{}.tmp".format(path)
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)  # keepalived reads the file when it changes: never half-written


def state(model=None):
    """
    Which maintenance markers are in force on this controller: ``{"keepalived": bool,
    "galera": bool}`` (``galera`` only on a Galera node); keepalived's is in force when its
    file holds a priority drop other than 0. ``model``: this controller's model when the
    caller has it (else it is built).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_maintenance.state
    """
    found = {}
    for name, path in _markers(model or _model()).items():
        found[name] = _keepalived_drop(path) != 0 if name == "keepalived" else os.path.exists(path)
    return found


def enter(drop=254, reason="planned maintenance", markers=None):
    """
    Put this controller in maintenance: keepalived's priority drops by ``drop`` at once (its
    track file; the runner picks the drop that puts it just below the controller that should
    take the VIPs, so that one alone takes each VIP before this one lets go; 254, the default,
    means FAULT) and the Galera health daemon answers 503 (HAProxy moves the writer role
    away). ``markers``: only these (``keepalived``, ``galera``; default both). Idempotent.
    Returns ``{marker: "written" | "present"}``.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl2 openstack_ha_maintenance.enter 15
    """
    try:
        drop = int(drop)
    except (TypeError, ValueError):
        raise CommandExecutionError("drop must be an integer 1-254, got {!r}".format(drop))
    if not 1 <= drop <= 254:
        raise CommandExecutionError("drop must be an integer 1-254, got {}".format(drop))
    done = {}
    for name, path in _markers(_model()).items():
        if markers is not None and name not in markers:
            continue
        present = _keepalived_drop(path) == drop if name == "keepalived" else os.path.exists(path)
        if present:
            done[name] = "present"
            continue
        text = "{}\n".format(drop) if name == "keepalived" else "{} {}\n".format(int(time.time()), str(reason).replace("\n", " ")[:200])
        try:
            _write(path, text)
        except OSError as exc:
            raise CommandExecutionError("cannot write the {} maintenance marker {}: {}".format(name, path, exc))
        done[name] = "written"
    return done


def leave(markers=None):
    """
    End this controller's maintenance: keepalived's file holds 0 again (its priority is back at
    once and it preempts its VIPs back, make before break), the Galera marker is removed (the
    health daemon answers 200 again once the node is Synced). ``markers``: only these
    (``keepalived``, ``galera``; default both). Idempotent. Returns ``{marker: "removed" |
    "absent"}``.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl2 openstack_ha_maintenance.leave
    """
    done = {}
    for name, path in _markers(_model()).items():
        if markers is not None and name not in markers:
            continue
        try:
            if name == "keepalived":  # keepalived watches this file: it holds 0, it is not removed
                done[name] = "removed" if _keepalived_drop(path) else "absent"
                if _keepalived_drop(path) or not os.path.exists(path):
                    _write(path, "0\n")
            else:
                os.remove(path)
                done[name] = "removed"
        except FileNotFoundError:
            done[name] = "absent"
        except OSError as exc:
            raise CommandExecutionError("cannot remove the {} maintenance marker {}: {}".format(name, path, exc))
    return done


# --------------------------------------------------------------------------- pending restarts


def _boot_time():
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise CommandExecutionError("no btime in /proc/stat")


def started_at(pid):
    """The time (epoch seconds) process ``pid`` started, from /proc; None when it is gone."""
    try:
        with open("/proc/{}/stat".format(pid)) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is the state (field 3 of stat); starttime is field 22.
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _newer_than(paths, since):
    """The paths (files, or every file of a directory) modified after ``since``."""
    found = []
    for path in paths:
        files = sorted(glob.glob(os.path.join(path, "*"))) if os.path.isdir(path) else [path]
        for name in files:
            try:
                if os.stat(name).st_mtime > since + 1:  # mtimes and start times are both coarse
                    found.append(name)
            except OSError:
                continue
    return found


def _processes(model):
    """``{component: (pid or None, [files its running process read])}`` for this controller."""
    paths = model["paths"]
    haproxy_worker = __salt__["openstack_ha_haproxy.worker_pid"](model["haproxy"]["socket"])
    found = {
        # A reload starts a new HAProxy worker: the worker's age is the configuration's.
        "haproxy": (haproxy_worker, [paths["haproxy_config"], paths["haproxy_secrets_config"], "/usr/sbin/haproxy"]),
        # The state reloads keepalived (SIGHUP) on a configuration change: only its program counts.
        "keepalived": (__salt__["openstack_ha.live_pid"](paths["keepalived_pidfile"]), ["/usr/sbin/keepalived"]),
    }
    if _galera_node(model):
        pid = __salt__["openstack_ha.live_pid"](paths["galera_pidfile"].replace("{node}", __grains__["id"]))
        found["galera"] = (pid, [paths["galera_config"], paths["galera_secrets_config"], paths["galera_tls_dir"],
                                 "/usr/sbin/mariadbd", paths["galera_provider"]])
    if __grains__["id"] in __salt__["openstack_ha_rabbitmq.node_ids"](model):
        pid = __salt__["openstack_ha.live_pid"]("/run/rabbitmq/pid")
        found["rabbitmq"] = (pid, ["/etc/rabbitmq/rabbitmq.conf", "/etc/rabbitmq/rabbitmq-env.conf",
                                   "/usr/lib/rabbitmq/bin/rabbitmq-server"])
    return found


def pending_restarts(model=None):
    """
    The components of this controller whose running process started before a file it read
    changed (its configuration, or its program: a package upgrade): ``{component: [changed
    files]}``. A component that does not run is not listed (it reads the new files when it
    starts).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_maintenance.pending_restarts
    """
    model = model or _model()
    pending = {}
    for component, (pid, files) in _processes(model).items():
        since = started_at(pid) if pid else None
        if since is None:
            continue
        changed = _newer_than(files, since)
        if changed:
            pending[component] = changed
    return pending


# ------------------------------------------------------------------------------- restarts


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise CommandExecutionError("{} on {} within {} s".format(what, __grains__["id"], timeout))


def _restart_init(name, pidfile, timeout):
    """Restart a SysV/systemd service judged by its pidfile: a new live process, not the old."""
    old = __salt__["openstack_ha.live_pid"](pidfile)
    __salt__["service.stop"](name)
    _wait(lambda: old is None or __salt__["openstack_ha.live_pid"](pidfile) != old, timeout, "{} did not stop".format(name))
    __salt__["service.start"](name)
    _wait(lambda: __salt__["openstack_ha.live_pid"](pidfile) not in (None, old), timeout, "{} did not start again".format(name))
    return __salt__["openstack_ha.live_pid"](pidfile)


def restart(component, timeout=300):
    """
    Restart one component of this controller and wait until it is healthy again: HAProxy
    (its server state saved first, so runtime drains survive) and keepalived through their
    init scripts, Galera (a clean stop, a start that joins by IST, then Synced), RabbitMQ (a
    clean stop, a start that rejoins the cluster, then running). Returns ``{"component",
    "pid", "took"}``; raises CommandExecutionError naming what did not come back.

    Run it through ``salt-run openstack_ha.rolling_restart``, which puts the controller in
    maintenance first and checks the whole site between two controllers.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl2 openstack_ha_maintenance.restart galera
    """
    if component not in COMPONENTS:
        raise CommandExecutionError("component must be one of {}, got {!r}".format(", ".join(COMPONENTS), component))
    model = _model()
    paths, started = model["paths"], time.monotonic()
    if component == "haproxy":
        __salt__["openstack_ha_haproxy.save_server_state"](model["haproxy"]["socket"], model["haproxy"]["state_file"],
                                                           paths["haproxy_config"])
        pid = _restart_init("haproxy", paths["haproxy_pidfile"], timeout)
        _wait(lambda: __salt__["openstack_ha_haproxy.is_serving"](model["haproxy"]["socket"]), timeout, "HAProxy did not serve")
    elif component == "keepalived":
        pid = _restart_init("keepalived", paths["keepalived_pidfile"], timeout)
    elif component == "galera":
        if not _galera_node(model):
            raise CommandExecutionError("{} is not a Galera node".format(__grains__["id"]))
        __salt__["openstack_ha_galera.stop"](model)
        __salt__["openstack_ha_galera.start"](model=model, timeout=timeout)
        __salt__["openstack_ha_galera.wait_synced"](model, timeout)
        pid = __salt__["openstack_ha.live_pid"](paths["galera_pidfile"].replace("{node}", __grains__["id"]))
    else:
        if __grains__["id"] not in __salt__["openstack_ha_rabbitmq.node_ids"](model):
            raise CommandExecutionError("{} is not a RabbitMQ node".format(__grains__["id"]))
        proc = subprocess.run(["rabbitmqctl", "shutdown"], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 and __salt__["openstack_ha.live_pid"]("/run/rabbitmq/pid"):
            raise CommandExecutionError("rabbitmqctl shutdown failed: {}".format((proc.stderr or proc.stdout).strip()[-300:]))
        _wait(lambda: __salt__["openstack_ha.live_pid"]("/run/rabbitmq/pid") is None, timeout, "RabbitMQ did not stop")
        __salt__["openstack_ha_rabbitmq.start"](timeout)
        pid = __salt__["openstack_ha.live_pid"]("/run/rabbitmq/pid")
    return {"component": component, "pid": pid, "took": round(time.monotonic() - started, 1)}


def decommission(timeout=300):
    """
    Take this controller out of its site for good (it is being replaced; run it after
    ``salt-run openstack_ha.maintenance``): Galera stopped cleanly (the node leaves the
    cluster's view), RabbitMQ reset (it leaves the cluster) and stopped, keepalived and HAProxy
    stopped. The markers stay. Returns what was done, per component.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl3 openstack_ha_maintenance.decommission
    """
    model = _model()
    paths, done = model["paths"], {}
    if _galera_node(model):
        __salt__["openstack_ha_galera.stop"](model)
        done["galera"] = "stopped (left the cluster)"
    if __grains__["id"] in __salt__["openstack_ha_rabbitmq.node_ids"](model) and \
            __salt__["openstack_ha.live_pid"]("/run/rabbitmq/pid"):
        for args in (["stop_app"], ["reset"], ["shutdown"]):
            proc = subprocess.run(["rabbitmqctl"] + args, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                raise CommandExecutionError("rabbitmqctl {} failed: {}".format(args[0], (proc.stderr or proc.stdout).strip()[-300:]))
        done["rabbitmq"] = "reset (left the cluster) and stopped"
    for name, pidfile in (("keepalived", paths["keepalived_pidfile"]), ("haproxy", paths["haproxy_pidfile"])):
        pid = __salt__["openstack_ha.live_pid"](pidfile)
        if pid:
            __salt__["service.stop"](name)
            _wait(lambda: __salt__["openstack_ha.live_pid"](pidfile) is None, timeout, "{} did not stop".format(name))
            done[name] = "stopped"
    return done
