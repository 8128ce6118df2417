"""
MariaDB Galera on a controller: status, start/join/bootstrap, position recovery, users.

:depends: mariadb-server, galera-4 (the ``openstack_ha.galera`` state installs them) and the
    node health daemon it runs (``/status`` on ``galera:health_port``).

Every SQL statement goes to the local server over its unix socket as root (socket
authentication, no password), on stdin, so no secret ever appears in a process list;
errors are reported with secrets masked.
"""

import ipaddress
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha_galera"

RECOVERED_RE = re.compile(r"WSREP: Recovered position:\s*([0-9a-f-]{36}):(-?\d+)")


def __virtual__():
    return __virtualname__


def _model(model=None):
    return model or __salt__["openstack_ha.model"](secrets=True)


def _nodes(model):
    return __utils__["openstack_ha_model.galera_nodes"](model)


def node_ids(model=None):
    """The ids of the site's Galera nodes (empty when Galera is disabled).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.node_ids
    """
    return [n["id"] for n in _nodes(_model(model))]


def _me(model):
    me = model.get("local")
    if not me or me["id"] not in [n["id"] for n in _nodes(model)]:
        raise CommandExecutionError("{} is not a Galera node of site {}".format(__grains__["id"], model["site"]))
    return me


def _get_status(address, port, timeout):
    try:
        host = "[{}]".format(address) if ":" in address else address
        with urllib.request.urlopen("http://{}:{}/status".format(host, port), timeout=timeout) as response:
            return json.loads(response.read().decode())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def local_status(model=None, timeout=2.0):
    """
    This node's Galera status from its health daemon: ``running``, ``state``, ``state_code``,
    ``cluster_status``, ``cluster_size``, ``cluster_uuid``, ``last_committed``, ``healthy``,
    ``reason``, ``grastate`` ({uuid, seqno, safe_to_bootstrap} or None), ``sst_ready``.
    ``None`` when the daemon does not answer.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.local_status
    """
    model = _model(model)
    me = _me(model)
    return _get_status(me["address"], model["galera"]["health_port"], timeout)


def statuses(model=None, timeout=2.0):
    """Every Galera node's status (see :func:`local_status`), asked in parallel:
    ``{node id: status or None}`` (None: its health daemon did not answer).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.statuses
    """
    model = _model(model)
    out = {}

    def ask(node):
        out[node["id"]] = _get_status(node["address"], model["galera"]["health_port"], timeout)

    threads = [threading.Thread(target=ask, args=(n,), daemon=True) for n in _nodes(model)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 1)
    return {n["id"]: out.get(n["id"]) for n in _nodes(model)}


def plan(model=None):
    """What ``openstack_ha.galera`` would do on this node now: ``{action, reason, statuses}``.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.plan
    """
    model = _model(model)
    me = _me(model)
    seen = statuses(model)
    if seen.get(me["id"]) is None and running(model):
        # The server runs but its health daemon is (re)starting: never "join" a running node.
        seen[me["id"]] = {"running": True, "cluster_status": "unknown: the health daemon is not answering yet"}
    action, reason = __utils__["openstack_ha_galera_plan.start_plan"](me["id"], [n["id"] for n in _nodes(model)], seen)
    return {"action": action, "reason": reason, "statuses": seen}


# ----------------------------------------------------------------------------- SQL


def _secrets(model):
    g = model["galera"]
    found = [g.get("sst_password"), g.get("monitor_password"), g.get("root_password")]
    found += [db.get("password") for db in (g.get("databases") or {}).values()]
    return [s for s in found if s]


def _mask(text, model):
    for secret in _secrets(model):
        text = text.replace(secret, "**********")
    return text


def _quote(value):
    """A SQL string literal for ``value`` (backslashes and quotes escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql(statements, model=None, timeout=30):
    """
    Run ``statements`` on the local server (root over the unix socket, SQL on stdin).

    Returns the rows as lists of strings. Raises CommandExecutionError with the server's
    message, secrets masked.
    """
    model = _model(model)
    cmd = ["mariadb", "--no-defaults", "-u", "root", "--socket=" + model["paths"]["galera_socket"],
           "-N", "-B", "--connect-timeout=5"]
    try:
        proc = subprocess.run(cmd, input=statements, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandExecutionError("mariadb did not answer within {} s".format(timeout)) from None
    if proc.returncode != 0:
        raise CommandExecutionError("mariadb failed: " + _mask(proc.stderr.strip(), model))
    return [line.split("\t") for line in proc.stdout.splitlines()]


def _legacy_network_host(model):
    """The host pattern (``10.0.0.0/255.255.255.0``) releases before 0.4 granted network
    accounts to; None on an IPv6 site (MariaDB has no such pattern for IPv6)."""
    net = ipaddress.ip_network(model["network"], strict=False)
    return "{}/{}".format(net.network_address, net.netmask) if net.version == 4 else None


def _controller_hosts(model):
    """The hosts network accounts are granted to: each controller's cluster-family address
    (where HAProxy's connections to a node come from), in controller order. One account per
    address works for IPv4 and IPv6 alike; a netmask pattern works for IPv4 only."""
    return [c["address"] for c in model["controllers"]]


def _wanted_users(model=None):
    """
    The accounts the model asks for: ``[{user, host, password, grants: [statement, ...],
    database}]``. SST (local, for mariabackup), monitoring (local and each controller's
    address), root (socket or password, local) and one per OpenStack database and controller.
    """
    model = _model(model)
    g = model["galera"]
    users = [
        {"user": g["sst_user"], "host": "localhost", "password": g["sst_password"],
         "grants": ["RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.*"]},
        {"user": g["monitor_user"], "host": "localhost", "password": g["monitor_password"],
         "grants": ["PROCESS, BINLOG MONITOR ON *.*"]},
    ]
    for host in _controller_hosts(model):
        users.append({"user": g["monitor_user"], "host": host, "password": g["monitor_password"],
                      "grants": ["PROCESS, BINLOG MONITOR ON *.*"]})
    for name, db in sorted((g.get("databases") or {}).items()):
        for host in _controller_hosts(model):
            users.append({"user": db["user"], "host": host, "password": db["password"], "database": name,
                          "grants": ["ALL PRIVILEGES ON `{}`.*".format(name)]})
    return users


_MARK = "openstack-ha-answer-"


def _answers(model, statements):
    """Run ``statements`` (a list of SQL texts, each one statement that returns rows) in one
    client session; return their rows, one list per statement. One session, not one client
    per statement: a converged apply asks about every account, and a client started per
    question took 40 s of a busy host's apply."""
    if not statements:
        return []
    text = "".join("SELECT '{}{}';\n{}\n".format(_MARK, index, sql) for index, sql in enumerate(statements))
    answers = [[] for _ in statements]
    current = None
    for row in _sql(text, model):
        if len(row) == 1 and row[0].startswith(_MARK) and row[0][len(_MARK):].isdigit():
            current = int(row[0][len(_MARK):])
        elif current is not None:
            answers[current].append(row)
    return answers


def _who(user, host):
    return "{}@{}".format(_quote(user), _quote(host))


def _password_checks(model, accounts):
    """{(user, host): True when the account's password is ``password``} for ``accounts``
    (``[(user, host, password)]``, each existing), in one session."""
    statements = []
    for user, host, password in accounts:
        statements += ["SELECT PASSWORD({});".format(_quote(password)), "SHOW CREATE USER {};".format(_who(user, host))]
    rows = _answers(model, statements)
    return {(user, host): any(rows[2 * i][0][0] in " ".join(row) for row in rows[2 * i + 1])
            for i, (user, host, _) in enumerate(accounts)}


def _all_grants(model, accounts):
    """{(user, host): sorted grant lines} for ``accounts`` (``[(user, host)]``), in one session."""
    rows = _answers(model, ["SHOW GRANTS FOR {};".format(_who(user, host)) for user, host in accounts])
    return {account: sorted(" ".join(r) for r in found) for account, found in zip(accounts, rows)}


def ensure_users(model=None, test=False, only_sst=False):
    """
    Create or fix the databases and accounts of :func:`_wanted_users` (private: it holds the passwords) and root's password
    (root keeps socket authentication). Needs this node in the Primary component; the
    statements replicate to the other nodes. Reads and writes go in a few client sessions
    (what exists; passwords and grants; the changes; the grants again).

    Returns ``{"user@host": "created" | "password updated" | "grants updated" | ...}`` for what
    changed (or would change with ``test``); passwords never appear.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.ensure_users
    """
    model = _model(model)
    g = model["galera"]
    wanted = _wanted_users(model)[:1] if only_sst else _wanted_users(model)
    schemata, users = _answers(model, ["SELECT SCHEMA_NAME FROM information_schema.SCHEMATA;", "SELECT User, Host FROM mysql.user;"])
    databases = {row[0] for row in schemata}
    existing = {(row[0], row[1]) for row in users if len(row) == 2}
    checks = [(a["user"], a["host"], a["password"]) for a in wanted if (a["user"], a["host"]) in existing]
    if not only_sst:
        checks.append(("root", "localhost", g["root_password"]))
    passwords = _password_checks(model, checks)
    changes, writes, granted = {}, [], []
    for account in wanted:
        key = (account["user"], account["host"])
        label, who = "{}@{}".format(*key), _who(*key)
        if account.get("database") and account["database"] not in databases:
            changes["database " + account["database"]] = "created"
            databases.add(account["database"])
            writes.append("CREATE DATABASE IF NOT EXISTS `{}`;".format(account["database"]))
        if key not in existing:
            changes[label] = "created"
            # IF NOT EXISTS: every node applies at once and another may create it first.
            writes.append("CREATE USER IF NOT EXISTS {} IDENTIFIED BY {};".format(who, _quote(account["password"])))
        elif not passwords[key]:
            changes[label] = "password updated"
            writes.append("ALTER USER {} IDENTIFIED BY {};".format(who, _quote(account["password"])))
        writes += ["GRANT {} TO {};".format(grant, who) for grant in account["grants"]]
        if label not in changes:
            granted.append(key)
    legacy = None if only_sst else _legacy_network_host(model)
    if legacy is not None:
        for user in sorted({g["monitor_user"]} | {db["user"] for db in (g.get("databases") or {}).values()}):
            if (user, legacy) in existing:
                changes["{}@{}".format(user, legacy)] = "dropped (replaced by one account per controller address)"
                writes.append("DROP USER IF EXISTS {};".format(_who(user, legacy)))
    if not only_sst and not passwords[("root", "localhost")]:
        changes["root@localhost"] = "password set (socket authentication kept)"
        writes.append("ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD({});".format(
            _quote(g["root_password"])))
    if test:
        return changes
    before = _all_grants(model, granted)
    _sql("".join(writes), model)
    after = _all_grants(model, granted)
    for key in granted:
        if after[key] != before[key]:
            changes["{}@{}".format(*key)] = "grants updated"
    return changes


# ----------------------------------------------------------------------- processes


def pidfile(model=None):
    """This node's mariadbd pid file (``paths:galera_pidfile`` with ``{node}`` = its id).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.pidfile
    """
    model = _model(model)
    return model["paths"]["galera_pidfile"].replace("{node}", _me(model)["id"])


def running(model=None):
    """True when this node's mariadbd (from its pidfile) is alive.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.running
    """
    model = _model(model)
    return __salt__["openstack_ha.live_pid"](pidfile(model)) is not None


def wait_synced(model=None, timeout=None):
    """Wait until this node is Synced in a Primary component; return its status. Raises
    CommandExecutionError with the last state seen when ``timeout`` (default: the model's
    ``galera:startup_timeout``) passes first.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.wait_synced
    """
    model = _model(model)
    deadline = time.monotonic() + float(timeout or model["galera"]["startup_timeout"])
    status = None
    while time.monotonic() < deadline:
        status = local_status(model)
        if status and status.get("running") and status.get("state_code") == 4 and status.get("cluster_status") == "Primary":
            return status
        time.sleep(0.5)
    raise CommandExecutionError("{} did not become Synced: {}".format(__grains__["id"], (status or {}).get("reason", "health daemon not answering")))


def start(bootstrap=False, model=None, timeout=None):
    """
    Start this node's MariaDB through its init system, or bootstrap a new cluster from it
    (``bootstrap=True``: ``galera_new_cluster`` under systemd, the init script's
    ``bootstrap`` otherwise). mysqld_safe/the unit recovers the node's position first
    (``--wsrep-recover``), so a node that was part of the cluster catches up by IST.
    Waits until the node is Synced and returns its status.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.start
    """
    model = _model(model)
    service = model["paths"]["galera_service"]
    if running(model):
        return wait_synced(model, timeout)
    if bootstrap:
        if __grains__.get("init") == "systemd":
            cmd = ["galera_new_cluster"]
        else:
            cmd = ["/etc/init.d/" + service, "bootstrap"]
    else:
        cmd = None
    log.info("openstack_ha: %s MariaDB on %s", "bootstrapping" if bootstrap else "starting", __grains__["id"])
    marker = model["paths"].get("galera_starting_file")
    if marker:
        # Peers that look now see a start under way (the health daemon reports it), not a
        # node holding history with no server: they wait for this one instead of refusing.
        __utils__["openstack_ha_files.write_atomic"](marker, json.dumps({"bootstrap": bool(bootstrap), "since": time.time()}), mode=0o644)
    try:
        if cmd:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=float(model["galera"]["startup_timeout"]) + 60)
            ok = proc.returncode == 0
            detail = (proc.stdout + proc.stderr).strip()[-500:]
        else:
            ok = __salt__["service.start"](service)
            detail = ""
        if not ok and not running(model):
            raise CommandExecutionError("MariaDB failed to {} on {}: {} (see /var/log/mysql/error.log)".format(
                "bootstrap" if bootstrap else "start", __grains__["id"], detail or "the init script failed"))
        return wait_synced(model, timeout)
    finally:
        if marker:
            __utils__["openstack_ha_files.remove"](marker)


def stop(model=None, timeout=120):
    """Stop this node's MariaDB cleanly (``mariadb-admin shutdown``), falling back to
    SIGTERM/SIGKILL of the pidfile's process. Returns True when it was running.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.stop
    """
    model = _model(model)
    path = pidfile(model)
    pid = __salt__["openstack_ha.live_pid"](path)
    if pid is None:
        return False
    subprocess.run(["mariadb-admin", "--no-defaults", "-u", "root", "--socket=" + model["paths"]["galera_socket"],
                    "shutdown"], capture_output=True, timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and __salt__["openstack_ha.live_pid"](path) == pid:
        time.sleep(0.2)
    if __salt__["openstack_ha.live_pid"](path) == pid:
        os.kill(pid, 9)
    return True


def recover_position(model=None):
    """
    This node's last committed position, ``{"uuid", "seqno", "source"}``: from the running
    server when it runs, else from ``mariadbd --wsrep-recover`` (reads InnoDB, changes
    nothing), else from grastate.dat.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.recover_position
    """
    model = _model(model)
    if running(model):
        status = local_status(model) or {}
        if status.get("running"):
            return {"uuid": status.get("cluster_uuid"), "seqno": status.get("last_committed", -1), "source": "running server"}
    # The recovered position decides which node a recovery starts from: its log goes to a
    # directory only root and mysql (which runs the recovery) can write, never to /tmp.
    workdir = tempfile.mkdtemp(prefix="openstack-ha-wsrep-recover-", dir="/run")
    logfile = os.path.join(workdir, "recover.log")
    try:
        datadir = os.stat(model["paths"]["galera_datadir"])
        os.chown(workdir, datadir.st_uid, datadir.st_gid)
        proc = subprocess.run(["mariadbd", "--user=mysql", "--wsrep-recover", "--log-error=" + logfile],
                              capture_output=True, text=True, timeout=300)
        text = __utils__["openstack_ha_files.read_nofollow"](logfile) or ""
    finally:
        __utils__["openstack_ha_files.remove"](logfile)
        os.rmdir(workdir)
    found = RECOVERED_RE.findall(text)
    if found:
        uuid, seqno = found[-1]
        return {"uuid": uuid, "seqno": int(seqno), "source": "wsrep-recover"}
    grastate = _read_grastate(model)
    if grastate:
        return dict(grastate, source="grastate.dat")
    raise CommandExecutionError("could not recover the position of {} (rc {}): {}".format(
        __grains__["id"], proc.returncode, text.strip().splitlines()[-3:] if text.strip() else proc.stderr[-300:]))


def _read_grastate(model):
    path = os.path.join(model["paths"]["galera_datadir"], "grastate.dat")
    if not os.path.exists(path):
        return None
    values = {}
    with open(path) as fh:
        for line in fh:
            key, sep, value = line.partition(":")
            if sep:
                values[key.strip()] = value.strip()
    return {"uuid": values.get("uuid"), "seqno": int(values.get("seqno", "-1")),
            "safe_to_bootstrap": values.get("safe_to_bootstrap") == "1"}


def write_grastate(uuid, seqno, safe_to_bootstrap=True, model=None):
    """
    Write grastate.dat with ``uuid``, ``seqno`` and ``safe_to_bootstrap`` together, atomically
    (a new file renamed over the old, owned by mysql), so a recovery never leaves a node
    half-marked. Refuses while MariaDB runs.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.write_grastate <uuid> <seqno>
    """
    model = _model(model)
    if running(model):
        raise CommandExecutionError("MariaDB is running on {}: grastate.dat is not written under a live server".format(__grains__["id"]))
    if not re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", str(uuid)):
        raise CommandExecutionError("not a cluster UUID: {!r}".format(uuid))
    path = os.path.join(model["paths"]["galera_datadir"], "grastate.dat")
    text = "# GALERA saved state\nversion: 2.1\nuuid:    {}\nseqno:   {}\nsafe_to_bootstrap: {}\n".format(uuid, int(seqno), 1 if safe_to_bootstrap else 0)
    stat = os.stat(model["paths"]["galera_datadir"])
    __utils__["openstack_ha_files.write_atomic"](path, text, mode=0o660, uid=stat.st_uid, gid=stat.st_gid)
    return _read_grastate(model)


def last_join(model=None, lines=400):
    """How this node last caught up with the cluster, from the tail of its error log:
    ``"IST"``, ``"SST"`` or ``None``.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_galera.last_join
    """
    try:
        with open("/var/log/mysql/error.log", errors="replace") as fh:
            tail = fh.readlines()[-lines:]
    except OSError:
        return None
    kind = None
    for line in tail:
        if "IST received" in line or "Receiving IST" in line:
            kind = "IST"
        elif "SST received" in line or "State transfer required" in line and "SST" in line:
            kind = "SST"
    return kind
