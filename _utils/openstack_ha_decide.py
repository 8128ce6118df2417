"""
The remediation decision, in one place: given what every controller reports now, what to do.

:depends: nothing beyond the Python standard library.

Pure logic, no I/O: the runner gathers the evidence (fresh views from every controller,
authenticated by Salt), calls :func:`decide`, then acts and records. Kept pure so the
guardrails are tested and benchmarked directly.

Guardrails applied here:

- quorum: a backend is judged down (or up) only when at least ``quorum`` controllers' fresh
  probes say so; with fewer answering controllers than the quorum, nothing is done and a
  ``no_quorum`` alert is raised;
- the last healthy backend of a service is never drained: ``last_backend`` alert instead;
- cooldown: a backend acted on less than ``cooldown`` seconds ago is not toggled again;
- only what the remediation drained is restored: an operator's drain (planned maintenance)
  or a drain set by hand is left alone;
- idempotence: a backend already in the wanted state on every HAProxy yields no action.
"""

READY, DRAIN = "ready", "drain"


def _majority(values, quorum):
    """True/False when at least ``quorum`` of ``values`` agree on it, else None."""
    ups = sum(1 for v in values if v is True)
    downs = sum(1 for v in values if v is False)
    if downs >= quorum:
        return False
    if ups >= quorum:
        return True
    return None


def healthy(key, views, quorum):
    """True when at least ``quorum`` controllers' fresh probes see backend ``key`` up."""
    return _majority([v["probes"][key]["up"] for v in views.values() if key in v.get("probes", {})], quorum) is True


def drained(key, views, quorum):
    """True when a quorum of HAProxies has backend ``key`` drained (or in maintenance)."""
    return sum(1 for v in views.values() if v.get("admin", {}).get(key) in (DRAIN, "maint")) >= quorum


def serving(key, views, quorum):
    """True when backend ``key`` counts as a healthy backend in rotation: a quorum of fresh
    probes sees it up and it is not drained on a quorum of HAProxies. The one rule for "the
    last healthy backend", shared by the loop and the operator's drain."""
    return healthy(key, views, quorum) and not drained(key, views, quorum)


def decide(backends, views, quorum, records, now, cooldown, maintenance=()):
    """
    Decide the actions for ``backends``.

    backends
        ``{'<service>/<backend>': service}`` for every backend to consider, in a stable order.
    views
        ``{controller: {'probes': {key: {'up': bool}}, 'admin': {key: 'ready'|'drain'|'maint'}}}``
        from the controllers that answered (missing ones simply absent).
    quorum
        how many controllers must agree.
    records
        ``{key: {'state': 'drain'|'ready', 'by': 'remediation'|'operator', 'time': epoch}}``:
        the last action taken on each backend.
    maintenance
        keys under planned maintenance: never touched.

    Returns a list of ``{'action': 'drain'|'restore'|'alert', 'key', 'service', 'backend',
    'reason', 'evidence'}`` (alerts carry ``'alert'``, the kind), in a stable order.
    """
    if len(views) < quorum:
        return [{
            "action": "alert", "alert": "no_quorum", "key": None, "service": None, "backend": None,
            "reason": "{} of the controllers answered, {} needed".format(len(views), quorum),
            "evidence": {"answered": sorted(views)},
        }]
    health = {key: _majority([v["probes"][key]["up"] for v in views.values() if key in v.get("probes", {})], quorum) for key in backends}

    admin = {key: drained(key, views, quorum) for key in backends}
    actions = []
    for key, service in backends.items():
        if key in maintenance or health[key] is None:
            continue
        backend = key.split("/", 1)[1]
        evidence = {c: {"up": v["probes"][key]["up"], "detail": v["probes"][key].get("detail"), "haproxy": v.get("admin", {}).get(key)}
                    for c, v in sorted(views.items()) if key in v.get("probes", {})}
        states_everywhere = {v.get("admin", {}).get(key) for v in views.values() if v.get("haproxy", True)}
        record = records.get(key) or {}
        cooling = record and now - record.get("time", 0) < cooldown
        base = {"key": key, "service": service, "backend": backend, "evidence": evidence}
        if health[key] is False and states_everywhere - {DRAIN, "maint"}:
            others = [k for k, s in backends.items() if s == service and k != key]
            if not any(health[k] is True and not admin[k] for k in others):
                actions.append(dict(base, action="alert", alert="last_backend",
                                    reason="{} is down but is the last healthy backend of {}; not drained".format(backend, service)))
                continue
            if cooling and record.get("state") == READY:
                actions.append(dict(base, action="suppressed", reason="cooldown: restored {:.1f}s ago".format(now - record["time"])))
                continue
            admin[key] = True
            actions.append(dict(base, action="drain", reason="a quorum of controllers ({} of {}) sees {} down".format(
                sum(1 for e in evidence.values() if e["up"] is False), len(views), backend)))
        elif health[key] is True and DRAIN in states_everywhere and record.get("by") == "remediation" and record.get("state") == DRAIN:
            if cooling:
                actions.append(dict(base, action="suppressed", reason="cooldown: drained {:.1f}s ago".format(now - record["time"])))
                continue
            admin[key] = False
            actions.append(dict(base, action="restore", reason="a quorum of controllers ({} of {}) sees {} healthy again".format(
                sum(1 for e in evidence.values() if e["up"] is True), len(views), backend)))
    return actions
