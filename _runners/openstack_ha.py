"""
The master's side of openstack_ha: the remediation loop's entry point and the operator
commands. The work is done by one ``_utils`` module per concern, each handed a context
(``_utils/openstack_ha_context.py``):

- ``openstack_ha_sites``: site models from the master's pillar, the controller map;
- ``openstack_ha_records``: records, locks and events per site;
- ``openstack_ha_publish``: questions to the controllers, answers believed only when signed;
- ``openstack_ha_remediate``: backends verified, drained and restored; operator drains;
- ``openstack_ha_vips`` and ``openstack_ha_catalog_sync``: VIP holders, the Keystone catalog;
- ``openstack_ha_rabbit_watch``: RabbitMQ alerts and repairs;
- ``openstack_ha_status``, ``openstack_ha_galera_recover``: the status data, Galera recovery;
- ``openstack_ha_decide``: every decision, pure and unit-tested.

:depends: the ``openstack_ha`` execution modules synced to the controllers; the master's
    pillar naming each controller's site; ``master.d/openstack_ha.conf``.

.. code-block:: bash

    salt-run openstack_ha.status               # one table per site
    salt-run openstack_ha.status --out json    # the same, machine-readable
    salt-run openstack_ha.drain host=lab-ctrl2 # planned maintenance of a whole controller
    salt-run openstack_ha.drain service=nova backend=lab-ctrl2
    salt-run openstack_ha.undrain host=lab-ctrl2
    salt-run openstack_ha.maintenance host=lab-ctrl2          # VIPs, writer role, backends away
    salt-run openstack_ha.maintenance host=lab-ctrl2 end=True
    salt-run openstack_ha.rolling_restart component=galera    # one controller at a time

The engine (``_engines/openstack_ha_loop.py``) calls :func:`handle_event` with every
``openstack_ha_*`` beacon event. An event is a hint, never proof: the runner re-asks every
controller of the reporter's site (signed answers, checked against the accepted keys) and
acts only on what a quorum of them reports now.

Every command that refuses (an unknown site, controller or service, the last healthy
backend, a cluster not in a state to act on) returns ``{"refused": "<one line>", "retcode":
1}`` and exits non-zero; a command that failed (the catalog not brought in line, a recovery
step) exits non-zero too.
"""

import datetime
import logging
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha"


def __virtual__():
    __utils__["openstack_ha_import_guard.install"]()  # the engine's and status's threads load modules
    problem = __utils__["openstack_ha_model.salt_release_problem"]()
    if problem:
        return (False, problem)
    return __virtualname__


def _real(dunder):
    """The object behind a loader dunder (a proxy resolved in whichever loader runs now)."""
    return dunder.value() if type(dunder).__name__ == "NamedLoaderContext" else dunder


def _ctx():
    """The context every master-side util takes first (``_utils/openstack_ha_context.py``)."""
    return __utils__["openstack_ha_context.new"](_real(__opts__), _real(__utils__), _real(__context__))


def _failed(result):
    """``result`` (a dict) marked failed: ``salt-run`` exits with its ``retcode`` (Salt reads
    it from the returned data) and the job's return says ``success: False``."""
    __context__["retcode"] = 1
    return dict(result, retcode=1)


def _refuse(reason, **more):
    """An operator command's refusal: a one-line reason, a non-zero exit."""
    return _failed(dict(more, refused=" ".join(str(reason).split())))


def _arrival(data):
    """When the master received the event, on this process's monotonic clock: from the
    ``_stamp`` the master sets on every event it fires, never later than now. Coalescing
    compares this with when verifications started, so events that waited for a worker (a
    flood) are answered by one verification, not one each."""
    now = time.monotonic()
    stamp = data.get("_stamp") if isinstance(data, dict) else None
    try:
        received = datetime.datetime.fromisoformat(str(stamp))
        if received.tzinfo is None:
            received = received.replace(tzinfo=datetime.timezone.utc)
        waited = (datetime.datetime.now(datetime.timezone.utc) - received).total_seconds()
    except ValueError:
        return now
    return now - min(max(waited, 0.0), 3600.0)


def _acting_model(ctx, reporter, tag, quiet=False):
    """The site model the loop acts on for an event of ``reporter`` (``tag``): ``(model,
    None)``; or ``(None, {"ignored": why})`` when the reporter is no controller of a site with
    a valid pillar (counted as ignored unless ``quiet``) or its site's remediation is off."""
    # ``behind``: the sites' pillars are compiled by the refresher, never while an event waits.
    if ctx.call("sites.controller_site", reporter, behind=True) is None:
        if not quiet:
            ctx.call("records.note_ignored", ctx.util("admit.not_a_controller")(), reporter, tag)
        return None, {"ignored": "{!r} is not a controller".format(reporter)}
    model = ctx.call("sites.site_model", reporter, behind=True)
    if model is None:
        if not quiet:
            ctx.call("records.note_ignored", "event from a minion that is not a controller (or whose site has no valid pillar)",
                     reporter, tag)
        return None, {"ignored": "{!r} is not a controller of a site with a valid pillar".format(reporter)}
    if not model["remediation"]["enabled"]:
        return None, {"ignored": "remediation disabled for site " + model["site"]}
    return model, None


def handle_event(tag, data):
    """
    The loop's single entry point: ``tag`` and ``data`` of one beacon event, from the
    engine ``openstack_ha_loop`` (or an operator, to replay one).

    The event only says where to look: the reporter named in the tag must be a controller of
    a site in the master's pillar (else the event is ignored), the service named in the data
    must exist in that site (else the whole site is checked), and the decision rests on fresh,
    authenticated answers from the site's controllers.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.handle_event tag=salt/beacon/lab-ctrl1/openstack_ha_backends/change data='{"kind": "change"}'
    """
    ctx = _ctx()
    arrived = _arrival(data)
    parts = str(tag).split("/")
    if len(parts) < 4 or parts[0] != "salt" or parts[1] != "beacon":
        return {"ignored": "not a beacon event"}
    reporter, beacon = parts[2], parts[3]
    data = data if isinstance(data, dict) else {}
    model, ignored = _acting_model(ctx, reporter, tag)
    if model is None:
        return ignored
    site = model["site"]
    paused = (ctx.call("records.load", site) or {}).get("paused")
    if paused:
        return {"ignored": "remediation of site {} paused by {} ({})".format(site, paused.get("by"), paused.get("reason"))}
    if beacon == "openstack_ha_vip":
        # Its signed word on the VIPs it holds is kept from every event (heartbeats keep it fresh).
        reported = data.get("report") is not None and ctx.call("reports.accept_vips", model, reporter, data)
        if data.get("kind") == "heartbeat" and not ctx.call("vips.heartbeat_due", model):
            return {"site": site, "decisions": []}
        holders = {}
        decisions = ctx.call("vips.check_vips", model, reporter, data, holders, reported)
        return {"site": site, "decisions": decisions, "vip_holders": holders}
    if beacon == "openstack_ha_rabbitmq":
        return {"site": site, "decisions": ctx.call("rabbit_watch.check", model, reporter, data)}
    if beacon == "openstack_ha_galera":
        if reporter not in [n["id"] for n in ctx.util("model.galera_nodes")(model)]:
            return {"ignored": "{!r} is not a Galera node".format(reporter)}
        if (data.get("kind") == "heartbeat" and data.get("healthy") is True and not ctx.call("remediate.loop_drained", model, "galera")
                and not ctx.call("remediate.unconfirmed_at", model, reporter, "galera")):
            return {"site": site, "decisions": []}
        return {"site": site, "decisions": ctx.call("remediate.reconcile", model, reporter, service="galera", arrived=arrived)}
    if data.get("kind") == "heartbeat" and not ctx.call("remediate.heartbeat_needs_work", model, data, reporter):
        return {"site": site, "decisions": []}
    services = set()
    if data.get("kind") == "change":
        known = ctx.util("model.backend_services")(model)
        services = {c["service"] for c in data.get("changes") or [] if isinstance(c, dict) and c.get("service") in known}
    scope = services.pop() if len(services) == 1 else None
    # A change report's probe time: the verification believes no cached probe older than it.
    since = data.get("time") if data.get("kind") == "change" and isinstance(data.get("time"), (int, float)) else None
    # A watcher's signed report: with a quorum of agreeing ones, no verification publish.
    reported = None
    if data.get("kind") == "change" and data.get("report") is not None and ctx.call("reports.accept", model, reporter, data, arrived=arrived):
        reported = sorted({"{}/{}".format(c["service"], c.get("backend")) for c in data.get("changes") or []
                           if isinstance(c, dict) and c.get("service") in known})
        # The probe time under the report's signature, not the event's word for it: a
        # verification in flight answers this event when its views are no older (see
        # ``remediate.shared_verification``).
        since = ctx.util("reports.probe_time")(data) or since
    return {"site": site, "decisions": ctx.call("remediate.reconcile", model, reporter, service=scope, arrived=arrived,
                                                since=since, reported=reported)}


def returns_hub():
    """For the loop's engine, which reads the master's bus: the hub through which the
    publishes of this process take their job returns from it (``openstack_ha_publish.Returns``;
    the engine sets its ``reading`` while it reads), instead of each subscribing to the bus."""
    return _ctx().call("publish.returns")


def keep_report(tag, data):
    """
    Keep the signed report of a VIP event or of a backend change event (``tag``, ``data``) as
    it arrives, before the event's own turn in the loop (``handle_event``, which runs one event
    at a time per controller and beacon). A VIP move is reported in steps (the VIPs leave one
    VRRP instance at a time), and the turn of the first step waits for the reports of the
    rest; a backend failure's first round waits for the reports of the site's other
    controllers: kept here, they reach it even while their events wait for a worker. Nothing
    is decided and nothing counted as ignored here: the event's turn does both.

    Returns True when the report is kept (see ``reports.accept_vips`` and ``reports.accept``).
    """
    ctx = _ctx()
    key = ctx.util("admit.parse_tag")(tag)
    if key is None or not ctx.util("admit.report_to_keep")(key, data):
        return False
    model, _ = _acting_model(ctx, key[0], tag, quiet=True)
    if model is None:
        return False
    if key[1] == "openstack_ha_vip":
        return ctx.call("reports.accept_vips", model, key[0], data, quiet=True)
    return ctx.call("reports.accept", model, key[0], data, arrived=_arrival(data), quiet=True)


def status(site=None, timeout=30, recent=8, quick=False):
    """
    Is the control plane healthy? One table per site: every backend as each controller's
    HAProxy sees it (UP, DOWN, DRAIN, MAINT), who holds each VIP, Galera, RabbitMQ, the
    Keystone catalog, and any problem found.

    site
        only this site (default: every site the master's pillar defines).
    recent
        how many of the latest decisions to show.
    quick
        RabbitMQ read from each node's metrics endpoint instead of ``rabbitmqctl``
        (milliseconds instead of seconds; partitions are not seen). The engine's metrics use it.

    Returns ``{site: summary}``; on the command line the outputter ``openstack_ha_status``
    draws it as a table (``--out json``/``--out yaml`` show the data itself).

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.status
        salt-run openstack_ha.status site=eqiad1 --out json
    """
    try:
        data = __utils__["openstack_ha_status.site_status"](_ctx(), site, timeout, recent, quick)
    except SaltInvocationError as exc:
        return _refuse(exc)
    if not __opts__.get("output"):
        return {"outputter": "openstack_ha_status", "data": data}
    return data


def history(site=None, recent=20):
    """
    What the loop (and the operators' commands) decided lately: the ``recent`` latest
    decisions of ``site`` (default: of every site), oldest first, from the records alone (no
    controller is asked, so it answers at once, also while a site's controllers are busy or
    cut off).

    Returns ``{site: [decision, ...]}``.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.history site=lab recent=50
    """
    ctx = _ctx()
    # With a site named, its records are read and nothing else (a site nothing was recorded
    # for has none): listing the sites compiles every minion's pillar, seconds on a busy master.
    names = [site] if site is not None else sorted(ctx.call("sites.sites"))
    return {name: ctx.call("records.history", name)[-int(recent):] for name in names}


def _maintenance(host, service, backend, site, drain, force):
    try:
        entries, refused = __utils__["openstack_ha_remediate.operator_drain"](_ctx(), site, host, service, backend, drain, bool(force))
    except SaltInvocationError as exc:
        return _refuse(exc)
    if refused:
        return _refuse("; ".join(refused), entries=entries)
    return entries


def drain(host=None, service=None, backend=None, site=None, force=False):
    """
    Planned maintenance: drain ``backend`` (or every service's backend on ``host``) on every
    HAProxy of the site, and keep the remediation loop from restoring it until
    :func:`undrain`. Refuses to drain the last healthy backend of a service unless
    ``force=True`` (which is logged): then it returns ``{"refused": why, "entries": [...]}``
    (that backend's entry a ``last_backend`` alert, the others drained) and exits non-zero.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.drain host=lab-ctrl2
        salt-run openstack_ha.drain service=nova backend=lab-ctrl2
    """
    return _maintenance(host, service, backend, site, True, force)


def undrain(host=None, service=None, backend=None, site=None, force=False):
    """
    End planned maintenance: set the backend(s) ready on every HAProxy again.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.undrain host=lab-ctrl2
    """
    return _maintenance(host, service, backend, site, False, force)


def catalog(site=None, test=False):
    """
    Make the site's Keystone catalog match the pillar model: every service, for every
    interface, in the region; created where missing, a drifted URL updated in place. In
    ``active_controller`` mode the endpoints name the controller that holds each VIP now
    (a quorum of controllers must agree on it).

    site
        the site (default: the only one).
    test
        only report what would change.

    Returns ``{"result", "changes", "comment"}`` (as a state does). The admin credentials
    come from the master config (``openstack_ha_keystone:<site>``), never from pillar.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.catalog test=True
        salt-run openstack_ha.catalog
    """
    ctx = _ctx()
    try:
        site, _, model = ctx.call("sites.resolve_site", site)
        holders = {}
        if model["keystone"]["endpoint_mode"] == "active_controller":
            held, who, quorum = ctx.call("vips.vip_view", model)
            if not quorum or any(len(c) != 1 for c in who.values()):
                return _refuse("the controllers do not agree on one holder per VIP ({}): no repointing".format(
                    "; ".join("{}: {}".format(v, ", ".join(c) or "nobody") for v, c in who.items()) if quorum else
                    "only {} controllers answered".format(len(held))), result=False, changes={})
            holders = {vip: c[0] for vip, c in who.items()}
        outcome = ctx.call("catalog_sync.operator_sync", model, holders, test)
    except SaltInvocationError as exc:
        return _refuse(exc, result=False, changes={})
    result = {k: outcome[k] for k in ("result", "changes", "comment")}
    return _failed(result) if outcome["result"] is False else result


def _progress(message):
    """Show ``message`` while a long runner works (salt-run prints progress events)."""
    log.info("openstack_ha: %s", message)
    jid_event = globals().get("__jid_event__")
    if jid_event is not None:
        jid_event.fire_event({"message": message}, "progress")


def maintenance(host=None, end=False, site=None, timeout=None):
    """
    Planned maintenance of a whole controller: every VIP moves away (its keepalived goes to
    FAULT), the Galera writer role moves and that node's sessions end, every backend of it is
    drained on every HAProxy, and the command returns once another controller holds each VIP
    and no HAProxy sends it database traffic: then ``host`` can be patched, rebooted, stopped.
    The loop leaves it alone; ``status`` shows it. ``end=True`` brings it back: markers
    removed, wait until it is healthy, backends undrained.

    Refuses (nothing changed, exit code 1) when ``host`` is not a controller, when another
    controller is in maintenance already and the site cannot spare two, or when ``host`` is
    the only controller that could hold the VIPs, the only healthy Galera node or the last
    healthy backend of an API. A step that does not happen within ``timeout`` seconds
    (default 120) fails with the reason and leaves the controller in maintenance.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.maintenance host=lab-ctrl2
        salt-run openstack_ha.maintenance host=lab-ctrl2 end=True
    """
    if not host:
        return _refuse("name the controller: host=CONTROLLER")
    planned = __utils__["openstack_ha_planned.leave" if end else "openstack_ha_planned.enter"]
    try:
        return planned(_ctx(), site, host, _progress, timeout=float(timeout or __utils__["openstack_ha_planned.step_timeout"]()))
    except SaltInvocationError as exc:
        return _refuse(exc)
    except CommandExecutionError as exc:  # a step that did not happen: say which, exit non-zero
        return _failed({"host": host, "failed": str(exc)})


def rolling_restart(component="all", site=None, timeout=None):
    """
    Restart ``component`` (``haproxy``, ``keepalived``, ``galera``, ``rabbitmq`` or ``all``)
    on every controller, one at a time: maintenance on, restart, health gate (HAProxy
    serving, keepalived running, Galera Synced, RabbitMQ running and clustered), maintenance
    off, next. Progress lines as it goes and ``openstack_ha/rolling/progress`` events. Stops at
    the first controller that does not come back healthy, with the reason (that controller
    stays in maintenance). Refuses to start while any controller is down or in maintenance.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.rolling_restart component=galera
        salt-run openstack_ha.rolling_restart
    """
    try:
        done = __utils__["openstack_ha_planned.rolling_restart"](
            _ctx(), site, component, _progress, timeout=float(timeout or __utils__["openstack_ha_planned.restart_timeout"]()))
    except SaltInvocationError as exc:
        return _refuse(exc)
    return _failed(done) if done.get("failed") else done


def forget(host=None, site=None):
    """
    The last step of replacing a controller (README, "Replacing a controller"): once ``host``
    is out of the pillar's controllers and the others applied, remove it from RabbitMQ's
    cluster, check Galera no longer counts it, and drop the master's records about it.
    Refuses while ``host`` is still a controller in the pillar.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.forget host=lab-ctrl3
    """
    if not host:
        return _refuse("name the controller that left: host=CONTROLLER")
    try:
        return __utils__["openstack_ha_planned.forget"](_ctx(), site, host, _progress)
    except SaltInvocationError as exc:
        return _refuse(exc)
    except CommandExecutionError as exc:
        return _failed({"host": host, "failed": str(exc)})


def pause(site=None, reason=None):
    """
    Stop the remediation loop acting on a site until ``resume``: for work that takes every
    node of a cluster down on purpose (re-addressing the site, a cluster-wide restart), where
    the loop would start again what you stopped. HAProxy's own health checks keep working;
    ``status`` shows the pause. For one controller, use ``maintenance`` instead.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.pause reason="moving the site to IPv6"
        salt-run openstack_ha.resume
    """
    try:
        return __utils__["openstack_ha_planned.pause"](_ctx(), site, reason)
    except SaltInvocationError as exc:
        return _refuse(exc)


def resume(site=None):
    """
    End ``pause``: the loop acts on the site's events again (the next heartbeat shows it
    whatever is wrong by then).

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.resume
    """
    try:
        return __utils__["openstack_ha_planned.resume"](_ctx(), site)
    except SaltInvocationError as exc:
        return _refuse(exc)


def galera_recover(site=None, confirm=False, timeout=None):
    """
    Bring a Galera cluster back after every node went down (power loss, all killed).

    Asks every node for its last committed position (``mariadbd --wsrep-recover`` where the
    server is down), picks the node with the highest seqno, writes its grastate.dat (uuid,
    seqno and safe_to_bootstrap together), bootstraps the cluster there, then starts the
    other nodes one at a time, each Synced (by IST when the survivor's gcache has their gap)
    before the next.

    site
        the site (default: the only one).
    confirm
        without ``confirm=True`` only the plan is shown and nothing changes.

    Refuses when a node still runs a Primary component (nothing to recover), when fewer
    than a quorum of the Galera nodes answer, or when the nodes disagree on the cluster UUID.
    Returns the plan (and, when confirmed, what was done).

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.galera_recover
        salt-run openstack_ha.galera_recover confirm=True
    """
    try:
        result = __utils__["openstack_ha_galera_recover.recover"](_ctx(), site, confirm, timeout, _progress)
    except SaltInvocationError as exc:
        return _refuse(exc)
    if "refused" in result:
        return _refuse(result.pop("refused"), **result)
    return _failed(result) if "failed" in result else result
