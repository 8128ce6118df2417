"""
The loop's alerts delivered to a Prometheus Alertmanager (its v2 API), from the engine
``openstack_ha_loop`` when it is given ``alertmanager: URL``.

:depends: the master's event bus (the engine hands every ``openstack_ha/*`` event here).

Only the master's own events count: every ``openstack_ha/<x>`` event the runner fires has a
copy under ``salt/run/openstack_ha/<x>`` (``openstack_ha_records.fire``), a tag Salt does not
let a minion use in a batch of events, and a minion's single event is recognisable (its data is
the whole load, ``cmd: _minion_event``). Events a hostile minion forges under
``openstack_ha/...`` are ignored (:func:`trusted`).

What is sent, from those events (the runner's, the loop's, an operator's):

- ``openstack_ha/alert/<kind>``: an alert ``OpenStackHA<Kind>`` (``last_backend`` ->
  ``OpenStackHALastBackend``) with the labels ``site``, ``service``, ``backend``, ``kind``,
  ``severity``, and the decision's reason and evidence as annotations;
- ``openstack_ha/backend/drained`` by the loop (not an operator's planned drain): the alert
  ``OpenStackHABackendDrained`` for that service and backend;
- ``openstack_ha/backend/restored``: resolves the drained alert of that backend and the
  ``last_backend`` alert of its service;
- ``openstack_ha/resolved/<kind>`` (``{"site"}``): resolves every open alert of that kind.

Alerts the loop raises again while their condition lasts (split brain, an orphaned VIP, a
bad pillar, a catalog it cannot reach...) end when they stop coming: one not raised again for
``stale_after`` seconds is resolved. A drained backend and RabbitMQ's alerts end only by their
resolving event.

Open alerts are posted again every ``repeat`` seconds (Alertmanager expires an alert nobody
repeats after its ``resolve_timeout``: a master that died leaves nothing firing forever, and
the ``OpenStackHALoopSilent`` rule says why); a resolved one is posted once with ``endsAt``.
"""

import datetime
import json
import logging
import threading
import time
import urllib.request

log = logging.getLogger(__name__)

SEVERITY = {"last_backend": "critical", "split_brain": "critical", "orphaned_vip": "critical", "rabbitmq_partition": "critical",
            "galera_no_primary": "critical"}
EVIDENCE_LIMIT = 4000  # characters of JSON evidence per alert


def sticky(kind):
    """True for the kinds only their resolving event ends (never by staleness)."""
    return kind == "backend_drained" or str(kind).startswith("rabbitmq_")


def alert_name(kind):
    """``last_backend`` -> ``OpenStackHALastBackend``."""
    return "OpenStackHA" + "".join(part.capitalize() for part in str(kind).split("_") if part)


def _iso(when):
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _key(site, kind, service, backend):
    return (str(site), str(kind), str(service or ""), str(backend or ""))


def trusted(tag, data):
    """``tag`` without its ``salt/run/`` prefix when the event was fired by the master itself,
    else None."""
    if not str(tag).startswith("salt/run/openstack_ha/"):
        return None
    if isinstance(data, dict) and data.get("cmd") == "_minion_event":
        return None
    return str(tag)[len("salt/run/"):]


def interpret(tag, data):
    """What an event means for the open alerts: ``("fire", key, alert)``, ``("resolve",
    predicate)`` or None. ``key`` is ``(site, kind, service, backend)``; ``alert`` the v2
    payload without times; ``predicate(key)`` says which open alerts end."""
    data = data if isinstance(data, dict) else {}
    site = data.get("site")
    if not site:
        return None
    parts = str(tag).split("/")
    if len(parts) == 3 and parts[:2] == ["openstack_ha", "alert"]:
        kind = parts[2]
    elif tag == "openstack_ha/backend/drained" and data.get("decided_by") == "remediation":
        kind = "backend_drained"
    elif tag == "openstack_ha/backend/restored":
        service, backend = data.get("service"), data.get("backend")
        return ("resolve", lambda k: k[0] == str(site) and k[2] == str(service or "") and (
            (k[1] == "backend_drained" and k[3] == str(backend or "")) or k[1] == "last_backend"))
    elif len(parts) == 3 and parts[:2] == ["openstack_ha", "resolved"]:
        kind = parts[2]
        return ("resolve", lambda k: k[0] == str(site) and k[1] == kind)
    else:
        return None
    service, backend = data.get("service"), data.get("backend")
    labels = {"alertname": alert_name(kind), "site": str(site), "kind": kind, "severity": SEVERITY.get(kind, "warning"),
              "source": "openstack_ha"}
    if service:
        labels["service"] = str(service)
    if backend:
        labels["backend"] = str(backend)
    evidence = json.dumps(data.get("evidence"), sort_keys=True, default=str)
    annotations = {"summary": str(data.get("why") or kind), "decided_by": str(data.get("decided_by") or ""),
                   "evidence": evidence if len(evidence) <= EVIDENCE_LIMIT else evidence[:EVIDENCE_LIMIT] + "..."}
    return ("fire", _key(site, kind, service, backend), {"labels": labels, "annotations": annotations})


def post(url, alerts, timeout=5.0):
    """POST ``alerts`` (v2 payloads) to ``url``'s ``/api/v2/alerts``; raises OSError/ValueError
    (urllib's) when Alertmanager does not take them."""
    request = urllib.request.Request(url.rstrip("/") + "/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's configured URL
        if response.status // 100 != 2:
            raise ValueError("Alertmanager answered {}".format(response.status))


class Forwarder:
    """The alerts open at Alertmanager, fed the master's ``openstack_ha/*`` events."""

    def __init__(self, url, metrics=None, repeat=60.0, sender=post, stale_after=None, still_open=None):
        """``still_open(key)``: False when the shared records say a sticky alert's condition
        ended (with two masters, the restore may be the other master's event, which this one
        never sees); None, or an exception from it, keeps the alert open."""
        self.url, self.metrics, self.repeat, self.sender = url, metrics, float(repeat), sender
        self.still_open = still_open
        self.stale_after = float(stale_after) if stale_after else 5 * self.repeat
        self.open = {}  # key -> {"alert", "since", "seen"}
        self.lock = threading.Lock()

    def _send(self, alerts):
        if not alerts:
            return True
        try:
            self.sender(self.url, alerts)
        except Exception as exc:  # noqa: BLE001 - an unreachable Alertmanager must not stop the loop
            log.warning("openstack_ha: Alertmanager at %s did not take %d alert(s): %s", self.url, len(alerts), exc)
            if self.metrics:
                self.metrics.posts.labels("failed").inc()
            return False
        if self.metrics:
            self.metrics.posts.labels("ok").inc()
        return True

    def _count(self):
        if self.metrics:
            counts = {}
            for key in self.open:
                counts[(key[0], key[1])] = counts.get((key[0], key[1]), 0) + 1
            self.metrics.set_firing(counts)

    def handle(self, tag, data, now=None):
        """Take one event; post what changed. Returns the alerts posted (for tests and logs)."""
        now = time.time() if now is None else now
        tag = trusted(tag, data)
        meaning = interpret(tag, data) if tag else None
        if meaning is None:
            return []
        with self.lock:
            if meaning[0] == "fire":
                _, key, alert = meaning
                since = self.open.get(key, {}).get("since", now)
                self.open[key] = {"alert": alert, "since": since, "seen": now}
                sent = [dict(alert, startsAt=_iso(since))]
            else:
                ended = [self.open.pop(k) for k in [k for k in self.open if meaning[1](k)]]
                sent = [dict(e["alert"], startsAt=_iso(e["since"]), endsAt=_iso(now)) for e in ended]
            self._count()
        self._send(sent)
        return sent

    def repeat_open(self, now=None):
        """Post every open alert again (call every ``repeat`` seconds); resolve the ones not
        raised again for ``stale_after`` seconds (but the sticky kinds)."""
        now = time.time() if now is None else now
        ended = set()
        if self.still_open is not None:
            with self.lock:
                candidates = [k for k in self.open if sticky(k[1])]
            for key in candidates:
                try:
                    if self.still_open(key) is False:
                        ended.add(key)
                except Exception as exc:  # noqa: BLE001 - a store away keeps the alert as it is
                    log.warning("openstack_ha: could not check alert %s against the records: %s", key, exc)
        with self.lock:
            stale = [k for k, v in self.open.items() if (k in ended or not sticky(k[1])) and (k in ended or now - v["seen"] > self.stale_after)]
            alerts = [dict(e["alert"], startsAt=_iso(e["since"]), endsAt=_iso(now)) for e in [self.open.pop(k) for k in stale]]
            alerts += [dict(v["alert"], startsAt=_iso(v["since"])) for v in self.open.values()]
            if stale:
                self._count()
        return self._send(alerts)

    def run_repeats(self, stop):
        """Repeat the open alerts until ``stop`` (a threading.Event) is set."""
        while not stop.wait(self.repeat):
            self.repeat_open()


def drain_still_open(records, key):
    """For a sticky alert ``key`` ``(site, kind, service, backend)``: False when ``records``
    (the site's, as loaded) show the condition over (a ``backend_drained`` whose backend the
    loop no longer holds drained), else None (not known here)."""
    site, kind, service, backend = key
    if kind != "backend_drained":
        return None
    record = (records.get("backends") or {}).get("{}/{}".format(service, backend)) or {}
    return None if record.get("state") == "drain" and record.get("by") == "remediation" else False


def forwarder(url, metrics=None, repeat=60.0, still_open=None):
    """A new :class:`Forwarder` posting to the Alertmanager at ``url``."""
    return Forwarder(url, metrics, repeat, still_open=still_open)
