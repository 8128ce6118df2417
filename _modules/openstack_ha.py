"""
The openstack_ha model on a controller: defaults merged under the pillar, validated.

:depends: the ``openstack_ha_model`` utils module (``_utils/``), synced with ``saltutil.sync_all``.

Every ``openstack_ha`` state renders from :func:`model`; an operator checks a pillar with
``salt-call openstack_ha.validate`` (or ``salt '*ctrl*' openstack_ha.validate`` from the master).
"""

import copy
import logging
import threading
import time

import salt.utils.yaml
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha"
DEFAULTS_URL = "salt://openstack_ha/defaults.yaml"
# How long a parsed defaults.yaml is reused before the fileserver is asked again (seconds).
# Each fileserver request costs the minion tens of milliseconds of CPU (Salt loads the minion's
# key to sign it) and a round trip to a master that may be busy; the master's status gather
# calls model() every minute. The states never use this copy (map.jinja passes the file it
# rendered). Salt 3008 loads the modules afresh for every job, executing this file again in
# the same module object: the cache is taken over from the previous execution, not reset.
DEFAULTS_TTL = 60
_DEFAULTS = globals().get("_DEFAULTS") or {"time": None, "value": None}
_DEFAULTS_LOCK = globals().get("_DEFAULTS_LOCK") or threading.Lock()


def __virtual__():
    if "openstack_ha_model.build" not in __utils__:
        return (False, "openstack_ha: the openstack_ha_model utils module is missing; run saltutil.sync_all")
    problem = __utils__["openstack_ha_model.salt_release_problem"]()
    if problem:
        return (False, problem)
    return __virtualname__


def _load_defaults():
    """The parsed ``defaults.yaml`` from the fileserver, at most :data:`DEFAULTS_TTL` seconds
    old (a deep copy: callers may change it). Raises ``CommandExecutionError`` when the
    fileserver has no such file."""
    with _DEFAULTS_LOCK:
        now = time.monotonic()
        if _DEFAULTS["time"] is None or now - _DEFAULTS["time"] > DEFAULTS_TTL:
            text = __salt__["cp.get_file_str"](DEFAULTS_URL)
            if not text:
                raise CommandExecutionError("openstack_ha: cannot read {} from the fileserver".format(DEFAULTS_URL))
            _DEFAULTS["value"], _DEFAULTS["time"] = salt.utils.yaml.safe_load(text), now
        return copy.deepcopy(_DEFAULTS["value"])


def _layered_defaults(defaults):
    """Return the ``openstack_ha`` defaults with this OS family's packages and paths merged in."""
    try:
        return __utils__["openstack_ha_model.layer_defaults"](defaults, __grains__.get("os_family", "Debian"))
    except ValueError as exc:
        raise CommandExecutionError("openstack_ha: {}".format(exc)) from None


def _pillar():
    """This minion's raw ``openstack_ha`` pillar, unmasked where the Salt release masks it."""
    try:
        # Salt 3008 masks pillar values by default; the model needs the real ones.
        return __salt__["pillar.get"]("openstack_ha", None, unmask=True)
    except TypeError:  # releases without masking (3006, 3007): no such argument
        return __salt__["pillar.get"]("openstack_ha", None)


def model(defaults=None, pillar=None, secrets=False):
    """
    Return the merged, validated ``openstack_ha`` model for this minion.

    defaults
        the parsed ``defaults.yaml`` (``map.jinja`` passes it); read from the fileserver if omitted.
    pillar
        a model to check instead of this minion's ``openstack_ha`` pillar.
    secrets
        ``True`` only for the states and modules that render or use them (``map.jinja``, the
        Galera and RabbitMQ modules). By default every secret (passwords, the Erlang cookie,
        TLS keys) is replaced by ``**********``: what this function returns to the master's CLI
        travels over the event bus and lands in the job cache.

    The result carries ``local``: this minion's controller entry with its ``index`` (0 for the
    first controller), or ``None`` when the minion is not one of the site's controllers.

    Raises ``CommandExecutionError`` naming every invalid key path.

    CLI Example:

    .. code-block:: bash

        salt-call openstack_ha.model
    """
    if defaults is None:
        defaults = _load_defaults()
    if pillar is None:
        pillar = _pillar()
    try:
        merged = __utils__["openstack_ha_model.build"](_layered_defaults(defaults), copy.deepcopy(pillar))
    except Exception as exc:  # ModelError, from a module loaded by Salt's loader
        if type(exc).__name__ != "ModelError":
            raise
        raise CommandExecutionError(str(exc)) from None
    merged["local"] = None
    for index, ctrl in enumerate(merged["controllers"]):
        if ctrl["id"] == __grains__["id"]:
            merged["local"] = dict(ctrl, index=index)
    return merged if secrets is True else __utils__["openstack_ha_model.redact"](merged)


def validate(pillar=None):
    """
    Check this minion's ``openstack_ha`` pillar (or ``pillar``) and say what is wrong.

    Returns a one-line summary when valid; raises ``CommandExecutionError`` listing every
    problem with its key path otherwise.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha.validate
    """
    merged = model(pillar=pillar)
    return "openstack_ha pillar for site {!r} is valid: {} controllers, {} VIPs, {} services{}".format(
        merged["site"],
        len(merged["controllers"]),
        len(merged["vips"]),
        len(merged["services"]),
        "" if merged["local"] else " (this minion is not one of its controllers)",
    )


def listen_vips(merged, service):
    """
    The VIP names HAProxy binds ``service`` on, from a model returned by :func:`model`: the
    service's own ``vip`` and every VIP a Keystone catalog interface points at (so each
    endpoint of the ``vip`` mode reaches the service). Used by the HAProxy template.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha.listen_vips <merged> <service>
    """
    return __utils__["openstack_ha_model.listen_vips"](merged, service)


def live_pid(pidfile):
    """
    Return the PID in ``pidfile`` if that process is alive (not a zombie), else ``None``.

    Controllers may share a PID space with other hosts' processes (containers, the lab's
    namespaces), so liveness comes from the service's own pidfile, never from a process-name
    search.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha.live_pid /run/keepalived.pid
    """
    try:
        with open(pidfile) as fh:
            pid = int(fh.read().split()[0])
        with open("/proc/{}/status".format(pid)) as fh:
            for line in fh:
                if line.startswith("State:"):
                    return None if "Z" in line.split()[1] else pid
    except (OSError, ValueError, IndexError):
        return None
    return None


# linux/capability.h: the capabilities this module is asked about.
_CAPABILITIES = {"sys_resource": 24, "sys_nice": 23, "net_admin": 12}


def capable(name, status_path="/proc/self/status"):
    """
    True when this process (the minion, root, and so every service it starts) holds capability
    ``name`` (``sys_resource``, ``sys_nice`` or ``net_admin``) in its effective set: a
    container may withhold some from root.

    keepalived's real-time scheduling needs ``sys_resource``: on every reload keepalived 2.2
    drops its VRRP process's real-time CPU limit to 0 and then cannot raise it again without
    it, so the kernel kills the VRRP process and every VIP it held moves away and back.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha.capable sys_resource
    """
    if name not in _CAPABILITIES:
        raise CommandExecutionError("unknown capability {!r}: one of {}".format(name, ", ".join(sorted(_CAPABILITIES))))
    try:
        with open(status_path) as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAPABILITIES[name] & 1)
    except (OSError, ValueError, IndexError) as exc:
        raise CommandExecutionError("cannot read this process's capabilities from {}: {}".format(status_path, exc))
    raise CommandExecutionError("{} has no CapEff line".format(status_path))


def job_loaders():
    """
    How this minion's jobs got their loaders since it started: ``{"reused": N, "rebuilt": M}``
    (the loop's questions and HAProxy changes run on the minion's loaders, every other job
    rebuilds them: ``_utils/openstack_ha_job_loaders.py``). Raises when the wrapper is not in
    this minion's process (a minion that forks per job, or a Salt that lacks what it needs).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha.job_loaders
    """
    counts = __utils__["openstack_ha_job_loaders.stats"]()
    if counts is None:
        raise CommandExecutionError("the loop's jobs rebuild this minion's loaders: the wrapper is not installed in its process "
                                    "(grains.get openstack_ha_job_loaders)")
    return counts


def controller_report(quick=False):
    """
    This controller's own view for ``salt-run openstack_ha.status``: its HAProxy backends,
    which VIPs it holds, and whether HAProxy and keepalived run. ``quick``: RabbitMQ from its
    metrics endpoint (``openstack_ha_rabbitmq.quick_report``: milliseconds, no partitions)
    instead of ``rabbitmqctl`` (an Erlang VM started: seconds, half a second of CPU).

    Returns ``{'id', 'site', 'haproxy': {'running', 'serving', 'servers'}, 'keepalived':
    {'running'}, 'vips': [names held], 'maintenance': [markers present], 'pending_restart':
    {component: [files changed since it started]}}`` and, on a Galera node, ``'galera'`` (its
    wsrep state, cluster size and UUID, health); never secrets.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha.controller_report
    """
    merged = model()
    paths, report = merged["paths"], {"id": __grains__["id"], "site": merged["site"]}
    report["haproxy"] = {
        "running": live_pid(paths["haproxy_pidfile"]) is not None,
        "serving": __salt__["openstack_ha_haproxy.is_serving"](merged["haproxy"]["socket"]),
        "servers": {},
    }
    if report["haproxy"]["serving"]:
        report["haproxy"]["servers"] = __salt__["openstack_ha_haproxy.servers"](merged["haproxy"]["socket"])
    report["keepalived"] = {"running": live_pid(paths["keepalived_pidfile"]) is not None}
    # The same question the runner and the VIP beacon ask, answered the same way.
    report["vips"] = sorted(__salt__["openstack_ha_probe.vips_held"](__utils__["openstack_ha_model.vip_addresses"](merged)))
    if any(n["id"] == __grains__["id"] for n in __utils__["openstack_ha_model.galera_nodes"](merged)):
        status = __salt__["openstack_ha_galera.local_status"](merged) or {"reason": "health daemon not answering"}
        report["galera"] = {k: status.get(k) for k in ("running", "state", "cluster_status", "cluster_size", "cluster_uuid",
                                                        "healthy", "reason", "last_committed", "maintenance")}
    if __grains__["id"] in __salt__["openstack_ha_rabbitmq.node_ids"](merged):
        rabbit = __salt__["openstack_ha_rabbitmq.quick_report" if quick else "openstack_ha_rabbitmq.report"](merged)
        # ``expected`` (the site's nodes): what ``members`` is judged against where the quick
        # report has none (the metrics endpoint does not export them).
        report["rabbitmq"] = {k: rabbit.get(k) for k in ("node", "running", "app_running", "members", "running_nodes",
                                                          "partitions", "alarms", "expected")}
    report["maintenance"] = sorted(k for k, present in __salt__["openstack_ha_maintenance.state"](merged).items() if present)
    # {component: [files changed since its process started]}: file names only, never contents.
    report["pending_restart"] = __salt__["openstack_ha_maintenance.pending_restarts"](merged)
    return report
