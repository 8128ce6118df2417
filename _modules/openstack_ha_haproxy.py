"""
HAProxy on a controller through its runtime API (the admin stats socket), in one place.

:depends: HAProxy >= 2.0 running in master-worker mode with
    ``stats socket <path> level admin`` and ``server-state-file`` in its global section, as
    rendered by the ``openstack_ha.haproxy`` state.

Every function that talks to HAProxy goes through :func:`_command`, which raises
``CommandExecutionError`` with HAProxy's own words when the socket is missing, refuses, times
out or answers with an error.
"""

import csv
import io
import ipaddress
import logging
import os
import signal
import socket
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha_haproxy"

DEFAULT_SOCKET = "/run/haproxy/admin.sock"
DEFAULT_STATE_FILE = "/var/lib/haproxy/server-state"
DEFAULT_PIDFILE = "/run/haproxy.pid"
DEFAULT_CONFIG = "/etc/haproxy/haproxy.cfg"
# Runtime-API answers that mean the command failed.
_ERROR_PREFIXES = ("No such", "Unknown command", "Require", "Permission denied", "'set server", "Invalid")
ADMIN_STATES = ("ready", "drain", "maint")


def __virtual__():
    return __virtualname__


def _command(command, socket_path=None, timeout=2.0):
    """
    Send one runtime-API ``command`` and return HAProxy's answer as text.

    Raises ``CommandExecutionError`` when HAProxy cannot be reached or rejects the command.
    """
    path = socket_path or DEFAULT_SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (OSError, socket.timeout) as exc:
        raise CommandExecutionError("HAProxy runtime API at {} failed for {!r}: {}".format(path, command.split()[0:3], exc)) from None
    finally:
        sock.close()
    answer = b"".join(chunks).decode(errors="replace")
    if answer.strip().startswith(_ERROR_PREFIXES):
        raise CommandExecutionError("HAProxy refused {!r}: {}".format(command, answer.strip()))
    return answer


def is_serving(socket_path=None):
    """
    Return True when the local HAProxy worker answers on its admin socket.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.is_serving
    """
    try:
        return "Pid:" in _command("show info", socket_path, timeout=1.0)
    except CommandExecutionError:
        return False


def servers(socket_path=None):
    """
    Return every server of every backend as ``{backend: {server: {status, admin, address, ...}}}``.

    ``status`` is HAProxy's operational view (UP, DOWN, MAINT, DRAIN, no check); ``admin`` is
    the administrative state set through the runtime API: ``ready``, ``drain`` or ``maint``.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.servers
    """
    admin = _admin_states(socket_path)
    text = _command("show stat", socket_path)
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    result = {}
    for row in rows:
        if row.get("svname") in ("FRONTEND", "BACKEND", None):
            continue
        result.setdefault(row["pxname"], {})[row["svname"]] = {
            "status": row.get("status", ""),
            "admin": admin.get((row["pxname"], row["svname"]), "ready"),
            "address": row.get("addr", ""),
            "check": row.get("check_status", ""),
            "sessions": int(row.get("scur") or 0),
            "total": int(row.get("stot") or 0),
        }
    return result


def admin_states(socket_path=None):
    """
    The administrative state of every server of every backend, from one ``show servers
    state``: ``{'<backend>/<server>': 'ready'|'drain'|'maint'}`` (what the remediation reports
    and views carry; :func:`servers` has it too, with the operational view besides).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.admin_states
    """
    return {"{}/{}".format(backend, server): state for (backend, server), state in _admin_states(socket_path).items()}


def _admin_states(socket_path=None):
    """Map (backend, server) to the administrative state forced through the runtime API."""
    states = {}
    lines = _command("show servers state", socket_path).splitlines()
    for line in lines[2:]:
        fields = line.split()
        if len(fields) < 7 or line.startswith("#"):
            continue
        bits = int(fields[6])
        # srv_admin_state bits: 0x01 forced maintenance, 0x08 forced drain.
        states[(fields[1], fields[3])] = "maint" if bits & 0x01 else "drain" if bits & 0x08 else "ready"
    return states


def _save_after_change(socket_path, state_file):
    """Save the server states after a runtime change, so an HAProxy restarted by anything (a
    package upgrade, a reboot, an init script) loads the drain instead of forgetting it. A
    failed save is logged, never fatal: the change itself is in place."""
    try:
        save_server_state(socket_path, state_file)
    except (CommandExecutionError, OSError) as exc:
        log.warning("openstack_ha: HAProxy's server state not saved after a runtime change: %s", exc)


def set_server_state(backend, server, state, socket_path=None, state_file=None):
    """
    Set ``server`` of ``backend`` to ``state`` (``ready``, ``drain`` or ``maint``), then save
    every server's state to ``state_file`` (default ``/var/lib/haproxy/server-state``).

    Idempotent: returns ``{'changed': bool, 'old': ..., 'new': ...}``.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_haproxy.set_server_state nova lab-ctrl2 drain
    """
    if state not in ADMIN_STATES:
        raise CommandExecutionError("state must be one of {}, got {!r}".format(", ".join(ADMIN_STATES), state))
    current = servers(socket_path).get(backend, {}).get(server)
    if current is None:
        raise CommandExecutionError("HAProxy has no server {!r} in backend {!r}".format(server, backend))
    if current["admin"] == state:
        return {"changed": False, "old": state, "new": state}
    _command("set server {}/{} state {}".format(backend, server, state), socket_path)
    _save_after_change(socket_path, state_file)
    return {"changed": True, "old": current["admin"], "new": state}


def set_servers_state(changes, socket_path=None, state_file=None):
    """
    Apply several ``[backend, server, state]`` changes in one call (the runner's one publish
    per decision round). Each is applied on its own: one unknown server does not stop the
    others. When any changed, every server's state is saved to ``state_file`` (default
    ``/var/lib/haproxy/server-state``) so a restart keeps the drains.

    Returns ``{"backend/server": {'changed', 'old', 'new'} or {'error': message}}``.

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_haproxy.set_servers_state '[["nova", "lab-ctrl2", "drain"]]'
    """
    if not isinstance(changes, list) or not all(isinstance(c, (list, tuple)) and len(c) == 3 for c in changes):
        raise CommandExecutionError("changes must be a list of [backend, server, state]")
    current = servers(socket_path)
    done = {}
    for backend, server, state in changes:
        key = "{}/{}".format(backend, server)
        if state not in ADMIN_STATES:
            done[key] = {"error": "state must be one of {}, got {!r}".format(", ".join(ADMIN_STATES), state)}
            continue
        info = current.get(backend, {}).get(server)
        if info is None:
            done[key] = {"error": "HAProxy has no server {!r} in backend {!r}".format(server, backend)}
        elif info["admin"] == state:
            done[key] = {"changed": False, "old": state, "new": state}
        else:
            try:
                _command("set server {}/{} state {}".format(backend, server, state), socket_path)
                done[key] = {"changed": True, "old": info["admin"], "new": state}
            except CommandExecutionError as exc:
                done[key] = {"error": str(exc)}
    if any(result.get("changed") for result in done.values()):
        _save_after_change(socket_path, state_file)
    return done


def configured_servers(config_text):
    """
    The servers an HAProxy configuration defines: ``{(section, server): (address, port,
    check_port)}`` for every ``server`` line of a ``listen`` or ``backend`` section;
    ``check_port`` is the ``port`` option of the line (the port checks go to) or None.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.configured_servers <config_text>
    """
    found, section = {}, None
    for raw in config_text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if not raw[0].isspace():
            section = words[1] if words[0] in ("listen", "backend") and len(words) > 1 else None
            continue
        if section and words[0] == "server" and len(words) >= 3:
            address, port = split_address(words[2])
            options = words[3:]
            check_port = options[options.index("port") + 1] if "port" in options[:-1] else None
            found[(section, words[1])] = (address, port, check_port)
    return found


def split_address(text):
    """``(address, port)`` of an HAProxy ``address:port`` (``10.0.0.1:80``, ``[fd00::1]:80``,
    ``ipv6@fd00::1:80``), the address written as HAProxy's ``show servers state`` prints it."""
    for prefix in ("ipv4@", "ipv6@"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    address, _, port = text.rpartition(":")
    address = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        pass  # a host name: compared as written
    return address, port


def _check_port(check_port, port):
    """A server's check port, None when checks go to the server's own port."""
    return None if check_port in (None, "0", "-", port) else check_port


def prune_server_state(state_text, config_text):
    """
    The lines of a saved server state (``show servers state``) that HAProxy may load under
    ``config_text``: a server's line is dropped when the configuration gives it another
    address, port or check port, or no longer has it. HAProxy applies the saved address and
    ports over the configuration's (haproxy/haproxy#985): a changed check (``galera:check``
    from ``health`` to ``tcp``, say) would silently keep checking the old port. A dropped
    server starts from the configuration (up, no runtime drain); the remediation loop checks
    it again. Returns ``(text, dropped)``: the state to load and ``["backend/server", ...]``.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.prune_server_state <state_text> <config_text>
    """
    servers = configured_servers(config_text)
    kept, dropped = [], []
    for line in state_text.splitlines():
        fields = line.split()
        if len(fields) < 22 or line.startswith("#"):
            kept.append(line)  # the version line and the column header
            continue
        key = (fields[1], fields[3])
        want = servers.get(key)
        if want is None or (fields[4], fields[18]) != want[:2] or _check_port(fields[21], fields[18]) != _check_port(want[2], want[1]):
            dropped.append("/".join(key))
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", dropped


def save_server_state(socket_path=None, state_file=None, config_file=None):
    """
    Write HAProxy's current server states (including runtime drains) to the server-state file,
    atomically, so the process started by the next reload loads them. With ``config_file``
    (the configuration that process will read), the states of servers whose address or ports
    that configuration changes are left out (see :func:`prune_server_state`).

    Returns ``{"path": path written, "dropped": [backend/server, ...]}``. Raises
    ``CommandExecutionError`` when HAProxy cannot be asked or the configuration read.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.save_server_state
    """
    path = state_file or DEFAULT_STATE_FILE
    text, dropped = _command("show servers state", socket_path), []
    if config_file:
        text, dropped = _pruned_against(text, config_file)
    _write_state(path, text)
    return {"path": path, "dropped": dropped}


def _pruned_against(state_text, config_file):
    """:func:`prune_server_state` against the configuration in ``config_file``; raises
    CommandExecutionError when that file cannot be read."""
    try:
        with open(config_file) as fh:
            return prune_server_state(state_text, fh.read())
    except OSError as exc:
        raise CommandExecutionError("cannot read HAProxy's configuration {}: {}".format(config_file, exc))


def _write_state(path, text):
    tmp = "{}.tmp.{}".format(path, os.getpid())
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def prepare_start(state_file=None, config_file=None):
    """
    Before HAProxy starts: prune the server-state file the previous process left against the
    configuration it will start with (see :func:`prune_server_state`). Returns the servers
    dropped (a list); nothing to do when there is no state file or no configuration.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.prepare_start
    """
    path, config_file = state_file or DEFAULT_STATE_FILE, config_file or DEFAULT_CONFIG
    if not os.path.exists(config_file):
        return []  # nothing to prune against (HAProxy itself will say what is missing)
    try:
        with open(path) as fh:
            saved = fh.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CommandExecutionError("cannot prune HAProxy's server state {}: {}".format(path, exc))
    text, dropped = _pruned_against(saved, config_file)
    if dropped:
        _write_state(path, text)
    return dropped


def master_pid(pidfile=None):
    """Return the PID of the live HAProxy master process from its pidfile, or None.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.master_pid
    """
    return __salt__["openstack_ha.live_pid"](pidfile or DEFAULT_PIDFILE)


def worker_pid(socket_path=None):
    """The PID of the HAProxy worker answering on the admin socket now (a reload starts a new
    one), or None.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.worker_pid
    """
    return _worker_pid(socket_path or DEFAULT_SOCKET)


def _worker_pid(socket_path):
    try:
        for line in _command("show info", socket_path, timeout=1.0).splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
    except (CommandExecutionError, ValueError):
        return None
    return None


def _master_args(pid):
    """The command line of process ``pid`` as a list (empty when it is gone)."""
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def reload(socket_path=None, state_file=None, pidfile=None, timeout=10, config_file=None, extra_config=None):
    """
    Reload HAProxy without dropping connections and without forgetting runtime drains.

    Saves the server state, then asks the master process to re-execute (SIGUSR2): it keeps its
    listening sockets and starts a new worker that loads the saved state, while the old worker
    finishes its connections. Waits (bounded by ``timeout``) until a new worker answers.

    Returns ``{'saved': {path, dropped}, 'old_worker': pid, 'new_worker': pid}``.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_haproxy.reload
    """
    pid = master_pid(pidfile)
    if pid is None:
        raise CommandExecutionError("HAProxy is not running (no live master in {}); start it instead".format(pidfile or DEFAULT_PIDFILE))
    old_worker = _worker_pid(socket_path)
    saved = save_server_state(socket_path, state_file, config_file or DEFAULT_CONFIG)
    if extra_config and extra_config not in _master_args(pid):
        # A master started without the secrets file (an older openstack_ha) would re-execute
        # with its old command line and miss it: hand over to a new master instead (the
        # init script's reload: -sf, the listeners are taken over, the saved state loaded).
        if not __salt__["service.reload"]("haproxy"):
            raise CommandExecutionError("HAProxy's init script could not hand over to a master that loads {}".format(extra_config))
        pid = None
    else:
        os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new_worker = _worker_pid(socket_path)
        if new_worker and new_worker != old_worker:
            return {"saved": saved, "old_worker": old_worker, "new_worker": new_worker}
        time.sleep(0.1)
    raise CommandExecutionError("HAProxy did not start a new worker within {}s after reload; see its log".format(timeout))
