"""
Report when this controller gains or loses one of its site's VIPs.

:depends: ``openstack_ha_probe.vips_held`` (one rtnetlink address dump, or ``ip``).

Each tick looks at the addresses on this controller's interfaces and reports a change. With
``watch: true`` a watcher thread (started by the first tick) also listens to the kernel's
address notifications (rtnetlink's IPv4 and IPv6 address groups): when keepalived adds or
removes a VIP, the change goes to the master at once, through the minion's own channel as the
same beacon event the tick would send, instead of up to a tick later. Whichever of the two
sees a change first reports it; it is reported once. The watcher blocks on the kernel's socket
(no CPU while nothing changes); if it cannot subscribe, the ticks alone report, as without it.

Event tag: ``salt/beacon/<minion id>/openstack_ha_vip/change`` (and ``.../heartbeat``).

Data keys:
    ``kind``: ``change`` or ``heartbeat``;
    ``gained`` / ``lost`` (change only): lists of ``{vip, address, interface}``;
    ``held``: the VIP names this controller holds now;
    ``time``: epoch seconds;
    ``watched`` (change only): true when the watcher, not a tick, saw it;
    ``report``: ``{body, sig}``, ``held`` signed with the minion's key (see :func:`_signed`).

Options (written by the ``openstack_ha.beacons`` state):

.. code-block:: yaml

    beacons:
      openstack_ha_vip:
        - interval: 1
        - heartbeat: 30
        - watch: true
        - vips:
            public: {address: 10.0.0.100, interface: eth0}
"""

import errno
import logging
import socket
import threading
import time

import salt.utils.beacons

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha_vip"

# rtnetlink multicast groups (linux/rtnetlink.h): address added or removed, per family.
_RTMGRP_IPV4_IFADDR, _RTMGRP_IPV6_IFADDR = 0x10, 0x100


def __virtual__():
    return __virtualname__


def validate(config):
    conf = salt.utils.beacons.list_to_dict(config)
    vips = conf.get("vips")
    if not isinstance(vips, dict) or not vips:
        return False, "openstack_ha_vip: 'vips' must be a mapping of VIP name to {address, interface}"
    if not isinstance(conf.get("watch", False), bool):
        return False, "openstack_ha_vip: 'watch' must be true or false"
    return True, "valid"


def _observe(memory, conf, held, taken, now, watched=False):
    """Record ``held`` (the VIP names held, looked at when ``time.monotonic()`` was ``taken``)
    and return the change event it makes against the last observation, or None: no change,
    the first observation, or a look older than the one recorded (the tick and the watcher
    look concurrently: a stale look must not undo a fresh one). Callers hold ``memory['lock']``."""
    if taken < memory.get("taken", float("-inf")):
        return None
    memory["taken"] = taken
    before, memory["held"] = memory["held"], held
    if before is None or held == before:
        return None
    describe = lambda names: [dict(conf["vips"][n], vip=n) for n in names]
    event = {"tag": "change", "kind": "change", "held": held, "time": now,
             "gained": describe(sorted(set(held) - set(before))), "lost": describe(sorted(set(before) - set(held)))}
    if watched:
        event["watched"] = True
    return event


# The question a VIP report answers (never a function anyone can call; the master's
# ``openstack_ha_reports.VIPS_FUN``) and its nonce, ``vips:<look time>``.
REPORT_FUN = "openstack_ha_probe.vips_report"


def _signed(memory, event):
    """``event`` with ``report``: the VIP names it says this controller holds, signed with the
    minion's key as the answer to :data:`REPORT_FUN` with the nonce ``vips:<event time>`` (the
    master then needs no Salt job to learn who holds what); unchanged when it cannot be signed
    (the master asks the controllers instead)."""
    if memory.get("sign") is None:
        return event
    try:
        data = memory["body"](memory["opts"]["id"], "vips:{:.6f}".format(event["time"]), REPORT_FUN, event["held"])
        event["report"] = {"body": data.decode(), "sig": memory["sign"](data)}
    except Exception as exc:  # noqa: BLE001 - the master asks instead
        log.warning("openstack_ha_vip: could not sign the VIP report (%s); the master will ask", exc)
    return event


def _subscribe(timeout=1.0):
    """A netlink socket that receives the kernel's address notifications (both families);
    raises OSError when this host does not allow one."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
    except OSError:
        sock.close()
        raise
    sock.settimeout(timeout)
    return sock


def _wait_for_notice(sock):
    """Block (up to the socket's timeout) until the kernel reports an address change; read
    every notice already queued with it. True when there was one: an overflow of the socket's
    buffer (ENOBUFS: notices were lost) counts as one, since only a fresh look can tell."""
    try:
        sock.recv(65536)
    except socket.timeout:
        return False
    except OSError as exc:
        if exc.errno != errno.ENOBUFS:
            raise
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        for _ in range(1000):  # a burst of notices (keepalived sets several addresses at once)
            sock.recv(65536)
    except (BlockingIOError, OSError):
        pass
    finally:
        sock.settimeout(timeout)
    return True


def _send_to_master(opts, event):
    """Hand ``event`` to the minion's main loop, which sends it to the master as this beacon's
    event (the path the ticks' events take). ``opts``: the minion's options as a plain dict."""
    import salt.utils.event

    tag = "salt/beacon/{}/{}/{}".format(opts["id"], __virtualname__, event["tag"])
    with salt.utils.event.get_event("minion", opts=opts, listen=False) as bus:
        bus.fire_event({"data": None, "tag": None, "events": [{"tag": tag, "data": event}], "pretag": None}, "fire_master")


def _watch(memory, stop, sock):
    """The watcher thread: after each address notice, one look at the VIPs held; a change goes
    to the master at once (or, if that fails, with the next tick). It ends when the ticks stop
    coming (the beacon disabled or removed); the next tick starts it again."""
    with sock:
        while not stop.is_set():
            conf = memory["conf"]
            if time.monotonic() - memory["last_tick"] > 3 * max(1.0, float(conf.get("interval", 1))):
                log.info("openstack_ha_vip: no tick for a while (beacon disabled?): the watcher stops")
                return
            try:
                if not _wait_for_notice(sock):
                    continue
            except OSError as exc:
                log.warning("openstack_ha_vip: the address notices stopped (%s): the next tick listens again", exc)
                return
            try:
                taken = time.monotonic()
                held = memory["held_fn"]({name: vip["address"] for name, vip in conf["vips"].items()})
                with memory["lock"]:
                    event = _observe(memory, conf, held, taken, time.time(), watched=True)
                if event:
                    _signed(memory, event)
                    try:
                        _send_to_master(memory["opts"], event)
                    except Exception as exc:  # noqa: BLE001 - the tick sends it instead
                        log.warning("openstack_ha_vip: could not hand a change to the minion (%s); the next tick sends it", exc)
                        with memory["lock"]:
                            memory["pending"].append(event)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one look
                log.exception("openstack_ha_vip: a watch round failed")
                stop.wait(1.0)


def _ensure_watcher(memory, conf):
    memory["conf"], memory["last_tick"] = conf, time.monotonic()
    if "opts" not in memory:
        memory["opts"] = __opts__.value() if hasattr(__opts__, "value") else __opts__
    thread = memory.get("watcher")
    if thread is not None and thread.is_alive():
        return
    try:
        sock = _subscribe()
    except OSError as exc:
        if not memory.get("unwatchable"):
            log.warning("openstack_ha_vip: cannot listen to address notices (%s): the ticks alone report", exc)
        memory["unwatchable"], memory["watcher"] = True, None
        return
    stop = threading.Event()
    memory["watcher"], memory["stop"] = threading.Thread(target=_watch, args=(memory, stop, sock), daemon=True,
                                                          name="oha-vip-watch"), stop
    memory["watcher"].start()


def beacon(config):
    conf = salt.utils.beacons.list_to_dict(config)
    now = time.time()
    memory = __context__.setdefault("openstack_ha_vip", {"held": None, "heartbeat": 0, "lock": threading.Lock(), "pending": []})
    # Looked up here, in the loader's context: the watcher's thread has none. The same question
    # the runner asks every controller, answered the same way; when it fails this raises (Salt
    # logs it) rather than report every VIP lost.
    memory["held_fn"] = __salt__["openstack_ha_probe.vips_held"]
    try:
        memory["body"], memory["sign"] = __salt__["openstack_ha_signed.body"], __salt__["openstack_ha_signed.sign"]
    except KeyError:  # the signing module not synced (yet): unsigned events, the master asks
        memory["body"] = memory["sign"] = None
    if "opts" not in memory:
        memory["opts"] = __opts__.value() if hasattr(__opts__, "value") else __opts__
    taken = time.monotonic()
    held = memory["held_fn"]({name: vip["address"] for name, vip in conf["vips"].items()})
    with memory["lock"]:
        event = _observe(memory, conf, held, taken, now)
        events, memory["pending"] = memory["pending"], []
    if event:
        events.append(_signed(memory, event))
    if conf.get("watch"):
        _ensure_watcher(memory, conf)
    elif memory.get("watcher") is not None:
        memory["stop"].set()
        memory["watcher"] = None
    if now - memory["heartbeat"] >= float(conf.get("heartbeat", 30)):
        memory["heartbeat"] = now
        events.append(_signed(memory, {"tag": "heartbeat", "kind": "heartbeat", "held": held, "time": now}))
    return events
