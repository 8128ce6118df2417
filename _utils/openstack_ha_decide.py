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
- idempotence: a backend already in the wanted state on every HAProxy yields no action;
- catch-up: the loop's restore that a controller missed (cut off or slow when it was
  published) is applied again once that controller's view shows the backend still drained.
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


def judged(key, views, quorum):
    """True (up) or False (down) when at least ``quorum`` controllers' fresh probes of backend
    ``key`` agree on it, else None."""
    return _majority([v["probes"][key]["up"] for v in views.values() if key in v.get("probes", {})], quorum)


def healthy(key, views, quorum):
    """True when at least ``quorum`` controllers' fresh probes see backend ``key`` up."""
    return judged(key, views, quorum) is True


def drained(key, views, quorum):
    """True when a quorum of HAProxies has backend ``key`` drained (or in maintenance)."""
    return sum(1 for v in views.values() if v.get("admin", {}).get(key) in (DRAIN, "maint")) >= quorum


def serving(key, views, quorum):
    """True when backend ``key`` counts as a healthy backend in rotation: a quorum of fresh
    probes sees it up and it is not drained on a quorum of HAProxies."""
    return healthy(key, views, quorum) and not drained(key, views, quorum)


def last_serving(key, keys, views, quorum, maintenance=(), decided=None):
    """
    The one rule for "the last healthy backend", used by the loop and by the operator's drain:
    True when no backend of ``keys`` other than ``key`` is serving (see :func:`serving`).

    maintenance
        keys under planned maintenance: they do not count as serving.
    decided
        ``{key: drained}`` for backends drained (True) or restored (False) earlier in the same
        decision round: they count as already in that state.
    """
    decided = decided or {}
    for other in keys:
        if other == key or other in maintenance:
            continue
        out = decided[other] if other in decided else drained(other, views, quorum)
        if healthy(other, views, quorum) and not out:
            return False
    return True


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
        ``{key: {'state': 'drain'|'ready', 'by': 'remediation'|'operator', 'time': epoch,
        'unconfirmed': [controller]}}``: the last action taken on each backend and the
        controllers whose answer did not confirm it (a loop restore they missed is applied
        again where their view shows the backend still drained, see :func:`missed`).
    maintenance
        keys under planned maintenance: never touched.

    Returns a list of ``{'action': 'drain'|'restore'|'alert', 'key', 'service', 'backend',
    'reason', 'evidence'}`` (alerts carry ``'alert'``, the kind; a restore applied again where
    it was missed carries ``'only'``, the controllers whose HAProxy it is for), in a stable order.
    """
    if len(views) < quorum:
        return [{
            "action": "alert", "alert": "no_quorum", "key": None, "service": None, "backend": None,
            "reason": "{} of the controllers answered, {} needed".format(len(views), quorum),
            "evidence": {"answered": sorted(views)},
        }]
    health = {key: judged(key, views, quorum) for key in backends}
    decided = {}  # drains (True) and restores (False) of this round
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
            siblings = [k for k, s in backends.items() if s == service]
            if last_serving(key, siblings, views, quorum, maintenance, decided):
                actions.append(dict(base, action="alert", alert="last_backend",
                                    reason="{} is down but is the last healthy backend of {}; not drained".format(backend, service)))
                continue
            if cooling and record.get("state") == READY:
                actions.append(dict(base, action="suppressed", reason="cooldown: restored {:.1f}s ago".format(now - record["time"])))
                continue
            decided[key] = True
            actions.append(dict(base, action="drain", reason="a quorum of controllers ({} of {}) sees {} down".format(
                sum(1 for e in evidence.values() if e["up"] is False), len(views), backend)))
        elif health[key] is True and DRAIN in states_everywhere and record.get("by") == "remediation" and record.get("state") == DRAIN:
            if cooling:
                actions.append(dict(base, action="suppressed", reason="cooldown: drained {:.1f}s ago".format(now - record["time"])))
                continue
            decided[key] = False
            actions.append(dict(base, action="restore", reason="a quorum of controllers ({} of {}) sees {} healthy again".format(
                sum(1 for e in evidence.values() if e["up"] is True), len(views), backend)))
        elif health[key] is True and record.get("by") == "remediation" and record.get("state") == READY and (behind := missed(key, record, views)):
            # The loop's own restore did not reach these HAProxies (their controller was cut
            # off or slow): the same decision again, not a toggle, so no cooldown.
            decided[key] = False
            actions.append(dict(base, action="restore", only=behind, reason="the restore of {} did not reach the HAProxy of {}: applied again".format(
                backend, ", ".join(behind))))
    return actions


def missed(key, record, views):
    """The controllers of ``record``'s ``unconfirmed`` (those whose answer did not confirm the
    loop's last action on backend ``key``) whose HAProxy, by their view, still holds the state
    that action replaced: drained after a restore, in rotation after a drain. A sorted list."""
    stale = DRAIN if record.get("state") == READY else READY
    return sorted(c for c in record.get("unconfirmed") or () if (views.get(c) or {}).get("admin", {}).get(key) == stale)


def confirmed(records, views, keys):
    """
    The unconfirmed lists to keep after a round's views: ``{key: [controllers]}`` for every
    backend of ``keys`` whose record's ``unconfirmed`` changes. A controller leaves it once its
    view shows its HAProxy's state of the backend and that state is not the one the loop's
    action replaced (see :func:`missed`: those stay until the action reaches them). A controller
    that did not answer, or whose HAProxy did not, stays.
    """
    kept = {}
    for key in keys:
        record = records.get(key) or {}
        waiting = list(record.get("unconfirmed") or ())
        if not waiting:
            continue
        stale = set(missed(key, record, views))
        left = [c for c in waiting if c in stale or key not in (views.get(c) or {}).get("admin", {})]
        if left != waiting:
            kept[key] = left
    return kept


# ------------------------------------------------------------------------------ VIPs


def classify_vips(holders, answered, controllers, quorum):
    """
    What is wrong with the VIPs, from every answering controller's list of VIPs it holds.

    holders
        ``{vip: [controllers holding it]}`` among those that answered.
    answered
        the controllers that answered; ``controllers``: all of the site's.
    quorum
        how many answers a judgement needs.

    Returns ``[{"alert", "vip", "holders", "why"}]``: ``no_quorum`` (too few answers: nothing
    else is judged), ``split_brain`` (more than one holder), ``vip_unconfirmed`` (no answering
    controller holds it, some did not answer: one of them may), ``vip_orphaned`` (every
    controller answered, none holds it). Empty: one holder per VIP, confirmed by a quorum.
    """
    if len(answered) < quorum:
        return [{"alert": "no_quorum", "vip": ", ".join(sorted(holders)), "holders": [],
                 "why": "only {} of {} controllers answered about the VIPs ({}): no repointing".format(
                     len(answered), len(controllers), ", ".join(sorted(answered)) or "none")}]
    silent = sorted(c for c in controllers if c not in answered)
    found = []
    for vip, who in sorted(holders.items()):
        if len(who) > 1:
            found.append({"alert": "split_brain", "vip": vip, "holders": list(who),
                          "why": "VIP {} is held by {}".format(vip, ", ".join(who))})
        elif not who and silent:
            found.append({"alert": "vip_unconfirmed", "vip": vip, "holders": [],
                          "why": "no controller that answered holds VIP {} and {} did not answer: no repointing".format(
                              vip, ", ".join(silent))})
        elif not who:
            found.append({"alert": "vip_orphaned", "vip": vip, "holders": [],
                          "why": "VIP {} is held by nobody (every controller answered)".format(vip)})
    return found


# -------------------------------------------------------------------------- RabbitMQ

# A RabbitMQ condition already announced is announced again only after this many heartbeat
# intervals: the beacon reports it on every heartbeat, an operator needs it once in a while.
ALERT_REPEAT_HEARTBEATS = 4


def rabbit_healthy(view, expected):
    """True when one node's report says: running, app running, no partition, no alarm, and
    exactly the ``expected`` nodes running."""
    return bool(view.get("running") and view.get("app_running") and not any((view.get("partitions") or {}).values())
                and not view.get("alarms") and sorted(view.get("running_nodes") or []) == sorted(expected))


def rabbit_problems(views, expected):
    """The cluster's problems from every answering node's report: ``[(kind, why, subject)]``
    for ``rabbitmq_partition`` (a node lists partitions, or the master saw Mnesia split it
    from a running peer: ``split``), ``rabbitmq_alarm`` and ``rabbitmq_node_down`` (an
    expected node that no answering node sees running: down, paused or unreachable)."""
    problems = []
    # ``split``: the master's reading of the nodes' management-API views (rabbit_view.mnesia_split).
    partitioned = sorted(n for n, v in views.items() if any((v.get("partitions") or {}).values()) or v.get("split"))
    if partitioned:
        problems.append(("rabbitmq_partition", "partitions seen by {}".format(", ".join(partitioned)), partitioned))
    alarms = sorted({a for v in views.values() for a in v.get("alarms") or []})
    if alarms:
        problems.append(("rabbitmq_alarm", "resource alarms: " + "; ".join(alarms), alarms))
    running = {n for v in views.values() if v.get("app_running") for n in v.get("running_nodes") or []}
    down = sorted((set(expected) - running) | ({v["node"] for v in views.values() if _says_down(v)} & set(expected)))
    if down:
        problems.append(("rabbitmq_node_down", "not running (down, paused or unreachable): " + ", ".join(down), down))
    return problems


def _says_down(view):
    """True when a node's own view says its app does not run: its VM answered (stopped or
    paused app), or its metrics endpoint and distribution port refused. Peers may still be
    connected to a paused node's VM and list it; a ``rabbitmqctl`` call that timed out is not
    such evidence."""
    if view.get("app_running") or not isinstance(view.get("node"), str):
        return False
    return bool(view.get("running") or view.get("source") == "metrics")


def rabbit_news(problems, seen, now, heartbeat):
    """The problems worth an alert now: new ones, ones whose subject changed, and ones last
    announced ``ALERT_REPEAT_HEARTBEATS`` heartbeats ago or more. ``seen``: ``{kind:
    {"subject", "time"}}`` of the last announcements."""
    news = []
    for kind, why, subject in problems:
        last = seen.get(kind) or {}
        if last.get("subject") == subject and now - last.get("time", 0) < ALERT_REPEAT_HEARTBEATS * heartbeat:
            continue
        news.append((kind, why, subject))
    return news


def rabbit_remedy(nodes, majority, views, seen, now, cooldown, heal_partitions=True, hands_off=()):
    """
    The one repair to make now, or None: ``("heal", node)`` restarts the app of the first node
    on the minority side of a partition (with ``heal_partitions``), else ``("restart", node)``
    starts a node whose controller answers but whose RabbitMQ does not run; each at most once
    per ``cooldown`` (``seen["heal_time"]``, ``seen["restart_time"]``). A node sees itself on
    the minority side when it sees fewer than ``majority`` nodes running. Nodes in
    ``hands_off`` (controllers in planned maintenance: an operator may have stopped their
    RabbitMQ on purpose, or be taking them out of the site) are never touched. A node is
    partitioned by its own partition list, or by the master's ``split`` once its VM is
    connected to every peer it was split from again (``connected``): the network is back and
    the split stands; while the peers are still out of reach, a restart would not rejoin them.
    When partitions overlap (no partitioned node sees fewer than ``majority`` running), the
    partitioned node that sees the fewest is healed, if it misses a peer whose app runs.
    """
    candidates = [n for n in nodes if n in views and n not in hands_off]
    sees = {n: len(views[n].get("running_nodes") or []) for n in candidates}
    # Partitioned, its app running, and not seeing every node running (a partition list can
    # outlast the heal that ended it).
    partitioned = [n for n in candidates if (any((views[n].get("partitions") or {}).values()) or _split_standing(views[n]))
                   and views[n].get("app_running") and sees[n] < len(nodes)]
    minority = [n for n in partitioned if sees[n] < majority]
    if partitioned and not minority:
        # Overlapping partitions (RabbitMQ's partial-partition guard cut two nodes apart that
        # both still see a third): each sees a majority, none is a minority by count. The one
        # seeing the fewest running nodes rejoins the rest when its app restarts. Only a node
        # that misses a peer whose app runs: one that misses a peer merely down (or being
        # healed, its app restarting) is the majority, and restarting it would split the
        # cluster again (a CI run healed lab-ctrl1 while lab-ctrl3's heal was under way).
        # In RabbitMQ's names (``rabbit@host``, each view's ``node``), as ``running_nodes``
        # lists them: the views are keyed by controller id. Compared with the ids, every
        # partitioned node missed "a peer whose app runs" (a CI run healed the majority node
        # lab-ctrl2 while lab-ctrl3's app restarted).
        name = {n: views.get(n, {}).get("node") or n for n in nodes}
        running = {name[n] for n in nodes if views.get(n, {}).get("app_running")}
        overlap = [n for n in partitioned if running - set(views[n].get("running_nodes") or []) - {name[n]}]
        minority = sorted(overlap, key=sees.get)[:1]
    dead = [n for n in candidates if not views[n].get("running")]
    if heal_partitions and minority and now - seen.get("heal_time", 0) >= cooldown:
        return "heal", minority[0]
    if dead and now - seen.get("restart_time", 0) >= cooldown:
        return "restart", dead[0]
    return None


def _split_standing(view):
    """True when Mnesia split this node from peers (``split``) its VM is connected to again."""
    split, connected = view.get("split") or [], view.get("connected")
    return bool(split) and isinstance(connected, list) and set(split) <= set(connected)


# ---------------------------------------------------------------- answers' shapes


def valid_view(view):
    """True when ``view`` has the shape of ``openstack_ha_probe.service_view``'s answer. A
    controller that answers anything else (confused or hostile) counts as not answering: its
    malformed answer must not stop remediation for the whole site."""
    if not isinstance(view, dict) or not isinstance(view.get("probes"), dict) or not isinstance(view.get("admin", {}), dict):
        return False
    if not all(isinstance(k, str) and isinstance(p, dict) and isinstance(p.get("up"), bool) for k, p in view["probes"].items()):
        return False
    return all(isinstance(k, str) and isinstance(v, str) for k, v in view.get("admin", {}).items())


def valid_rabbit_view(view):
    """True when ``view`` has the shape of ``openstack_ha_rabbitmq.report``'s answer (else it
    is that node's missing answer, never an exception that stops the site's checks)."""
    if not isinstance(view, dict):
        return False
    lists = all(view.get(k) is None or (isinstance(view[k], list) and all(isinstance(x, str) for x in view[k]))
                for k in ("running_nodes", "members", "alarms", "expected", "connected"))
    partitions = view.get("partitions")
    return lists and (partitions is None or isinstance(partitions, dict)) and isinstance(view.get("node", ""), str) and all(
        isinstance(view.get(k, False), bool) for k in ("running", "app_running"))


def valid_vip_list(answer):
    """True when ``answer`` has the shape of ``openstack_ha_probe.vips_held``'s: VIP names."""
    return isinstance(answer, list) and all(isinstance(n, str) for n in answer)


def maintenance_refusal(host, controllers, views, galera_nodes, in_maintenance, majority_count):
    """
    Why controller ``host`` may not go into planned maintenance now, or None. Pure.

    controllers
        every controller id of the site, in order; ``views``: {controller: its
        ``controller_report``, or {"error": why}}; ``galera_nodes``: the Galera node ids;
        ``in_maintenance``: the controllers in maintenance already (markers or records);
        ``majority_count``: the site's majority.

    Refused: an unknown host; more controllers in maintenance at once than the site can spare
    (its majority must stay in service); no other controller that could hold the VIPs
    (HAProxy serving and keepalived running, not in maintenance); ``host`` the only healthy
    Galera node (the writer role would have nowhere to go).
    """
    if host not in controllers:
        return "{!r} is not a controller of this site (known: {})".format(host, ", ".join(controllers))
    others = [c for c in in_maintenance if c != host]
    spare = len(controllers) - majority_count
    if others and len(others) + 1 > spare:
        return "{} {} in maintenance already: at most {} of the {} controllers at once (a majority stays in service)".format(
            ", ".join(sorted(others)), "is" if len(others) == 1 else "are", spare, len(controllers))

    def serving(ctrl):
        view = views.get(ctrl) or {}
        return "error" not in view and (view.get("haproxy") or {}).get("serving") and (view.get("keepalived") or {}).get("running")

    if not any(serving(c) for c in controllers if c != host and c not in in_maintenance):
        return "no other controller can hold the VIPs (HAProxy serving and keepalived running): {} would take them all down".format(host)
    if host in galera_nodes:
        healthy = [c for c in galera_nodes if c != host and c not in in_maintenance
                   and ((views.get(c) or {}).get("galera") or {}).get("healthy")]
        if not healthy:
            return "{} is the only healthy Galera node: the writer role would have nowhere to go".format(host)
    return None


def restart_refusal(controllers, views, components):
    """Why a rolling restart of ``components`` may not start now, or None: every controller
    must answer and be whole first (a restart while a node is down would take a second one
    out). Pure."""
    for ctrl in controllers:
        view = views.get(ctrl) or {}
        if "error" in view:
            return "{} did not answer ({}): restart nothing while a controller is down".format(ctrl, view["error"])
        if view.get("maintenance"):
            return "{} is in maintenance: end it first (salt-run openstack_ha.maintenance host={} end=True)".format(ctrl, ctrl)
        if not (view.get("haproxy") or {}).get("serving") or not (view.get("keepalived") or {}).get("running"):
            return "{} is not serving (HAProxy or keepalived down): restart nothing while a controller is down".format(ctrl)
        if "galera" in components and "galera" in view and not view["galera"].get("healthy"):
            return "Galera on {} is not healthy ({}): restart nothing while a node is down".format(ctrl, view["galera"].get("reason"))
        rabbit = view.get("rabbitmq")
        if "rabbitmq" in components and rabbit is not None:
            # Whole: every member runs. The metrics endpoint's view does not export the members
            # (None there): the site's expected nodes stand in for them.
            members = rabbit.get("members")
            members = (rabbit.get("expected") if members is None else members) or []
            running = rabbit.get("running_nodes") or []
            if not rabbit.get("app_running") or set(running) != set(members):
                return "RabbitMQ on {} is not whole (running {} of {})".format(ctrl, len(running), len(members))
    return None


VRRP_TOP, VRRP_STEP = 250, 10  # keepalived.conf.jinja: priority 250 - 10 * the controller's index


def maintenance_drop(host, controllers, views, in_maintenance, nopreempt):
    """
    How far ``host``'s keepalived priority must drop for its VIPs to move make-before-break:
    to 5 below the first other controller in order that can hold them (HAProxy serving,
    keepalived running, not in maintenance), so that controller alone outranks it and
    preempts (two preempting at once would move a VIP twice). 254 (FAULT) when the site runs
    ``nopreempt`` (nobody would preempt) or no other controller can hold the VIPs. Pure.
    """
    if nopreempt:
        return 254

    def serving(ctrl):
        view = views.get(ctrl) or {}
        return "error" not in view and (view.get("haproxy") or {}).get("serving") and (view.get("keepalived") or {}).get("running")

    able = [c for c in controllers if c != host and c not in in_maintenance and serving(c)]
    if not able:
        return 254
    priority = vrrp_priorities(controllers)
    return max(5, min(254, priority[host] - priority[able[0]] + 5))


def vrrp_priorities(controllers):
    """{controller: its keepalived priority}: 250 for the first, 10 less for each next one."""
    return {c: VRRP_TOP - VRRP_STEP * i for i, c in enumerate(controllers)}
