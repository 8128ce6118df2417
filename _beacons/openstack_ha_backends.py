"""
Report the health of every OpenStack API backend, as this controller sees it.

:depends: the ``openstack_ha_probe`` execution module.

Each tick probes every backend of every service concurrently (the pillar's health check
against each controller's address) in a pool of threads that outlives the tick: the tick waits
at most ``budget`` seconds for answers, and a probe still waiting on a hung backend finishes
(or times out after ``timeout``) in the background and is counted at the next tick. With
``budget`` just above ``timeout`` (as the state sets it), a hung backend is reported in the
tick that probed it, and a blackholed one costs a tick no more than ``budget``. So a hung
or blackholed backend never stalls the minion's loop. A probe that connects but does not
answer within ``timeout`` is a failure.

Edge-triggered: an event fires only when a backend changes state, after ``fall`` failed or
``rise`` good probes in a row; plus a heartbeat with the full view every ``heartbeat``
seconds, so the master resyncs after a lost event or a restart.

Event tags: ``salt/beacon/<minion id>/openstack_ha_backends/change`` and
``salt/beacon/<minion id>/openstack_ha_backends/heartbeat``.

Data keys:
    ``kind``: ``change`` or ``heartbeat``;
    ``changes`` (change only): list of ``{service, backend, state: up|down, detail}``;
    ``view``: ``{'<service>/<backend>': 'up'|'down'}`` for every backend;
    ``time``: the probe time (epoch seconds).

Options (written by the ``openstack_ha.beacons`` state from the pillar model):

.. code-block:: yaml

    beacons:
      openstack_ha_backends:
        - interval: 1        # seconds between ticks (Salt's minimum is 1)
        - timeout: 0.5       # per probe, seconds
        - budget: 0.3        # longest a tick waits for probe answers, seconds
        - fall: 1            # failed probes in a row before a backend is reported down
        - rise: 2            # good probes in a row before it is reported up again
        - heartbeat: 30      # seconds between full-view reports
        - targets:           # one per service backend
          - {service: nova, backend: ctrl1, address: 10.0.0.11, port: 8774, path: /, status: 200}
"""

import concurrent.futures
import time

import salt.utils.beacons

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


def _probe_round(memory, conf):
    """Start a probe for every target not already in flight; return the answers that arrive
    within the tick's budget, keyed ``service/backend``."""
    targets = conf["targets"]
    pool = memory.get("pool")
    if pool is None:
        pool = memory["pool"] = concurrent.futures.ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="oha-probe")
    inflight = memory["inflight"]
    for target in targets:
        key = "{}/{}".format(target["service"], target["backend"])
        if key not in inflight:
            inflight[key] = pool.submit(__salt__["openstack_ha_probe.probe_targets"], [target], conf.get("timeout", 0.5))
    concurrent.futures.wait(list(inflight.values()), timeout=float(conf.get("budget", 0.3)))
    results = {}
    for key, future in list(inflight.items()):
        if future.done():
            del inflight[key]
            try:
                results.update(future.result())
            except Exception as exc:  # a probe must never take the beacon down
                results[key] = {"up": False, "detail": "probe error: {}".format(exc)}
    return results


def beacon(config):
    conf = salt.utils.beacons.list_to_dict(config)
    fall, rise = int(conf.get("fall", 1)), int(conf.get("rise", 2))
    now = time.time()
    memory = __context__.setdefault("openstack_ha_backends", {"state": {}, "streak": {}, "heartbeat": 0, "inflight": {}})
    results = _probe_round(memory, conf)
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
    view = dict(memory["state"])
    events = []
    if changes:
        events.append({"tag": "change", "kind": "change", "changes": changes, "view": view, "time": now})
    if now - memory["heartbeat"] >= float(conf.get("heartbeat", 30)):
        memory["heartbeat"] = now
        events.append({"tag": "heartbeat", "kind": "heartbeat", "view": view, "time": now})
    return events
