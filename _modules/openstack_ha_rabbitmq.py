"""
RabbitMQ on a controller: cluster status, membership, users, vhosts, permissions, policies,
and the ``transport_url`` the OpenStack services use.

:depends: rabbitmq-server (installed by the ``openstack_ha.rabbitmq`` state).

Every call goes through ``rabbitmqctl --formatter json`` with a timeout; passwords go on stdin,
never on a command line.
"""

import base64
import fcntl
import hashlib
import hmac
import http.client
import json
import logging
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha_rabbitmq"


def __virtual__():
    return __virtualname__


def _model(model=None):
    return model or __salt__["openstack_ha.model"](secrets=True)


def nodes(model=None):
    """The controllers (entries, in order) that are RabbitMQ nodes; [] when disabled.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.nodes
    """
    return __utils__["openstack_ha_model.cluster_nodes"](_model(model), "rabbitmq")


def node_ids(model=None):
    return [n["id"] for n in nodes(model)]


def short(node_id):
    """The host part of a RabbitMQ node name for a controller id (``rabbit@<short>``).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.short <node_id>
    """
    return node_id.split(".")[0]


def node_name(node_id):
    return "rabbit@" + short(node_id)


class _CtlTimeout(CommandExecutionError):
    """``rabbitmqctl`` did not answer in time (the command may still go on inside the node)."""


def _ctl(*args, stdin=None, timeout=60, check=True):
    """Run ``rabbitmqctl ARGS``; return its stdout. Raises CommandExecutionError naming the
    command (never its stdin) and RabbitMQ's own message; :class:`_CtlTimeout`, one of them,
    when it does not answer within ``timeout`` seconds."""
    cmd = ["rabbitmqctl", "-q"] + list(args)
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _CtlTimeout("rabbitmqctl {} did not answer within {} s".format(args[0], timeout)) from None
    if check and proc.returncode != 0:
        raise CommandExecutionError("rabbitmqctl {} failed: {}".format(" ".join(args[:2]), _failure_text(proc.stderr.strip() or proc.stdout)))
    return proc.stdout


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failure_text(output):
    """The telling part of a failed ``rabbitmqctl``'s output, on one line: its ``Error`` line and
    the per-node findings of its DIAGNOSTICS section (``* unable to connect to epmd ...``), never
    the general advice between them nor the usage text it appends to some errors (a node that
    was down printed "Usage rabbitmqctl [--node <node>] ..." and nothing else of use); a bare
    ``Error:`` line with the lines that follow it up to a blank line (its message); without an
    ``Error`` line, the last three lines."""
    lines, section = [], None
    for line in _ANSI.sub("", output).splitlines():
        line = line.strip()
        if line == "Usage":
            break
        if line.startswith("Error"):
            # A bare "Error:" has its message on the next lines (`User "x" already exists`).
            section = "error-message" if line == "Error:" else "error"
            lines.append(line)
        elif section == "error-message":
            if line:
                lines.append(line)
            else:
                section = "error"
        elif line == "DIAGNOSTICS" or line.startswith("Current node details"):
            section = line
        elif section == "DIAGNOSTICS" and line.startswith("* "):
            lines.append(line)
        elif section is None and line:
            lines.append(line)
    return " ".join(lines if section else lines[-3:]) or "no output"


def peer_running_nodes(node, timeout=30):
    """
    The running members of the cluster as RabbitMQ node ``node`` (``rabbit@host``) sees them,
    asked over Erlang distribution. Raises CommandExecutionError when it does not answer.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_rabbitmq.peer_running_nodes rabbit@lab-ctrl2
    """
    import json

    out = _ctl("-n", node, "cluster_status", "--formatter", "json", timeout=timeout)
    return sorted(json.loads(out).get("running_nodes") or [])


def _json(*args, timeout=30):
    out = _ctl(*(list(args) + ["--formatter", "json"]), timeout=timeout)
    return json.loads(out) if out.strip() else None


def cluster_status(timeout=15):
    """
    This node's view of the cluster: ``{running, members, running_nodes, partitions, alarms,
    cluster_name}``; ``running`` False (and the reason) when the node does not answer.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.cluster_status
    """
    try:
        data = _json("cluster_status", timeout=timeout)
    except (CommandExecutionError, ValueError) as exc:
        return {"running": False, "reason": str(exc), "members": [], "running_nodes": [], "partitions": {}, "alarms": []}
    partitions = data.get("partitions") or {}
    if isinstance(partitions, list):
        partitions = {p.get("node"): p.get("partitions", []) for p in partitions if isinstance(p, dict)}
    alarms = []
    for alarm in data.get("alarms") or []:
        if isinstance(alarm, dict):
            alarms.append("{} on {}".format(alarm.get("type") or alarm.get("resource") or "alarm", alarm.get("node", "?")))
        else:
            alarms.append(str(alarm))
    return {"running": True, "cluster_name": data.get("cluster_name"),
            "members": sorted((data.get("disk_nodes") or []) + (data.get("ram_nodes") or [])),
            "running_nodes": sorted(data.get("running_nodes") or []), "partitions": partitions, "alarms": sorted(alarms)}


def app_running(timeout=15):
    """True when the rabbit application runs on this node (not paused, not stopped).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.app_running
    """
    try:
        _ctl("await_startup", "--timeout", "1", timeout=timeout)
        return True
    except CommandExecutionError:
        return False


def report(model=None):
    """What the beacon and ``salt-run openstack_ha.status`` show for this node: its cluster
    view, whether its app runs (a paused minority does not), and the expected members.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.report
    """
    model = _model(model)
    status = cluster_status()
    status["node"] = node_name(__grains__["id"])
    # One rabbitmqctl call (each starts an Erlang VM): a node whose app is stopped or paused
    # answers, but is not among the running nodes it reports.
    status["app_running"] = status["running"] and status["node"] in status["running_nodes"]
    status["expected"] = sorted(node_name(n) for n in node_ids(model))
    return status


def _accepts(hostport, timeout):
    """True when ``host:port`` (``[v6]:port`` for IPv6) accepts a TCP connection."""
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def metrics_view(url, node, expected, dist=None, timeout=1.0):
    """
    This node's view of its cluster from its own ``rabbitmq_prometheus`` endpoint, in
    milliseconds (``openstack_ha_rabbit_view.from_metrics`` says what it can and cannot tell).

    url
        the node's ``/metrics`` URL.
    node, expected
        this node's RabbitMQ name and the site's.
    dist
        ``host:port`` of the node's Erlang distribution listener: when given, a node whose
        endpoint does not answer counts as running (paused or stopped app) if it accepts a
        connection there.

    Raises ``CommandExecutionError`` when the endpoint accepts but does not answer within
    ``timeout`` (a node too busy to tell is not a node that is down).

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_rabbitmq.metrics_view http://10.213.0.11:15692/metrics rabbit@lab-ctrl1 '[rabbit@lab-ctrl1]'
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            text = answer.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except TimeoutError:
        raise CommandExecutionError("{} did not answer within {} s".format(url, timeout)) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise CommandExecutionError("{} did not answer within {} s".format(url, timeout)) from None
        text = None  # refused, reset: the app does not run
    except _API_FAILURES:
        text = None  # an answer that is not HTTP tells nothing either
    vm_running = text is not None or (bool(dist) and _accepts(dist, timeout))
    return __utils__["openstack_ha_rabbit_view.from_metrics"](text, node, expected, vm_running)


def metrics_target(model=None):
    """``{url, node, expected, dist}`` for :func:`metrics_view` on this controller, or None
    when ``rabbitmq:prometheus`` is off or this controller is not a RabbitMQ node.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.metrics_target
    """
    model, me = _reader_of(model, "prometheus")
    if me is None:
        return None
    rabbit = model["rabbitmq"]
    return {"url": "http://{}:{}/metrics".format(me["host"], rabbit["prometheus"]["port"]),
            "node": node_name(me["id"]), "expected": sorted(node_name(n) for n in node_ids(model)),
            "dist": "{}:{}".format(me["host"], int(rabbit["port"]) + 20000)}


def _reader_of(model, section):
    """``(model, this controller's entry)`` when ``rabbitmq:<section>`` (a plugin read by the
    beacon) is on and this controller is a RabbitMQ node, else ``(model, None)``."""
    model = model or __salt__["openstack_ha.model"]()
    me = model.get("local")
    if not (model["rabbitmq"].get(section) or {}).get("enabled") or not me or me["id"] not in node_ids(model):
        return model, None
    return model, me


def quick_report(model=None, timeout=1.0):
    """
    :func:`report` in milliseconds: from the node's own management API when
    ``rabbitmq:management`` is on and it answers (partitions included; ``connected``: the
    peers its VM is connected to, from the metrics endpoint when on), else from its metrics
    endpoint when ``rabbitmq:prometheus`` is on (without partitions: see
    ``openstack_ha_rabbit_view``), else :func:`report` itself. The master's RabbitMQ watch
    asks this first.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.quick_report
    """
    model = model or __salt__["openstack_ha.model"]()
    api, target = api_target(model), metrics_target(model)
    view = api and api_view(api["port"], api["node"], api["expected"], api["cookie_file"], timeout=timeout)
    if view:
        if target:
            # The peers its Erlang VM is connected to: a node Mnesia split from peers it is
            # connected to again is a partition left standing, safe to heal.
            try:
                view["connected"] = metrics_view(target["url"], target["node"], target["expected"], timeout=timeout)["running_nodes"]
            except CommandExecutionError:
                pass
        return view
    if target is None:
        return report(model)
    return metrics_view(target["url"], target["node"], target["expected"], target["dist"], timeout=timeout)


# ------------------------------------------------------------------- management API

MONITOR_USER = "openstack-ha-monitor"  # openstack_ha_model.RABBIT_MONITOR_USER (reserved there)
COOKIE_FILE = "/var/lib/rabbitmq/.erlang.cookie"  # the default of paths:rabbitmq_cookie
_MONITOR_LABEL = b"openstack_ha rabbitmq monitor"
_API_COLUMNS = "name,running,partitions,mem_alarm,disk_free_alarm"
# What a management API that cannot tell raises: URLError, HTTPError (401), timeouts and an
# unreadable cookie file are OSError; an answer that is not JSON ValueError, not HTTP HTTPException.
_API_FAILURES = (OSError, ValueError, http.client.HTTPException)


def _monitor_password(cookie):
    """
    The password of ``openstack-ha-monitor``, the account openstack_ha reads the management
    API with (tag ``monitoring``, no vhost): HMAC-SHA256 of a fixed label keyed by the site's
    Erlang cookie (``cookie``, str). Every node derives the same one from its cookie file, so
    no new secret is kept anywhere and none reaches a beacon's configuration (which
    ``beacons.list`` returns to the master); whoever holds the cookie controls the whole
    cluster anyway. Never logged, never returned by a CLI function.
    """
    return hmac.new(cookie.strip().encode(), _MONITOR_LABEL, hashlib.sha256).hexdigest()


def _api_get(port, path, password, timeout):
    """GET ``http://127.0.0.1:PORT/api/PATH`` as the monitor account; the decoded JSON."""
    auth = base64.b64encode("{}:{}".format(MONITOR_USER, password).encode()).decode()
    request = urllib.request.Request("http://127.0.0.1:{}/api/{}".format(int(port), path),
                                     headers={"Authorization": "Basic " + auth})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read(1024 * 1024).decode("utf-8", "replace"))


def api_view(port, node, expected, cookie_file=COOKIE_FILE, timeout=0.5):
    """
    This node's view of its cluster from its own management API (``/api/nodes`` on
    127.0.0.1): members, running nodes and partitions as Mnesia sees them, and this node's
    alarms, in milliseconds: what ``rabbitmqctl cluster_status`` tells in seconds (see
    ``openstack_ha_rabbit_view.from_api``). Logged in as ``openstack-ha-monitor`` with the
    password derived from ``cookie_file`` (root's to read).

    Returns None when the API cannot tell: not listening (app stopped or paused, plugin off),
    refused login (the account not made yet, or a cookie being rolled), no answer within
    ``timeout``, an unreadable cookie file or answer. The caller then reads the metrics
    endpoint or asks ``rabbitmqctl``.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_rabbitmq.api_view 15672 rabbit@lab-ctrl1 '[rabbit@lab-ctrl1, rabbit@lab-ctrl2]'
    """
    try:
        with open(cookie_file) as fh:
            password = _monitor_password(fh.read())
        nodes = _api_get(port, "nodes?columns=" + _API_COLUMNS, password, timeout)
    except _API_FAILURES as exc:
        log.debug("openstack_ha_rabbitmq: the management API did not tell: %s", exc.__class__.__name__)
        return None
    return __utils__["openstack_ha_rabbit_view.from_api"](nodes, node, expected)


def api_target(model=None):
    """``{port, node, expected, cookie_file}`` for :func:`api_view` on this controller, or None
    when ``rabbitmq:management`` is off or this controller is not a RabbitMQ node. No secret.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.api_target
    """
    model, me = _reader_of(model, "management")
    if me is None:
        return None
    return {"port": int(model["rabbitmq"]["management"]["port"]), "node": node_name(me["id"]),
            "expected": sorted(node_name(n) for n in node_ids(model)),
            "cookie_file": model["paths"].get("rabbitmq_cookie", COOKIE_FILE)}


def set_listener(plugin, ip, port):
    """Set ``plugin``'s ``tcp_config`` (``ip``, ``port``) in this running node's VM, before the
    plugin is enabled online: its listener then binds there, not on every address.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_rabbitmq.set_listener rabbitmq_management 127.0.0.1 15672
    """
    if not re.match(r"^rabbitmq_[a-z_]+$", str(plugin)) or not re.match(r"^[0-9a-fA-F.:]+$", str(ip)):
        raise CommandExecutionError("set_listener: bad plugin {!r} or address {!r}".format(plugin, ip))
    _ctl("eval", stdin='application:set_env({}, tcp_config, [{{ip, "{}"}}, {{port, {}}}]).\n'.format(plugin, ip, int(port)),
         timeout=60)
    return True


def join(seed, timeout=120):
    """Make this (fresh or lost) node a member of ``seed``'s cluster: stop its app, reset it,
    join and start again. Only for a node that holds nothing the cluster needs.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.join <seed>
    """
    _ctl("stop_app", timeout=timeout)
    _ctl("reset", timeout=timeout)
    _ctl("join_cluster", seed, timeout=timeout)
    _ctl("start_app", timeout=timeout)
    _ctl("await_startup", "--timeout", str(timeout), timeout=timeout + 10)
    return cluster_status()


def forget_node(node_id, timeout=120):
    """Remove ``node_id``'s node (a controller taken out of the site) from this node's cluster
    view (``rabbitmqctl forget_cluster_node``); the node must not run. Returns the cluster
    status; an already forgotten node is not an error.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_rabbitmq.forget_node lab-ctrl3
    """
    node = node_name(node_id)
    if node in cluster_status()["members"]:
        _ctl("forget_cluster_node", node, timeout=timeout)
    return cluster_status()


# Seconds a healing restart's start_app may take before it is taken as stuck: a start after a
# partition takes 3-8 s here; RabbitMQ logs its "global hang" after 20.
START_APP_WAIT = 30
# Run inside this node: drop its Erlang VM's connections to its RabbitMQ peers.
_DISCONNECT_PEERS = '[erlang:disconnect_node(N) || N <- nodes(), lists:prefix("rabbit@", atom_to_list(N))].'


def restart_app(timeout=120):
    """Restart the rabbit application on this node (heals a paused or partitioned minority).

    A node restarted after a partition can stop in its boot, in Erlang's ``global`` registry
    syncing with a peer that still holds its old connection (RabbitMQ logs "Global hang
    workaround: global state on ... seems broken" and waits on, for minutes). When start_app
    has not returned within :data:`START_APP_WAIT` seconds, this node's VM drops its
    connections to its peers, which lets ``global`` sync afresh, and the boot goes on; then
    waits for the app up to ``timeout``. Raises CommandExecutionError when it does not run by
    then.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.restart_app
    """
    _ctl("stop_app", timeout=timeout)
    try:
        _ctl("start_app", timeout=min(timeout, START_APP_WAIT))
    except _CtlTimeout:
        log.warning("openstack_ha: RabbitMQ's start_app on %s did not return within %s s (a boot stuck in Erlang's "
                    "global registry after a partition): its connections to its peers dropped", __grains__["id"],
                    START_APP_WAIT)
        _ctl("eval", stdin=_DISCONNECT_PEERS, timeout=30)
        return wait_running(max(timeout - START_APP_WAIT, 30))
    return cluster_status()


# ------------------------------------------------------------------------ Erlang cookie

# Run inside this node (``rabbitmqctl eval``, the expression on stdin: the cookie never
# appears on a command line). For every running member, the peers first and this node last:
# write the cookie file (a temporary file, mode 0400, renamed over the old one, as the
# rabbitmq user the VM runs as) and make the running VM use the new cookie. Connections
# between nodes are only authenticated when they are made, so the ones up now stay up: no
# node restarts, no message is lost, and every later connection (a CLI, a reconnecting
# peer, a restarted node) uses the new cookie. Prints "node=ok;node=<error>;...".
_ROLL_COOKIE = """
Cookie = list_to_atom("{cookie}"),
Path = "{path}",
Tmp = Path ++ ".openstack-ha",
Switch = fun() ->
    _ = file:delete(Tmp),
    case file:write_file(Tmp, atom_to_list(Cookie)) of
        ok ->
            ok = file:change_mode(Tmp, 8#400),
            ok = file:rename(Tmp, Path),
            true = erlang:set_cookie(node(), Cookie),
            ok;
        Error -> Error
    end
end,
Peers = lists:sort(rabbit_nodes:all_running()) -- [node()],
Results = [{{N, rpc:call(N, erlang, apply, [Switch, []], {rpc_ms})}} || N <- Peers] ++ [{{node(), Switch()}}],
lists:flatten(lists:join(";", [io_lib:format("~s=~p", [N, R]) || {{N, R}} <- Results])).
"""


def roll_cookie(cookie, path, timeout=60):
    """
    Roll a new Erlang cookie out to every running node of this node's cluster, one node at a
    time and without a restart (see ``_ROLL_COOKIE``); this node must run with the cookie
    in ``path`` now (the CLI uses it to get in).

    cookie
        the new cookie (letters and digits, as the pillar validator demands).
    path
        the cookie file, the same on every node.

    Returns {node name: "ok"}. Raises CommandExecutionError naming the nodes that did not
    switch (they keep the old cookie and their links; apply the state there again).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.roll_cookie <cookie> <path>
    """
    if not cookie.isalnum():
        raise CommandExecutionError("refusing to roll out a cookie that is not letters and digits only")
    if not path.startswith("/") or '"' in path or "\\" in path:
        raise CommandExecutionError("refusing to roll out to cookie file {!r}: expected an absolute path without quotes".format(path))
    out = _ctl("eval", stdin=_ROLL_COOKIE.format(cookie=cookie, path=path, rpc_ms=int(timeout * 1000 / 4)), timeout=timeout)
    results = {}
    for item in out.strip().strip('"').split(";"):
        node, _, result = item.partition("=")
        if node:
            results[node.strip()] = result.strip()
    failed = {n: r for n, r in results.items() if r != "ok"}
    if not results or failed:
        raise CommandExecutionError("the new Erlang cookie did not reach {}: {}".format(
            ", ".join(sorted(failed)) or "any node", "; ".join("{}: {}".format(n, r) for n, r in sorted(failed.items())) or out.strip()))
    return results


# ----------------------------------------------------------------- users and policies


def _users():
    return {u["user"]: sorted(u.get("tags") or []) for u in (_json("list_users") or [])}


def _vhosts():
    return sorted(v["name"] for v in (_json("list_vhosts", "name") or []))


def _permissions(vhost):
    return {p["user"]: [p["configure"], p["write"], p["read"]] for p in (_json("list_permissions", "-p", vhost) or [])}


def _policy(p):
    """A policy as RabbitMQ lists or exports it, as the state compares it (the definition as data)."""
    definition = p.get("definition")
    return {"pattern": p["pattern"], "apply-to": p.get("apply-to", "all"), "priority": int(p.get("priority", 0)),
            "definition": json.loads(definition) if isinstance(definition, str) else definition}


def _policies(vhost):
    return {p["name"]: _policy(p) for p in _json("list_policies", "-p", vhost) or []}


def _password_ok(user, password):
    try:
        _ctl("authenticate_user", user, stdin=password + "\n", timeout=30)
        return True
    except CommandExecutionError:
        return False


def _create(*args, stdin=None):
    """Run a rabbitmqctl create (``add_user``, ``add_vhost``). Returns True when this call
    created it, False when it already existed: controllers applied at the same time race for
    the same account, and the loser converges the rest (password, tags) like any other run."""
    try:
        _ctl(*args, stdin=stdin)
        return True
    except CommandExecutionError as exc:
        if "already exists" in str(exc) or "already_exists" in str(exc):
            return False
        raise


def _monitor_password_ok(port, password):
    """Whether the monitor account logs in to the management API on ``port`` with
    ``password`` (milliseconds: no Erlang VM started); None when the API does not answer."""
    try:
        _api_get(port, "whoami", password, 5)
        return True
    except urllib.error.HTTPError as exc:
        return False if exc.code == 401 else None
    except _API_FAILURES:
        return None


def _password_check(name, password, api_port):
    """:func:`_password_ok`, through the management API for the monitor account when it answers."""
    if name == MONITOR_USER and api_port:
        ok = _monitor_password_ok(api_port, password)
        if ok is not None:
            return ok
    return _password_ok(name, password)


# RabbitMQ's stored password: base64 of a 4-byte salt followed by the digest of the salt and the
# password's UTF-8 bytes, by the user's hashing module (RabbitMQ's "Credentials and Passwords").
_PASSWORD_DIGESTS = {"rabbit_password_hashing_sha256": hashlib.sha256,
                     "rabbit_password_hashing_sha512": hashlib.sha512,
                     "rabbit_password_hashing_md5": hashlib.md5}


def password_matches(password, password_hash, algorithm="rabbit_password_hashing_sha256"):
    """Whether ``password`` is the one RabbitMQ stores as ``password_hash`` (its exported
    form) with hashing module ``algorithm``. None when that cannot be told here (an unknown
    module, a hash not of that form, no password set): ask RabbitMQ instead."""
    digest = _PASSWORD_DIGESTS.get(algorithm or "rabbit_password_hashing_sha256")
    try:
        raw = base64.b64decode(password_hash or "", validate=True)
    except (ValueError, TypeError):
        return None
    if digest is None or len(raw) != 4 + digest().digest_size:
        return None
    salt, stored = raw[:4], raw[4:]
    return hmac.compare_digest(digest(salt + password.encode("utf-8")).digest(), stored)


def _definitions_view(definitions, vhosts, users):
    """:func:`_read_accounts`'s answer from RabbitMQ's exported ``definitions`` (one
    ``rabbitmqctl export_definitions``): the users' tags, the vhosts, the permissions and
    policies of the ``vhosts`` that exist, and for each of ``users`` that exists whether its
    password matches (None where only RabbitMQ can tell). The password hashes stay in here."""
    found = {u["name"]: u for u in definitions.get("users") or []}
    names = sorted(v["name"] for v in definitions.get("vhosts") or [])
    permissions = {v: {} for v in vhosts if v in names}
    for p in definitions.get("permissions") or []:
        if p.get("vhost") in permissions:
            permissions[p["vhost"]][p["user"]] = [p["configure"], p["write"], p["read"]]
    policies = {v: {} for v in vhosts if v in names}
    for p in definitions.get("policies") or []:
        if p.get("vhost") in policies:
            policies[p["vhost"]][p["name"]] = _policy(p)

    def tags(user):
        value = user.get("tags") or []
        return sorted(t for t in (value.split(",") if isinstance(value, str) else value) if t)
    return {"users": {name: tags(u) for name, u in found.items()}, "vhosts": names,
            "permissions": permissions, "policies": policies,
            "passwords": {name: password_matches(want["password"], found[name].get("password_hash"), found[name].get("hashing_algorithm"))
                          for name, want in users.items() if name in found}}


def _export_definitions():
    """RabbitMQ's definitions as data, from one ``rabbitmqctl`` (one Erlang VM where reading
    users, vhosts, permissions, policies and each password took one each). The answer holds
    password hashes: no message of this function ever quotes it."""
    out = _ctl("export_definitions", "-", "--format", "json", timeout=60)
    start = out.find("{")
    try:
        return json.loads(out[start:]) if start >= 0 else None
    except ValueError:
        return None


def _read_accounts(vhosts, users, api_port=None):
    """What RabbitMQ has now, every question at once: ``{users, vhosts, permissions: {vhost:
    ...}, policies: {vhost: ...}, passwords: {user: True when the pillar's password logs in}}``
    Each ``rabbitmqctl`` starts an Erlang VM (about 3 s, half a second of CPU), and a
    converged apply was mostly these: all of it comes from one ``export_definitions``, the
    passwords checked against the exported hashes here. Where that fails, the questions are
    asked one by one, together (the monitor account's password through the management API on
    ``api_port`` when it answers). The users and vhosts must answer (CommandExecutionError);
    the permissions and policies of a vhost that does not exist yet, and the passwords of
    users that do not, are missing from the answer."""
    import concurrent.futures

    try:
        definitions = _export_definitions()
    except CommandExecutionError:
        definitions = None  # RabbitMQ's own message comes from the questions below
    try:
        now = _definitions_view(definitions, vhosts, users) if isinstance(definitions, dict) else None
    except (KeyError, TypeError, ValueError):
        now = None  # an export of a form not known here: the questions below
    if now is not None:
        unknown = [name for name, ok in now["passwords"].items() if ok is None]
        for name in unknown:  # a hashing module not known here: RabbitMQ tells
            now["passwords"][name] = _password_check(name, users[name]["password"], api_port)
        return now

    def quiet(fun, *args):
        try:
            return fun(*args)
        except CommandExecutionError:
            return None
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 + 2 * len(vhosts) + len(users)) as pool:
        found_users, found_vhosts = pool.submit(_users), pool.submit(_vhosts)
        permissions = {v: pool.submit(quiet, _permissions, v) for v in vhosts}
        policies = {v: pool.submit(quiet, _policies, v) for v in vhosts}
        passwords = {name: pool.submit(_password_check, name, user["password"], api_port) for name, user in users.items()}
        return {"users": found_users.result(), "vhosts": found_vhosts.result(),
                "permissions": {v: f.result() for v, f in permissions.items()},
                "policies": {v: f.result() for v, f in policies.items()},
                "passwords": {name: f.result() for name, f in passwords.items()}}


def ensure_accounts(model=None, test=False):
    """
    Make users, vhosts, permissions and policies match the model's ``rabbitmq`` section.
    Policies are compared as data (pattern, apply-to, priority, definition), not as strings.
    Returns ``{what: change}`` for what changed (or would with ``test``); no password ever.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.ensure_accounts
    """
    model = _model(model)
    rabbit = model["rabbitmq"]
    changes = {}
    wanted_vhosts = sorted({u.get("vhost", "/") for u in (rabbit.get("users") or {}).values()}
                           | {p.get("vhost", "/") for p in (rabbit.get("policies") or {}).values()})
    wanted_users = dict(rabbit.get("users") or {})
    management = rabbit.get("management") or {}
    if management.get("enabled") and rabbit.get("cookie"):
        # openstack_ha's own reader of the management API: no vhost, so no permission at all.
        wanted_users[MONITOR_USER] = {"password": _monitor_password(rabbit["cookie"]), "tags": ["monitoring"], "vhost": None}
    now = _read_accounts(wanted_vhosts, wanted_users, api_port=management.get("port") if management.get("enabled") else None)
    users, vhosts = now["users"], now["vhosts"]
    for vhost in wanted_vhosts:
        if vhost not in vhosts:
            if test or _create("add_vhost", vhost):
                changes["vhost " + vhost] = "created"
            if not test:
                vhosts.append(vhost)
    for name, user in sorted(wanted_users.items()):
        created = False
        if name not in users:
            created = test or _create("add_user", name, stdin=user["password"] + "\n")
            if created:
                changes["user " + name] = "created"
            if not test:
                # It exists now, created here or by another controller a moment ago.
                users = _users()
        # A user another controller created a moment ago was not there to be asked about.
        if not created and not (now["passwords"].get(name) if name in now["users"] else _password_ok(name, user["password"])):
            changes["user " + name] = "password updated"
            if not test:
                _ctl("change_password", name, stdin=user["password"] + "\n")
        tags = sorted(user.get("tags") or [])
        if users.get(name, []) != tags:
            changes["user {} tags".format(name)] = tags
            if not test:
                _ctl("set_user_tags", name, *tags)
        vhost = user.get("vhost", "/")
        if vhost is None:
            continue
        perms = (now["permissions"].get(vhost) or {}) if vhost in vhosts else {}
        if perms.get(name) != [".*", ".*", ".*"]:
            changes["permissions {} on {}".format(name, vhost)] = "configure/write/read .*"
            if not test:
                _ctl("set_permissions", "-p", vhost, name, ".*", ".*", ".*")
    for name, policy in sorted((rabbit.get("policies") or {}).items()):
        vhost = policy.get("vhost", "/")
        want = {"pattern": policy["pattern"], "apply-to": policy.get("apply-to", "all"),
                "priority": int(policy.get("priority", 0)), "definition": policy["definition"]}
        have = ((now["policies"].get(vhost) or {}) if vhost in vhosts else {}).get(name)
        if have != want:
            changes["policy {} on {}".format(name, vhost)] = "created" if have is None else "updated"
            if not test:
                _ctl("set_policy", "-p", vhost, "--priority", str(want["priority"]), "--apply-to", want["apply-to"],
                    name, want["pattern"], json.dumps(want["definition"], sort_keys=True))
    return changes


def transport_url(model=None, user=None):
    """
    The oslo.messaging ``transport_url`` for the OpenStack services: every RabbitMQ node of
    the site, ``rabbit://USER:PASSWORD@host1:port,USER:PASSWORD@host2:port/VHOST``. ``user``
    defaults to the first user in the pillar.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.transport_url
    """
    model = _model(model)
    rabbit = model["rabbitmq"]
    users = rabbit.get("users") or {}
    if not users:
        raise CommandExecutionError("openstack_ha:rabbitmq:users is empty: no account for a transport_url")
    name = user or sorted(users)[0]
    if name not in users:
        raise CommandExecutionError("unknown RabbitMQ user {!r} (known: {})".format(name, ", ".join(sorted(users))))
    cred = "{}:{}".format(urllib.parse.quote(name, safe=""), urllib.parse.quote(users[name]["password"], safe=""))
    hosts = ",".join("{}@{}:{}".format(cred, n["host"], rabbit["port"]) for n in nodes(model))
    vhost = users[name].get("vhost", "/")
    return "rabbit://{}/{}".format(hosts, urllib.parse.quote(vhost.lstrip("/") if vhost != "/" else "", safe=""))


def wait_running(timeout=120):
    """Wait until this node's app runs; return its cluster status or raise.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.wait_running
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app_running(timeout=10):
            return cluster_status()
        time.sleep(1)
    raise CommandExecutionError("RabbitMQ did not start on {} within {} s".format(__grains__["id"], timeout))


def vm_alive():
    """
    True when this node's Erlang VM runs (from the init script's pid file), whether or not
    it answers ``rabbitmqctl`` in time (a busy node is slow, not down).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.vm_alive
    """
    return __salt__["openstack_ha.live_pid"](PIDFILE) is not None


PIDFILE = "/run/rabbitmq/pid"
LOCKFILE = "/run/openstack-ha-rabbitmq-start.lock"


def start_unless_busy(timeout=120):
    """
    :func:`start`, unless a state run is in progress on this controller (its first apply
    installs, joins and restarts RabbitMQ: the loop must not start it meanwhile). Returns
    ``{"started": False, "why": ...}`` then, else :func:`start`'s answer. The loop's restart.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.start_unless_busy
    """
    busy = [j for j in __salt__["saltutil.running"]() if str(j.get("fun", "")).startswith("state.")]
    if busy:
        return {"started": False, "why": "a state run is in progress ({}): left to it".format(busy[0].get("jid"))}
    return start(timeout)


def start(timeout=120):
    """
    Start this node's RabbitMQ through its init system when it is not running at all, and
    wait until its app runs; return the cluster status. A paused node is left alone (it
    resumes by itself). Callers (the state, the remediation loop) are serialised by a lock
    file: two init-script starts at once make the loser delete the winner's pid file.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.start
    """
    with open(LOCKFILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if cluster_status(timeout=10)["running"]:
                return cluster_status()
            if not vm_alive():
                if not __salt__["service.start"]("rabbitmq-server") and not vm_alive():
                    raise CommandExecutionError("the rabbitmq-server init script failed on {}".format(__grains__["id"]))
            return wait_running(timeout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def oslo_messaging(model=None, user=None):
    """
    The oslo.messaging settings an OpenStack service on this site should use:
    ``{"transport_url": ..., "rabbit_quorum_queue": True, "amqp_durable_queues": True,
    "rabbit_ha_queues": False}``. Quorum queues are declared by the clients (RabbitMQ 3.x has
    no per-vhost default queue type), so this is where the OpenStack vhost gets them.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_rabbitmq.oslo_messaging
    """
    return {"transport_url": transport_url(model, user), "rabbit_quorum_queue": True,
            "amqp_durable_queues": True, "rabbit_ha_queues": False}
