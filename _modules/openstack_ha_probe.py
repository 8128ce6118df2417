"""
Health probes of the OpenStack API backends, as a controller sees them, in one place.

:depends: nothing beyond the Python standard library and the ``openstack_ha`` module.

The backend beacon probes through :func:`probe_targets` every tick; the runner's verification
asks every controller for :func:`service_view` (fresh probes plus the local HAProxy's
administrative state) before it acts. A probe that connects but gets no answer within its
timeout is a failure: a hung API is as dead to clients as a crashed one.
"""

import errno
import ipaddress
import os
import re
import selectors
import socket
import subprocess
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_probe"


def __virtual__():
    return __virtualname__


# Seconds an answer still gets after a request sent late (see _advance).
LATE_GRACE = 0.1

# Seconds a probe's connection is reused by the next rounds of probe_round (HTTP keep-alive)
# before a fresh one is opened: a backend that answers on its open connections but no longer
# accepts new ones (a full listen queue, a stuck acceptor) is still seen within this.
REUSE_FOR = 2.0

# The most of an answer a probe reads (status line, headers, body).
ANSWER_LIMIT = 65536
# Header lines of an answer, lowercased (see _reusable).
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n")
_CONNECTION = re.compile(rb"\r\nconnection:([^\r]*)\r\n")


def _request(address, path, keep=False):
    """The probe's HTTP request for ``path`` on ``address``, as bytes; with ``keep``, it asks
    the server to keep the connection open (HTTP/1.0 keep-alive: a server that does not
    support it answers as before and closes)."""
    host = "[{}]".format(address) if ":" in address else address
    return "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: openstack_ha-probe\r\n{}\r\n".format(
        path, host, "Connection: keep-alive\r\n" if keep else "").encode()


def _reusable(answer):
    """Whether the connection that carried ``answer`` (a whole answer's bytes, or what arrived
    of it) may carry the next probe: its headers are complete, it says how long its body is
    (``Content-Length``, no ``Transfer-Encoding``), the body is all in and nothing follows,
    and the server did not say it closes (an HTTP/1.0 answer must say ``keep-alive``).
    Returns the answer's full length when complete (0 when it is not reusable), None while
    more is to come."""
    end = answer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = answer[:end + 2].lower()  # every header line ends in CRLF; the status line starts it
    length = _LENGTH.search(head)
    if length is None or b"\r\ntransfer-encoding:" in head:
        return 0
    whole = end + 4 + int(length.group(1))
    if len(answer) < whole:
        return None
    connection = _CONNECTION.search(head)
    connection = connection.group(1) if connection else b""
    keeps = b"keep-alive" in connection if head.startswith(b"http/1.0") else b"close" not in connection
    return whole if keeps and len(answer) == whole else 0


def _judge_answer(head, status):
    """(healthy, detail) from the first bytes of an answer and the status wanted."""
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, "no HTTP answer"
    code = int(parts[1])
    return code == status, "status {}".format(code)


def _probe(address, port, path, status, timeout):
    """GET ``path`` from ``address:port``; return (healthy, detail). Never raises."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(_request(address, path))
            head = b""
            while b"\r\n" not in head and len(head) < 1024:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        return False, "timeout"
    except ConnectionRefusedError:
        return False, "refused"
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    return _judge_answer(head, status)


def _failure(err):
    """The detail of a failed connection with errno ``err`` (as :func:`_probe` words it)."""
    return "refused" if err == errno.ECONNREFUSED else (os.strerror(err) if err else "connection closed")


def _start(state, key, target, timeout, deadline=None, keep=True):
    """Start ``target``'s probe and register it in ``state``: on the connection its last probe
    left open (:data:`REUSE_FOR`), or on a new non-blocking one. A target whose address is not
    an IP literal is probed at once, blocking (``_probe`` resolves it)."""
    address, port = target["address"], int(target["port"])
    deadline = deadline or time.monotonic() + timeout
    idle = state["idle"].pop(key, None)
    if idle is not None:
        if _still_open(idle["sock"]) and idle["to"] == (address, port) \
                and time.monotonic() - idle["opened"] < REUSE_FOR:
            probe = _new_probe(idle["sock"], address, target, deadline, idle["opened"], keep, reused=True)
            try:
                sent = idle["sock"].send(probe["request"])
            except OSError:
                sent = -1
            if sent == len(probe["request"]):
                state["probes"][key] = probe
                state["selector"].register(idle["sock"], selectors.EVENT_READ, key)
                return
        idle["sock"].close()
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        state["done"][key] = _probe(address, port, target["path"], int(target["status"]), timeout)
        return
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:  # out of descriptors, no such family: a failed probe, as _probe has it
        state["done"][key] = (False, exc.strerror or type(exc).__name__)
        return
    sock.setblocking(False)
    err = sock.connect_ex((address, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        state["done"][key] = (False, _failure(err))
        return
    state["probes"][key] = _new_probe(sock, address, target, deadline, time.monotonic(), keep)
    state["selector"].register(sock, selectors.EVENT_WRITE, key)


def _new_probe(sock, address, target, deadline, opened, keep, reused=False):
    """The in-flight record of one probe on ``sock`` (``keep``: ask to keep it open)."""
    return {"sock": sock, "deadline": deadline, "head": b"", "target": target, "opened": opened, "reused": reused,
            "keep": keep, "to": (address, int(target["port"])), "request": _request(address, target["path"], keep),
            "status": int(target["status"])}


def _still_open(sock):
    """Whether an idle kept connection can carry another request: the server has neither
    closed it nor sent anything unasked."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # returns only when closed or sent to
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def _release(state, key):
    """Take ``key``'s probe out of flight (and out of the selector); returns it."""
    probe = state["probes"].pop(key)
    state["selector"].unregister(probe["sock"])
    return probe


def _finish(state, key, outcome, keep=False):
    """End ``key``'s probe with ``outcome``; with ``keep``, its connection waits in
    ``state["idle"]`` for the next round's probe of ``key``."""
    probe = _release(state, key)
    if keep:
        state["idle"][key] = {"sock": probe["sock"], "opened": probe["opened"], "to": probe["to"]}
    else:
        probe["sock"].close()
    state["done"][key] = outcome


def _retry(state, key):
    """A kept connection the server closed before answering (its keep-alive time ran out as
    the request went): probe ``key`` again on a new connection, within the same deadline."""
    probe = _release(state, key)
    probe["sock"].close()
    _start(state, key, probe["target"], 0, deadline=probe["deadline"], keep=probe["keep"])


def _advance(state, key, mask):
    """One step of ``key``'s probe after the selector reported ``mask``: connected (send the
    request), or answer bytes (read them; judge once the answer is whole or the server
    closed)."""
    probe = state["probes"][key]
    sock = probe["sock"]
    if mask & selectors.EVENT_WRITE:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return _finish(state, key, (False, _failure(err)))
        try:
            sent = sock.send(probe["request"])
        except OSError as exc:
            return _finish(state, key, (False, _failure(exc.errno)))
        if sent != len(probe["request"]):
            return _finish(state, key, (False, "request not sent whole"))
        # Connected, but this thread got to send only now (a busy process: Salt runs jobs as
        # threads of the minion): the answer gets a moment, as a blocking probe's would.
        probe["deadline"] = max(probe["deadline"], time.monotonic() + LATE_GRACE)
        state["selector"].modify(sock, selectors.EVENT_READ, key)
        return None
    try:
        chunk = sock.recv(ANSWER_LIMIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        if probe["reused"] and not probe["head"]:
            return _retry(state, key)
        return _finish(state, key, (False, _failure(exc.errno)))
    if not chunk and probe["reused"] and not probe["head"]:
        return _retry(state, key)
    probe["head"] += chunk
    whole = _reusable(probe["head"]) if chunk else 0
    if whole is None and len(probe["head"]) < ANSWER_LIMIT:
        return None
    return _finish(state, key, _judge_answer(probe["head"], probe["status"]), keep=bool(whole) and probe["keep"])


def probe_round(state, targets, timeout=0.5, budget=0.3, keep=True):
    """
    One round of probes run in the calling thread with non-blocking sockets (no thread per
    probe): start a probe of every target not already in flight, then wait at most ``budget``
    seconds for answers. A probe still unanswered when the round ends stays in flight (in
    ``state``, a dict the caller keeps between rounds, empty at first) until it answers or its
    own timeout passes: a hung backend never holds the others back, and costs no thread.

    A connection whose answer allows it (HTTP keep-alive) is kept in ``state`` and carries the
    target's next probes for :data:`REUSE_FOR` seconds: no TCP handshake per probe, and a
    backend that dies closes it, which the next probe sees at once. A kept connection the
    server closed is replaced by a new one in the same round, never judged a failure. With
    ``keep`` false, or rounds :data:`REUSE_FOR` or more apart, every probe opens and closes its
    own connection (and asks for no more).

    targets
        as for :func:`probe_targets` (a target's own ``timeout`` wins over ``timeout``).

    Returns ``{'<service>/<backend>': {'up': bool, 'detail': str}}`` for every probe that
    ended in this round (judged as :func:`probe_targets` judges them).
    """
    if "selector" not in state:
        state.update(selector=selectors.DefaultSelector(), probes={}, done={}, idle={})
    # Rounds further apart than REUSE_FOR (a beacon ticking every 2 s) would only hold
    # connections open for nothing: the next round could not use them.
    now = time.monotonic()
    keep = keep and now - state.get("last", now) < REUSE_FOR
    state["last"] = now
    keys = {"{}/{}".format(t["service"], t["backend"]): t for t in targets}
    for key in [k for k in state["idle"] if k not in keys or not keep]:  # no longer probed, or not so
        state["idle"].pop(key)["sock"].close()
    for key, target in keys.items():
        if key not in state["probes"]:
            _start(state, key, target, float(target.get("timeout") or timeout), keep=keep)
    end = time.monotonic() + budget
    while state["probes"]:
        wait = min(end, min(p["deadline"] for p in state["probes"].values())) - time.monotonic()
        # What arrived is read before any deadline is judged: a thread that did not run for a
        # while (the GIL held by a job) must not call an answer waiting in its socket a timeout.
        for selected, mask in state["selector"].select(max(0.0, wait)):
            if selected.data in state["probes"]:
                _advance(state, selected.data, mask)
        now = time.monotonic()
        for key in [k for k, p in state["probes"].items() if p["deadline"] <= now]:
            _finish(state, key, _judge_answer(state["probes"][key]["head"], state["probes"][key]["status"])
                    if b"\r\n" in state["probes"][key]["head"] else (False, "timeout"))
        if now >= end:
            break
    done, state["done"] = state["done"], {}
    return {key: {"up": up, "detail": detail} for key, (up, detail) in done.items()}


def close_probes(state):
    """Close every probe still in flight and every kept connection in ``state`` (see
    :func:`probe_round`)."""
    for key in list(state.get("probes", {})):
        _finish(state, key, (False, "closed"))
    for idle in state.get("idle", {}).values():
        idle["sock"].close()
    if "selector" in state:
        state.pop("selector").close()
    state.clear()


def probe_targets(targets, timeout=0.5):
    """
    Probe every target concurrently (one thread, non-blocking sockets: :func:`probe_round`);
    the whole call takes about the longest timeout at most.

    targets
        list of ``{'service', 'backend', 'address', 'port', 'path', 'status'}`` and, where a
        service sets its own, ``timeout`` (else ``timeout`` applies).

    Returns ``{'<service>/<backend>': {'up': bool, 'detail': str}}``.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_probe.probe_targets <targets>
    """
    if not targets:
        return {}
    state = {}
    try:
        longest = max(float(t.get("timeout") or timeout) for t in targets)
        return probe_round(state, targets, timeout, budget=longest + 0.05, keep=False)
    finally:
        close_probes(state)


def targets(model=None):
    """The probe targets of every service backend in ``model`` (default: this controller's).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_probe.targets
    """
    return __utils__["openstack_ha_model.probe_targets"](model or __salt__["openstack_ha.model"]())


def _cached(path, keys, max_age, now, since=None):
    """The results in the backend beacon's cache at ``path`` for ``keys`` that are at most
    ``max_age`` seconds old and, with ``since``, probed at or after it: ``{key: {up, detail,
    age}}`` (``age`` in seconds)."""
    import json

    try:
        with open(path) as fh:
            cached = json.load(fh)
    except (OSError, ValueError):
        return {}
    fresh = {}
    for key in keys:
        entry = cached.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("up"), bool) and isinstance(entry.get("time"), (int, float)) \
                and 0 <= now - entry["time"] <= max_age and (since is None or entry["time"] >= since):
            fresh[key] = {"up": entry["up"], "detail": str(entry.get("detail")), "age": round(now - entry["time"], 3)}
    return fresh


def service_view(service=None, targets_=None, timeout=None, socket_path=None, max_age=None, cache=None, since=None):
    """
    This controller's fresh view, for the runner's verification: a probe of every backend
    (of ``service``, or of all services) and its HAProxy's administrative state of each.

    The runner passes ``targets_``, ``timeout`` and ``socket_path`` from the model it already
    holds, which spares this call reading the model; without them the local model is used.
    With ``max_age`` and ``cache`` (the backend beacon's watcher keeps it), a result the
    watcher got at most ``max_age`` seconds ago (and, with ``since``, at or after that epoch
    time: the report being verified) is answered from there and only the others are probed now.

    Returns ``{'probes': {'svc/backend': {'up', 'detail'}}, 'admin': {'svc/backend': state},
    'haproxy': bool}``.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_probe.service_view
    """
    if targets_ is None:
        model = __salt__["openstack_ha.model"]()
        targets_ = targets(model)
        timeout, socket_path = model["remediation"]["probe"]["timeout"], model["haproxy"]["socket"]
    wanted = [t for t in targets_ if service is None or t["service"] == service]
    fresh = _cached(cache, ["{}/{}".format(t["service"], t["backend"]) for t in wanted], float(max_age), time.time(),
                    float(since) if isinstance(since, (int, float)) else None) if cache and max_age else {}
    rest = [t for t in wanted if "{}/{}".format(t["service"], t["backend"]) not in fresh]
    view = {"probes": dict(fresh, **(probe_targets(rest, timeout or 0.5) if rest else {})), "admin": {}, "haproxy": False}
    try:
        view["admin"], view["haproxy"] = __salt__["openstack_ha_haproxy.admin_states"](socket_path), True
    except Exception:  # a controller whose HAProxy is down still reports its probes
        pass
    return view


def vips_held(vips=None):
    """The names of the VIPs on this controller's interfaces now.

    vips
        ``{name: address}`` to look for (the runner passes its model's, so the question costs
        one ``ip`` call); default: the VIPs of this controller's site, from its pillar (building
        the model costs a few hundred milliseconds more).

    Returns a sorted list of names. Raises CommandExecutionError when ``ip`` fails.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_probe.vips_held
    """
    if vips is None:
        vips = __utils__["openstack_ha_model.vip_addresses"](__salt__["openstack_ha.model"]())
    try:
        held = netlink_addresses()
    except OSError:
        held = _ip_addresses()  # no netlink socket here: what `ip` says
    return sorted(name for name, address in vips.items() if _ip(address) in held)


def _ip_addresses():
    try:
        proc = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CommandExecutionError("cannot list this controller's addresses (ip -o addr show): {}".format(exc))
    if proc.returncode != 0:
        raise CommandExecutionError("ip -o addr show failed: {}".format(proc.stderr.strip()))
    return addresses_in(proc.stdout)


# rtnetlink (linux/rtnetlink.h, linux/if_addr.h): one RTM_GETADDR dump lists every address of
# every interface, what `ip -o addr show` prints, without starting a process every second.
_RTM_GETADDR, _NLM_F_REQUEST, _NLM_F_DUMP, _NLMSG_DONE, _NLMSG_ERROR = 22, 0x1, 0x300, 3, 2
_IFA_ADDRESS, _IFA_LOCAL, _IFA_FLAGS, _IFA_F_DADFAILED = 1, 2, 8, 0x08


def netlink_addresses(timeout=2.0):
    """The addresses (``ipaddress`` objects) on this host's interfaces, from one rtnetlink
    dump; as :func:`addresses_in`, an IPv6 address whose duplicate address detection failed is
    not held. Raises OSError when netlink cannot be used."""
    import struct

    found = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        # nlmsghdr (len, type, flags, seq, pid) + ifaddrmsg (family, prefixlen, flags, scope, index)
        sock.send(struct.pack("=LHHLLBBBBL", 24, _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0, socket.AF_UNSPEC, 0, 0, 0, 0))
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=LH", data, offset)
                if length < 16:
                    raise OSError("malformed netlink message")
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    raise OSError("netlink RTM_GETADDR refused")
                family, _, flags = struct.unpack_from("=BBB", data, offset + 16)
                attrs, addrs = offset + 24, {}
                while attrs + 4 <= offset + length:
                    size, attr = struct.unpack_from("=HH", data, attrs)
                    if size < 4:
                        break
                    value = data[attrs + 4:attrs + size]
                    if attr in (_IFA_ADDRESS, _IFA_LOCAL):
                        addrs[attr] = value
                    elif attr == _IFA_FLAGS and len(value) >= 4:
                        flags = struct.unpack_from("=L", value)[0]
                    attrs += (size + 3) & ~3
                raw = addrs.get(_IFA_LOCAL) or addrs.get(_IFA_ADDRESS)
                if raw is not None and family in (socket.AF_INET, socket.AF_INET6) and not flags & _IFA_F_DADFAILED:
                    found.add(ipaddress.ip_address(raw))
                offset += (length + 3) & ~3


def _ip(text):
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


def addresses_in(ip_output):
    """The addresses (``ipaddress`` objects) listed by ``ip -o addr show``: a VIP is found in
    whatever spelling the pillar used, since both sides are compared parsed. An IPv6 address
    whose duplicate address detection failed is not held."""
    found = set()
    for line in ip_output.splitlines():
        words = line.split()
        if "dadfailed" in words:
            continue
        for index, word in enumerate(words[:-1]):
            if word in ("inet", "inet6"):
                ip = _ip(words[index + 1].split("/", 1)[0])
                if ip is not None:
                    found.add(ip)
    return found