"""
The remediation loop's own Prometheus metrics: kept by the engine ``openstack_ha_loop`` (the
master process that runs the loop) and served by ``prometheus_client`` on the address the
engine is given (``metrics: ADDRESS:PORT``, see ``master.d/openstack_ha.conf``).

:depends: ``prometheus_client`` (installed with Salt 3008's own dependencies; with 3006 or 3007, only a loop
    that serves metrics needs it).

Every metric is prefixed ``openstack_ha_``:

``loop_events_total{beacon,kind}``
    beacon events the loop handled (after admission: a flood folded into one call counts once).
``loop_ignored_total{beacon}``
    events the runner ignored (not a controller, remediation paused or disabled...).
``loop_handle_seconds{beacon}``
    histogram: one event from the moment a worker took it until the decisions were stored.
``loop_verify_seconds``, ``loop_act_seconds``
    histograms from the drains' and restores' own timing: the verification round on every
    controller, then the action on every HAProxy.
``decisions_total{site,what,kind}``
    the loop's decisions: ``what`` is drain, restore, alert, restart, heal, repoint...;
    ``kind`` the alert kind or the service.
``loop_last_event_timestamp_seconds``
    when the loop last finished handling an event (the "loop silent" rule watches it).
``controller_last_event_timestamp_seconds{site,controller,beacon}``
    when the loop last handled an event in a controller's name. The name is the one in the
    event's tag, which a hostile minion can forge: the loop never acts on it unverified, and
    neither should an alert route on it alone.
``vip_holders{site,vip}``
    how many controllers hold each VIP, as the loop's last authenticated look found it (1 is
    right; 0 an orphaned VIP, 2 or more a split brain).
``vip_held{site,vip,controller}``
    1 for the controller that holds the VIP, 0 for the others the loop saw holding it before.
``site_healthy{site}``, ``site_problems{site}``, ``site_paused{site}``, ``catalog_drift{site}``, ``pending_restart{site,controller,component}``
    from the status the engine gathers every ``status_interval`` seconds (``salt-run
    openstack_ha.status``, the same authenticated reports): healthy at a glance, how many
    problems it lists, the loop paused, Keystone endpoints not as wanted, components whose
    configuration changed since they started.
``alerts_firing{site,kind}``
    alerts the loop holds open at Alertmanager (``openstack_ha_alertmanager``).
``alertmanager_posts_total{result}``
    deliveries to Alertmanager, ``ok`` or ``failed``.
"""

import logging

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
# The beacons and event kinds the loop knows; anything else in a tag (which a hostile minion
# chooses) is counted as "other", so forged tags cannot grow the label sets without bound.
BEACONS = frozenset({"openstack_ha_backends", "openstack_ha_vip", "openstack_ha_galera", "openstack_ha_rabbitmq"})
KINDS = frozenset({"change", "heartbeat"})


def _set_all(gauge, before, values):
    """Set ``gauge`` to ``values`` (``{label tuple: value}``) and to 0 for the label tuples
    of ``before`` no longer among them; returns the label tuples set now."""
    for labels in set(before) - set(values):
        gauge.labels(*labels).set(0)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    return set(values)


class LoopMetrics:
    """The loop's metrics in their own registry (nothing else of the master's process is
    exported). Thread-safe: ``prometheus_client`` locks every update."""

    def __init__(self):
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise CommandExecutionError("openstack_ha_loop: metrics need the Python module prometheus_client on the master "
                                        "(pip install prometheus-client), or no 'metrics' in the engine's options") from exc

        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.events = prom.Counter("openstack_ha_loop_events", "Beacon events the loop handled", ["beacon", "kind"], registry=r)
        self.ignored = prom.Counter("openstack_ha_loop_ignored", "Beacon events the runner ignored", ["beacon"], registry=r)
        self.handle = prom.Histogram("openstack_ha_loop_handle_seconds", "One event, taken to decisions stored", ["beacon"],
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.verify = prom.Histogram("openstack_ha_loop_verify_seconds", "Verification round of a drain or restore",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.act = prom.Histogram("openstack_ha_loop_act_seconds", "Action on every HAProxy of a drain or restore",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.decisions = prom.Counter("openstack_ha_decisions", "The loop's decisions", ["site", "what", "kind"], registry=r)
        self.last_event = prom.Gauge("openstack_ha_loop_last_event_timestamp_seconds", "When the loop last handled an event",
                                     registry=r)
        self.controller_event = prom.Gauge("openstack_ha_controller_last_event_timestamp_seconds",
                                           "When the loop last handled an event in this controller's name",
                                           ["site", "controller", "beacon"], registry=r)
        self.vip_holders = prom.Gauge("openstack_ha_vip_holders", "Controllers holding the VIP (1 is right)", ["site", "vip"],
                                      registry=r)
        self.vip_held = prom.Gauge("openstack_ha_vip_held", "1 for the controller holding the VIP", ["site", "vip", "controller"],
                                   registry=r)
        self._held = {}  # (site, vip) -> label tuples last set
        self.healthy = prom.Gauge("openstack_ha_site_healthy", "1 when status finds nothing wrong", ["site"], registry=r)
        self.problems = prom.Gauge("openstack_ha_site_problems", "Problems status lists", ["site"], registry=r)
        self.paused = prom.Gauge("openstack_ha_site_paused", "1 while the loop is paused (salt-run openstack_ha.pause)", ["site"],
                                 registry=r)
        self.drift = prom.Gauge("openstack_ha_catalog_drift", "Keystone endpoints not as wanted", ["site"], registry=r)
        self.pending = prom.Gauge("openstack_ha_pending_restart", "1 for a component whose configuration changed since it started",
                                  ["site", "controller", "component"], registry=r)
        self._pending = set()
        self.firing = prom.Gauge("openstack_ha_alerts_firing", "Alerts held open at Alertmanager", ["site", "kind"], registry=r)
        self._firing = set()
        self.posts = prom.Counter("openstack_ha_alertmanager_posts", "Deliveries to Alertmanager", ["result"], registry=r)

    def observe(self, tag, result, seconds, now):
        """Count one handled event: ``tag`` (``salt/beacon/<id>/<beacon>/<kind>``), the
        runner's ``result`` (``{"site", "decisions"}`` or ``{"ignored"}``), how long it took."""
        parts = str(tag).split("/")
        reporter, beacon = (parts[2], parts[3]) if len(parts) >= 4 else ("?", "other")
        beacon = beacon if beacon in BEACONS else "other"
        kind = parts[4] if len(parts) >= 5 and parts[4] in KINDS else "other"
        self.events.labels(beacon, kind).inc()
        self.handle.labels(beacon).observe(seconds)
        self.last_event.set(now)
        if not isinstance(result, dict) or "ignored" in result:
            self.ignored.labels(beacon).inc()
            return
        site = str(result.get("site"))
        self.controller_event.labels(site, reporter, beacon).set(now)
        holders = result.get("vip_holders")
        if isinstance(holders, dict):
            for vip, who in holders.items():
                who = [str(c) for c in who or []]
                self.vip_holders.labels(site, str(vip)).set(len(who))
                self._held[(site, str(vip))] = _set_all(self.vip_held, self._held.get((site, str(vip)), ()),
                                                        {(site, str(vip), ctrl): 1 for ctrl in who})
        for entry in result.get("decisions") or []:
            if not isinstance(entry, dict):
                continue
            what = str(entry.get("what"))
            self.decisions.labels(site, what, str(entry.get("alert") or entry.get("service") or "")).inc()
            timing = entry.get("timing") or {}
            if what in ("drain", "restore") and timing.get("verify") is not None:
                self.verify.observe(timing["verify"])
                self.act.observe(timing.get("act") or 0.0)

    def observe_status(self, summaries):
        """Take ``salt-run openstack_ha.status``'s data: ``{site: summary}``."""
        pending = set()
        for site, summary in (summaries or {}).items():
            if not isinstance(summary, dict):
                continue
            self.healthy.labels(site).set(1 if summary.get("healthy") else 0)
            self.problems.labels(site).set(len(summary.get("problems") or []))
            self.paused.labels(site).set(1 if summary.get("paused") else 0)
            catalog = summary.get("catalog")
            if isinstance(catalog, dict):
                self.drift.labels(site).set(len(catalog.get("drift") or {}))
            for ctrl, components in (summary.get("pending_restart") or {}).items():
                for component in components or {}:
                    pending.add((site, str(ctrl), str(component)))
        self._pending = _set_all(self.pending, self._pending, dict.fromkeys(pending, 1))

    def set_firing(self, counts):
        """``counts``: ``{(site, kind): alerts open}`` (kinds no longer open drop to 0)."""
        self._firing = _set_all(self.firing, self._firing, counts)

    def serve(self, address, port):
        """Serve ``/metrics`` on ``address:port`` from a daemon thread."""
        import prometheus_client as prom

        prom.start_http_server(int(port), addr=str(address), registry=self.registry)
        log.info("openstack_ha: the loop's metrics are on http://%s:%s/metrics", address, port)


def loop_metrics():
    """A new :class:`LoopMetrics`."""
    return LoopMetrics()


def split_listen(value):
    """``"ADDRESS:PORT"`` (IPv6 in brackets) -> ``(address, port)``; raises ValueError naming
    what is wrong."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError("metrics: expected ADDRESS:PORT (e.g. 192.0.2.10:9387 or [2001:db8::10]:9387), got {!r}".format(text))
    return host.strip("[]"), int(port)
