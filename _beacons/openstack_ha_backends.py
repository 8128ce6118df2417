"""
Report the health of every OpenStack API backend, as this controller sees it.

:depends: the ``openstack_ha_probe`` execution module.

Each tick probes every backend of every service concurrently (the pillar's health check
against each controller's address) on non-blocking sockets, no thread per probe: the tick
waits at most ``budget`` seconds for answers, and a probe still waiting on a hung backend stays
in flight (until it answers or ``timeout`` passes) and is counted at the next tick. With
``budget`` just above ``timeout`` (as the state sets it), a hung backend is reported in the
tick that probed it, and a blackholed one costs a tick no more than ``budget``. So a hung
or blackholed backend never stalls the minion's loop. A probe that connects but does not
answer within ``timeout`` is a failure.

Edge-triggered: an event fires only when a backend changes state, after ``fall`` failed or
``rise`` good probes in a row; plus a heartbeat with the full view every ``heartbeat``
seconds, so the master resyncs after a lost event or a restart.

With ``watch`` (seconds, below ``interval``), the probing does not wait for the tick: a
watcher thread started by the first tick probes every ``watch`` seconds and sends a change to
the master the moment it sees one, through the minion's own channel as the same beacon event
(``salt/beacon/<id>/openstack_ha_backends/change``, sent by the minion's main loop exactly as
the ticks' events are). The tick then only sends the heartbeat, and any change the watcher
could not hand over. Every round's results also go to ``cache`` (a JSON file, root only),
from which ``openstack_ha_probe.service_view`` answers the runner's verification when they are
fresh enough.

A watcher's change carries ``report``: this controller's view (its latest probe of every
backend, at most two watch rounds old, and its HAProxy's administrative states, read through
``socket``), signed with this minion's own key as an answer to the question
``openstack_ha_probe.report`` with the nonce ``report:<probe time>`` (see
``openstack_ha_signed``). The master acts on a quorum of such reports that agree without
asking the controllers again (``_utils/openstack_ha_reports.py``).

Event tags: ``salt/beacon/<minion id>/openstack_ha_backends/change`` and
``salt/beacon/<minion id>/openstack_ha_backends/heartbeat``.

Data keys:
    ``kind``: ``change`` or ``heartbeat``;
    ``changes`` (change only): list of ``{service, backend, state: up|down, detail}``;
    ``view``: ``{'<service>/<backend>': 'up'|'down'}`` for every backend;
    ``time``: the probe time (epoch seconds);
    ``admin`` (heartbeat only, when a backend is down and ``socket`` is set): this HAProxy's
    administrative state of each backend reported down;
    ``report`` (watcher's changes only): ``{body, sig}``, the signed view described above.

Options (written by the ``openstack_ha.beacons`` state from the pillar model):

.. code-block:: yaml

    beacons:
      openstack_ha_backends:
        - interval: 1        # seconds between ticks (Salt's minimum is 1)
        - timeout: 0.5       # per probe, seconds
        - budget: 0.3        # longest a tick waits for probe answers, seconds
        - keepalive: true    # reuse each probe's connection (HTTP keep-alive, a new one every 2 s)
        - fall: 1            # failed probes in a row before a backend is reported down
        - rise: 2            # good probes in a row before it is reported up again
        - heartbeat: 30      # seconds between full-view reports
        - watch: 0.2         # optional: the watcher thread's round, seconds
        - cache: /run/openstack-ha-probes.json   # with watch: the latest results
        - socket: /run/haproxy/admin.sock        # HAProxy's admin socket, for reports and heartbeats
        - targets:           # one per service backend
          - {service: nova, backend: ctrl1, address: 10.0.0.11, port: 8774, path: /, status: 200}
"""

import json
import logging
import os
import threading
import time

import salt.utils.beacons

log = logging.getLogger(__name__)

# The question a watcher's signed report answers (never a function anyone can call: the
# master's nonces are random hex, a report's nonce is ``report:<time>``).
REPORT_FUN = "openstack_ha_probe.report"

__virtualname__ = "openstack_ha_backends"


def __virtual__():
    return __virtualname__


def validate(config):
    """Check the beacon configuration; returns (bool, message)."""
    conf = salt.utils.beacons.list_to_dict(config)
    targets = conf.get("targets")
    if not isinstance(targets, list) or not targets:
        return False, "openstack_ha_backends: 'targets' must be a non-empty list"
    for index, target in enumerate(targets):
        missing = {"service", "backend", "address", "port", "path", "status"} - set(target)
        if missing:
            return False, "openstack_ha_backends: targets:{} lacks {}".format(index, ", ".join(sorted(missing)))
    return True, "valid"


def _probe_round(memory, conf, budget=None, slot="probes"):
    """Start a probe for every target not already in flight; return the answers that arrive
    within ``budget`` (default: the tick's), keyed ``service/backend``. The probes run in the
    calling thread on non-blocking sockets (``openstack_ha_probe.probe_round``); one still in
    flight when the round ends is carried to the next round, never waited for. ``slot``: where
    in ``memory`` its probes in flight are kept (the tick's and the watcher's apart: the two may
    overlap for a moment when the watcher is switched off)."""
    try:
        return memory["probe_round"](memory.setdefault(slot, {}), conf["targets"], conf.get("timeout", 0.5),
                                     float(conf.get("budget", 0.3) if budget is None else budget),
                                     keep=bool(conf.get("keepalive", True)))
    except Exception as exc:  # a probe must never take the beacon down
        memory["probe_close"](memory[slot])
        return {"{}/{}".format(t["service"], t["backend"]): {"up": False, "detail": "probe error: {}".format(exc)}
                for t in conf["targets"]}


def _judge(memory, conf, results):
    """Apply ``fall``/``rise`` to one round's ``results``; return the changes (list of
    ``{service, backend, state, detail}``). Callers hold ``memory["lock"]``."""
    fall, rise = int(conf.get("fall", 1)), int(conf.get("rise", 2))
    changes = []
    for key, result in sorted(results.items()):
        streak = memory["streak"].get(key, (None, 0))
        streak = (result["up"], streak[1] + 1 if streak[0] == result["up"] else 1)
        memory["streak"][key] = streak
        current = memory["state"].get(key)
        if result["up"] and current != "up" and (streak[1] >= rise or current is None):
            new = "up"
        elif not result["up"] and current != "down" and streak[1] >= fall:
            new = "down"
        else:
            continue
        memory["state"][key] = new
        if current is not None or new == "down":
            service, backend = key.split("/", 1)
            changes.append({"service": service, "backend": backend, "state": new, "detail": result["detail"]})
    return changes


def _write_cache(path, latest):
    """Write ``latest`` (every backend's latest result with its time, as :func:`_remember`
    keeps them) as the JSON cache at ``path``: to a temporary file (0600) renamed over it.
    The watcher keeps the whole cache in memory: the file is only ever written, never read
    back."""
    tmp = "{}.{}.tmp".format(path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(latest, fh)
    os.replace(tmp, path)


def _remember(memory, results, now):
    """Keep each backend's latest result with its time (callers hold ``memory["lock"]``)."""
    latest = memory.setdefault("latest", {})
    for key, result in results.items():
        latest[key] = {"up": result["up"], "detail": result["detail"], "time": now}


def _signed_report(memory, conf, now):
    """This controller's view for the master: the latest result of every backend at most two
    watch rounds old and this HAProxy's administrative states, signed with the minion's key
    (``{body, sig}``), or None when it cannot be signed."""
    max_age = 2 * float(conf["watch"])
    with memory["lock"]:
        probes = {key: {"up": r["up"], "detail": r["detail"]} for key, r in memory.get("latest", {}).items()
                  if now - r["time"] <= max_age}
    view = {"probes": probes, "admin": {}, "haproxy": False}
    if conf.get("socket"):
        try:
            view["admin"], view["haproxy"] = memory["admin_states"](conf["socket"]), True
        except Exception as exc:  # noqa: BLE001 - a controller whose HAProxy is down still reports its probes
            log.debug("openstack_ha_backends: no HAProxy state for the report (%s)", exc)
    try:
        data = memory["body"](memory["opts"]["id"], "report:{:.6f}".format(now), REPORT_FUN, view)
        return {"body": data.decode(), "sig": memory["sign"](data)}
    except Exception as exc:  # noqa: BLE001 - the master verifies instead
        log.warning("openstack_ha_backends: could not sign the report (%s); the master will verify", exc)
        return None


def _send_to_master(opts, event):
    """Hand ``event`` to the minion's main loop, which sends it to the master as this beacon's
    event (the path the ticks' events take). ``opts``: the minion's options (a plain dict: the
    loader's dunders do not reach another thread)."""
    import salt.utils.event

    tag = "salt/beacon/{}/openstack_ha_backends/{}".format(opts["id"], event["tag"])
    with salt.utils.event.get_event("minion", opts=opts, listen=False) as bus:
        bus.fire_event({"data": None, "tag": None, "events": [{"tag": tag, "data": event}], "pretag": None}, "fire_master")


def _watch(memory, stop):
    """The watcher thread: a probe round every ``watch`` seconds; a change goes to the master
    at once (or, if that fails, to the next tick). It ends when the ticks stop coming (the
    beacon disabled or removed): the next tick starts it again."""
    while not stop.is_set():
        started = time.monotonic()
        conf = memory["conf"]
        if started - memory["last_tick"] > 3 * max(1.0, float(conf.get("interval", 1))):
            log.info("openstack_ha_backends: no tick for a while (beacon disabled?): the watcher stops")
            return
        period = float(conf["watch"])
        try:
            results = _probe_round(memory, conf, budget=period, slot="watch_probes")
            now = time.time()
            with memory["lock"]:
                changes = _judge(memory, conf, results)
                _remember(memory, results, now)
                view, latest = dict(memory["state"]), dict(memory["latest"])
            if conf.get("cache"):
                _write_cache(conf["cache"], latest)
            if changes:
                event = {"tag": "change", "kind": "change", "changes": changes, "view": view, "time": now, "watched": True}
                report = _signed_report(memory, conf, now)
                if report is not None:
                    event["report"] = report
                try:
                    _send_to_master(memory["opts"], event)
                except Exception as exc:  # noqa: BLE001 - the tick sends it instead
                    log.warning("openstack_ha_backends: could not hand a change to the minion (%s); the next tick sends it", exc)
                    with memory["lock"]:
                        memory["pending"].extend(changes)
        except Exception:  # noqa: BLE001 - the watcher must outlive any one round
            log.exception("openstack_ha_backends: a watch round failed")
        stop.wait(max(0.0, period - (time.monotonic() - started)))


def _ensure_watcher(memory, conf):
    memory["conf"], memory["last_tick"] = conf, time.monotonic()
    if "opts" not in memory:
        memory["opts"] = __opts__.value() if hasattr(__opts__, "value") else __opts__
    thread = memory.get("watcher")
    if thread is None or not thread.is_alive():
        stop = threading.Event()
        memory["watcher"], memory["stop"] = threading.Thread(target=_watch, args=(memory, stop), daemon=True,
                                                              name="oha-backend-watch"), stop
        memory["watcher"].start()


def beacon(config):
    conf = salt.utils.beacons.list_to_dict(config)
    now = time.time()
    memory = __context__.setdefault("openstack_ha_backends", {"state": {}, "streak": {}, "heartbeat": 0,
                                                              "lock": threading.Lock(), "pending": []})
    # Looked up here, in the loader's context: a thread of the watcher's has none.
    memory["probe_round"] = __salt__["openstack_ha_probe.probe_round"]
    memory["probe_close"] = __salt__["openstack_ha_probe.close_probes"]
    if conf.get("watch"):
        memory["body"], memory["sign"] = __salt__["openstack_ha_signed.body"], __salt__["openstack_ha_signed.sign"]
        memory["admin_states"] = __salt__["openstack_ha_haproxy.admin_states"]
        _ensure_watcher(memory, conf)
        with memory["lock"]:
            changes, memory["pending"] = memory["pending"], []
            view = dict(memory["state"])
    else:
        if memory.get("watcher") is not None:
            memory["stop"].set()
            memory["watcher"] = None
        results = _probe_round(memory, conf)
        with memory["lock"]:
            changes = _judge(memory, conf, results)
            view = dict(memory["state"])
    events = []
    if changes:
        events.append({"tag": "change", "kind": "change", "changes": changes, "view": view, "time": now})
    if now - memory["heartbeat"] >= float(conf.get("heartbeat", 30)):
        memory["heartbeat"] = now
        heartbeat = {"tag": "heartbeat", "kind": "heartbeat", "view": view, "time": now}
        admin = _admin_of_down(conf, view)
        if admin is not None:
            heartbeat["admin"] = admin
        events.append(heartbeat)
    return events


def _admin_of_down(conf, view):
    """This HAProxy's administrative state (``ready``, ``drain``, ``maint``) of every backend
    ``view`` has down, read through ``socket``: ``{key: state}``; None when nothing is down,
    no socket is configured or HAProxy does not answer. With it, the master need not verify a
    backend that is down and already drained everywhere at every heartbeat."""
    down = [key for key, state in view.items() if state != "up"]
    if not down or not conf.get("socket"):
        return None
    try:
        states = __salt__["openstack_ha_haproxy.admin_states"](conf["socket"])
    except Exception as exc:  # noqa: BLE001 - the master then checks as it always did
        log.debug("openstack_ha_backends: no HAProxy state for the heartbeat (%s)", exc)
        return None
    return {key: states.get(key, "absent") for key in down}
