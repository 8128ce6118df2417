"""
The master's side of openstack_ha: the remediation loop's verify-decide-act, and the operator
commands.

:depends: the ``openstack_ha`` execution module synced to the controllers; the master's pillar
    (``pillar/top.sls``) naming each controller's site.

.. code-block:: bash

    salt-run openstack_ha.status               # one table per site
    salt-run openstack_ha.status --out json    # the same, machine-readable
    salt-run openstack_ha.drain host=lab-ctrl2 # planned maintenance of a whole controller
    salt-run openstack_ha.drain service=nova backend=lab-ctrl2
    salt-run openstack_ha.undrain host=lab-ctrl2

The reactor calls :func:`handle_event` with every ``openstack_ha_*`` beacon event. An event is
a hint, never proof: the runner re-asks every controller of the reporter's site (targeted
calls whose returns Salt authenticates) and acts only on what a quorum of them reports now.
"""

import concurrent.futures
import contextlib
import fcntl
import logging
import os
import threading
import time

import salt.cache
import salt.client
import salt.key
import salt.pillar
import salt.utils.event
import salt.utils.minions
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha"


def __virtual__():
    return __virtualname__


MAX_DECISIONS = 200
# Seconds the loop waits for the controllers' answers. A probe round takes at most the probe
# timeout and an admin-socket command milliseconds: a controller silent this long is
# unreachable, and the quorum of the others decides without it.
VERIFY_TIMEOUT = 2
ACT_TIMEOUT = 3
# Once a quorum of controllers answered a verification, how much longer the others are
# awaited. A healthy controller answers within about the probe timeout of the others.
QUORUM_GRACE = 0.75


def _pillar_model(minion):
    """The ``openstack_ha`` pillar the master compiles for ``minion`` (trusted), or {}."""
    _, grains, _ = salt.utils.minions.get_minion_data(minion, __opts__)
    pillar = salt.pillar.get_pillar(__opts__, grains or {}, minion, saltenv="base").compile_pillar()
    return _expose(pillar.get("openstack_ha") or {})


def _expose(value):
    """``value`` with Salt 3008's masked pillar values unwrapped (other releases: unchanged)."""
    try:
        import salt.utils.secret
    except ImportError:
        return value
    return salt.utils.secret.expose(value)


_MODEL_CACHE = {}
MODEL_TTL = 30  # seconds a compiled site model is reused by the reactor's runner calls
# The last valid model of each site, and the sites whose pillar is invalid now: the loop keeps
# acting on the last valid model (a typo in the pillar must not switch remediation off).
_LAST_GOOD = {}
_BAD_PILLAR = {}
# Controller id -> site, from every model built: a reporter that is not in it costs no
# pillar compilation (see _controller_site).
_CONTROLLERS = {"map": {}, "time": 0.0}
_CONTROLLERS_LOCK = threading.Lock()


class ModelError(Exception):
    """A pillar too broken to build a model from (caught by name, like the model's own ModelError)."""


def _build(raw):
    """The validated model of a raw ``openstack_ha`` pillar. Raises the model's ModelError."""
    return __utils__["openstack_ha_model.build"](_defaults(), raw)


def _site_model(minion):
    """The validated model of the site ``minion`` is a controller of, or None if it is not one.

    Compiling pillar takes a good part of a second; the reactor calls this for every event, so
    a result is reused for ``MODEL_TTL`` seconds (a pillar change is seen after that).

    When the site's pillar is invalid now, the last valid model of the site is returned (None
    when this master never saw one) and ``openstack_ha/alert/bad_pillar`` is raised, naming the
    key paths, once per ``MODEL_TTL`` until the pillar is fixed.
    """
    cached = _MODEL_CACHE.get(minion)
    if cached and time.monotonic() - cached[0] < MODEL_TTL:
        return cached[1]
    raw = _pillar_model(minion)
    listed = raw.get("controllers")
    readable = isinstance(listed, list) and all(isinstance(c, dict) for c in listed)
    ids = [c.get("id") for c in listed] if readable else []
    site = raw.get("site") if isinstance(raw.get("site"), str) else _CONTROLLERS["map"].get(minion)
    model = None
    if readable and minion not in ids:
        _CONTROLLERS["map"].pop(minion, None)  # no longer a controller (or never was)
    elif minion in ids or minion in _CONTROLLERS["map"]:
        try:
            if not readable:
                raise ModelError("openstack_ha:controllers: expected a list of mappings")
            model = _build(raw)
        except Exception as exc:  # ModelError, from a module loaded by Salt's loader
            if type(exc).__name__ != "ModelError":
                raise
            model = _bad_pillar(site, minion, str(exc))
        else:
            if model is not None:
                _remember_good(model["site"], raw)
                _LAST_GOOD[model["site"]] = (time.time(), model)
                _BAD_PILLAR.pop(model["site"], None)
                for ctrl in model["controllers"]:
                    _CONTROLLERS["map"][ctrl["id"]] = model["site"]
    _MODEL_CACHE[minion] = (time.monotonic(), model)
    return model


def _remember_good(site, raw):
    """Keep ``site``'s last valid pillar in the master cache (root-only, where the master's
    pillar cache also lives), so every runner process (the reactor's, an operator's
    ``status``) can fall back to it; written only when it changed."""
    try:
        kept = _cache().fetch("openstack_ha/" + site, "last_valid_pillar") or {}
        if kept.get("pillar") != raw:
            _cache().store("openstack_ha/" + site, "last_valid_pillar", {"pillar": raw, "time": time.time()})
    except Exception as exc:  # the fallback is a convenience; never stop the loop for it
        log.debug("openstack_ha: could not keep the last valid pillar of %s: %s", site, exc)


def _recall_good(site):
    """(time, model) from the last valid pillar kept by :func:`_remember_good`, or None."""
    try:
        kept = _cache().fetch("openstack_ha/" + site, "last_valid_pillar") or {}
        if kept.get("pillar"):
            return (kept["time"], _build(kept["pillar"]))
    except Exception as exc:
        log.debug("openstack_ha: no usable last valid pillar of %s: %s", site, exc)
    return None


def _bad_pillar(site, minion, error):
    """Record that ``site``'s pillar is invalid, alert (at most once per ``MODEL_TTL``), and
    return the site's last valid model or None."""
    now = time.time()
    good = _LAST_GOOD.get(site) or _recall_good(site)
    bad = _BAD_PILLAR.setdefault(site, {"since": now, "alerted": 0.0})
    bad.update(error=error, minion=minion)
    if now - bad["alerted"] >= MODEL_TTL:
        bad["alerted"] = now
        log.error("openstack_ha: the pillar of site %s is invalid (%s); %s", site, error,
                  "acting on the last valid model" if good else "no valid model known: remediation stopped")
        _fire("openstack_ha/alert/bad_pillar", {
            "site": site, "what": "alert", "alert": "bad_pillar", "why": error, "decided_by": "remediation",
            "reported_by": minion, "time": now,
            "acting_on": "the last valid model, from {}".format(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(good[0])))
                         if good else "nothing: no valid model known since the master started"})
    return good[1] if good else None


def _publish_controller_map(ids):
    """Write the controller ids where the reactor's admission (``openstack_ha_admit``) reads
    them: events from anyone else are then dropped before a runner call."""
    import json

    path = os.path.join(__opts__["cachedir"], "openstack_ha-controllers.json")
    try:
        __utils__["openstack_ha_files.write_atomic"](path, json.dumps({"controllers": ids, "time": time.time()}), mode=0o644)
    except OSError as exc:
        log.warning("openstack_ha: could not write the controller map for the reactor (%s): %s", path, exc)


def _controller_site(reporter):
    """The site ``reporter`` is a controller of, from the cached map, or None. The map is
    rebuilt (every accepted minion's pillar) at most once per ``MODEL_TTL``; an id not in it
    is dropped before any per-reporter pillar work, so a flood of events from (or naming)
    minions that are not controllers costs a dictionary lookup each."""
    with _CONTROLLERS_LOCK:  # the reactor's threads wait for one rebuild, never see half a map
        if time.monotonic() - _CONTROLLERS["time"] >= MODEL_TTL:
            found = {ctrl: site for site, ids in _sites().items() for ctrl in ids}
            _CONTROLLERS["map"].update(found)
            _CONTROLLERS["time"] = time.monotonic()
            _publish_controller_map(sorted(_CONTROLLERS["map"]))
    return _CONTROLLERS["map"].get(reporter)


def _defaults():
    import salt.fileclient
    import salt.utils.yaml

    with salt.fileclient.get_file_client(__opts__) as client:
        path = client.cache_file("salt://openstack_ha/defaults.yaml")
    with open(path) as fh:
        raw = salt.utils.yaml.safe_load(fh)
    return __utils__["openstack_ha_model.deep_merge"](raw["openstack_ha"], raw["os_family"]["Debian"])


def _sites():
    """Map site name to its controller ids, from the pillar the master compiles."""
    sites = {}
    accepted = salt.key.get_key(__opts__).list_status("accepted").get("minions", [])
    for minion in accepted:
        model = _pillar_model(minion)
        listed = model.get("controllers") if isinstance(model.get("controllers"), list) else []
        ids = [c.get("id") for c in listed if isinstance(c, dict)]
        if minion in ids and isinstance(model.get("site"), str):
            sites.setdefault(model["site"], ids)
    return sites


# ------------------------------------------------------------------- records (master cache)


def _cache():
    return salt.cache.factory(__opts__)


def _load(site):
    data = _cache().fetch("openstack_ha/" + site, "records") or {}
    data.setdefault("backends", {})
    data.setdefault("maintenance", [])
    data.setdefault("decisions", [])
    return data


def _store(site, data):
    data["decisions"] = data["decisions"][-MAX_DECISIONS:]
    _cache().store("openstack_ha/" + site, "records", data)


@contextlib.contextmanager
def _site_lock(site):
    """One decision at a time per site on this master (the reactor runs events in parallel)."""
    path = os.path.join(__opts__["cachedir"], "openstack_ha-{}.lock".format(site))
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _note_ignored(why, who, tag):
    """Keep a trace of an ignored event or answer (see ``_utils/openstack_ha_trace.py``)."""
    __utils__["openstack_ha_trace.note"](__opts__, "runner", why, who, tag)


def _fire(tag, data):
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(data, tag)


def _announce(records, site, entry, tag=None):
    """Append one decision to the site's records and, when it has a ``tag``, fire it as an event."""
    records["decisions"].append(dict(entry, site=site))
    if tag:
        _fire(tag, dict(entry, site=site))


# ------------------------------------------------------------------------- verify and act


# One LocalClient per thread and channel: a client is not thread-safe, and one shared client
# (behind a lock) made every publish of the master wait for the slowest one in flight (a
# verification waiting for a cut-off controller held up every other site's drains).
_CLIENTS = threading.local()


def _accepted_key(minion):
    """The public key the master accepted for ``minion`` (a cryptography key object), or None.
    Read through the master's own key store (``keys.cache_driver``), cached per key text."""
    from cryptography.hazmat.primitives import serialization

    try:
        found = salt.cache.Cache(__opts__, driver=__opts__.get("keys.cache_driver", "localfs_key")).fetch("keys", minion)
    except Exception:  # an id that is not a valid key name, an unreadable store
        return None
    if not found or found.get("state") != "accepted" or not found.get("pub"):
        return None
    text = found["pub"]
    key = _KEYS.get(text)
    if key is None:
        try:
            key = _KEYS[text] = serialization.load_pem_public_key(text.encode())
        except ValueError:
            return None
    return key


_KEYS = {}
_NO_ANSWER = object()


def authenticated_answer(minion, nonce, fun, reply):
    """
    The answer inside ``reply`` when it is signed by ``minion``'s accepted key for this
    question (``nonce`` and ``fun``), else ``_NO_ANSWER``: a forged, replayed, altered or
    malformed reply counts as no answer from that controller (see ``openstack_ha_signed``).
    """
    import base64
    import json

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if not isinstance(reply, dict) or not isinstance(reply.get("body"), str) or not isinstance(reply.get("sig"), str):
        return _NO_ANSWER
    key = _accepted_key(minion)
    if key is None:
        return _NO_ANSWER
    try:
        key.verify(base64.b64decode(reply["sig"]), reply["body"].encode(), padding.PKCS1v15(), hashes.SHA256())
        data = json.loads(reply["body"])
    except (InvalidSignature, ValueError, TypeError):
        return _NO_ANSWER
    if not isinstance(data, dict) or data.get("id") != minion or data.get("nonce") != nonce or data.get("fun") != fun:
        return _NO_ANSWER
    return data.get("answer")


def _publish(controllers, fun, args=(), timeout=5, channel="local", kwargs=None, wait_for=None, quorum=None):
    """Call ``fun`` on ``controllers`` in one publish; return {controller: answer} of those
    whose answer arrived within ``timeout`` seconds, signed by that controller's own key (a
    hard deadline: an unreachable controller costs exactly ``timeout``, never Salt's extra
    find_job rounds).

    wait_for
        the controllers worth waiting for (default: all); once every one of them answered,
        the call returns without waiting out the others (a controller known to be cut off
        does not hold up every decision of its site).
    quorum
        once this many answered, the rest get ``QUORUM_GRACE`` seconds more at most (a
        controller cut off a moment ago costs the grace once, not the whole timeout).

    Answers are read off the event bus (fast), but believed only when their signature checks
    out (:func:`authenticated_answer`): a forged ``salt/job/<jid>/ret/<id>`` event from
    another minion is counted as no answer, and the real one is still awaited.

    The reactor runs this module in one long-lived process: its LocalClient (and the
    connections it sets up, more than half a second the first time) is kept and reused, one
    per ``channel`` (slow questions, like RabbitMQ's reports, use their own channel so that
    they never hold up a drain).
    """
    import secrets

    returns = {}
    nonce = secrets.token_hex(16)
    call_args = [fun, list(args), dict(kwargs or {}), nonce]
    clients = getattr(_CLIENTS, "by_channel", None)
    if clients is None:
        clients = _CLIENTS.by_channel = {}
    client = clients.get(channel)
    if client is None:
        client = clients[channel] = salt.client.LocalClient(mopts=__opts__)
    pub = client.run_job(controllers, "openstack_ha_signed.call", call_args, tgt_type="list", timeout=timeout, listen=True)
    if not pub or not pub.get("jid"):
        log.warning("openstack_ha: could not publish %s to %s", fun, ", ".join(controllers))
        return {}
    expected = set(pub.get("minions") or controllers) & set(controllers)
    enough = expected & set(wait_for if wait_for is not None else controllers)
    deadline = time.monotonic() + timeout
    for raw in client.get_returns_no_block("salt/job/{}/ret".format(pub["jid"]), "startswith"):
        if raw is not None:
            data = raw.get("data") or {}
            who = data.get("id")
            if who in expected and who not in returns and "return" in data:
                answer = authenticated_answer(who, nonce, fun, data["return"])
                if answer is not _NO_ANSWER:
                    returns[who] = answer
                else:
                    _note_ignored("unauthenticated answer", who, "salt/job/{}/ret".format(pub["jid"]))
        if quorum and len(returns) >= quorum and deadline > time.monotonic() + QUORUM_GRACE:
            # A quorum answered: the others get a short grace, not the whole timeout.
            deadline = time.monotonic() + QUORUM_GRACE
        if set(returns) >= enough or time.monotonic() >= deadline:
            break
    return returns


def _ask(controllers, fun, args=(), timeout=5, channel="local"):
    """Call ``fun`` on every controller; return the dict answers of those that answered."""
    return {c: r for c, r in _publish(controllers, fun, args, timeout, channel).items() if isinstance(r, dict)}


# Controllers that missed a verification, per site: {site: {controller: since}}. The next
# rounds do not wait for them (a quorum of the others decides at once); an answer clears it.
_SILENT = {}


def _wait_for(model):
    """The controllers worth waiting for in this site: all but the known-silent ones, unless
    that would leave fewer than a quorum (then everyone is awaited)."""
    controllers = [c["id"] for c in model["controllers"]]
    silent = _SILENT.get(model["site"], {})
    awake = [c for c in controllers if c not in silent]
    return awake if len(awake) >= __utils__["openstack_ha_model.quorum_size"](model) else controllers


def _note_answers(model, answered):
    """Remember who missed this round (and who is back)."""
    silent = _SILENT.setdefault(model["site"], {})
    now = time.time()
    for ctrl in (c["id"] for c in model["controllers"]):
        if ctrl in answered:
            silent.pop(ctrl, None)
        else:
            silent.setdefault(ctrl, now)


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
                for k in ("running_nodes", "members", "alarms", "expected"))
    partitions = view.get("partitions")
    return lists and (partitions is None or isinstance(partitions, dict)) and all(
        isinstance(view.get(k, False), bool) for k in ("running", "app_running"))


def _verify(model, service=None):
    """Every controller's fresh view of ``service`` (or of all services), from the model we
    hold: {controller: view} of those that answered with a well-formed view in time."""
    targets = __utils__["openstack_ha_model.probe_targets"](model, service)
    controllers = [c["id"] for c in model["controllers"]]
    answers = _publish(controllers, "openstack_ha_probe.service_view",
                       (service, targets, model["remediation"]["probe"]["timeout"], model["haproxy"]["socket"]),
                       timeout=VERIFY_TIMEOUT, wait_for=_wait_for(model),
                       quorum=__utils__["openstack_ha_model.quorum_size"](model))
    views = {}
    for ctrl, view in answers.items():
        if valid_view(view):
            views[ctrl] = view
        else:
            _note_ignored("malformed verification answer", ctrl, "openstack_ha_probe.service_view")
    _note_answers(model, views)
    return views


def _backends(model, service=None, backend=None):
    """{"service/server": service} for every watched backend in scope (Galera included)."""
    keys = {}
    for name, svc in sorted(__utils__["openstack_ha_model.backend_services"](model).items()):
        if service is None or name == service:
            for ctrl in svc["servers"]:
                if backend is None or ctrl["id"] == backend:
                    keys["{}/{}".format(name, ctrl["id"])] = name
    return keys


def _act(model, actions, who, reporter):
    """Apply every drain/restore of one decision round in one publish to every controller;
    wait only for the controllers that are not known to be cut off (they catch up when they
    answer again: the next verification sees their HAProxy out of line and re-applies).
    Returns one decision entry per action."""
    controllers = [c["id"] for c in model["controllers"]]
    changes = [[a["service"], a["backend"], "drain" if a["action"] == "drain" else "ready"] for a in actions]
    answers = _publish(controllers, "openstack_ha_haproxy.set_servers_state", (changes,), timeout=ACT_TIMEOUT,
                       wait_for=_wait_for(model))
    answers = {c: a for c, a in answers.items() if isinstance(a, dict)}
    entries = []
    for action, (service, backend, state) in zip(actions, changes):
        key = "{}/{}".format(service, backend)
        applied = {c: bool((a.get(key) or {}).get("changed")) for c, a in sorted(answers.items()) if isinstance(a.get(key), dict) and "error" not in a[key]}
        entries.append({
            "what": action["action"], "service": service, "backend": backend, "state": state,
            "why": action["reason"], "evidence": action["evidence"], "decided_by": who,
            "reported_by": reporter, "time": time.time(),
            "applied": applied, "not_applied": sorted(set(controllers) - set(applied)),
        })
    return entries


_LAST_VERIFY = {}


def _reconcile(model, reporter, service=None, backend=None, who="remediation", arrived=None):
    """Verify every backend in scope with every controller, decide, act, record, announce.

    Coalesces: when another verification of the same scope (or of the whole site) started
    after this event arrived, it already saw a fresher state, and this one does nothing.

    The site lock is held only to decide and to record, never across a wait for the
    controllers (a cut-off controller must not queue every other decision of its site): the
    verification runs before it, the one publish of all of this round's drains and restores
    after the write-ahead record.
    """
    site = model["site"]
    quorum = __utils__["openstack_ha_model.quorum_size"](model)
    with _site_lock(site):
        last = _LAST_VERIFY.get(site, {})
        if arrived is not None and max(last.get(None, 0), last.get(service, 0)) > arrived:
            return []
        started = time.monotonic()
        _LAST_VERIFY.setdefault(site, {})[service] = started
    started_wall = time.time()
    views = _verify(model, service)
    verified = time.monotonic()
    with _site_lock(site):
        records = _load(site)
        actions = __utils__["openstack_ha_decide.decide"](
            _backends(model, service, backend), views, quorum, records["backends"], time.time(),
            model["remediation"]["cooldown"], maintenance=records["maintenance"])
        # Another round that verified after this one began already acted on these backends.
        actions = [a for a in actions if not (a["action"] in ("drain", "restore") and
                   (records["backends"].get(a["key"]) or {}).get("time", 0) > started_wall and
                   records["backends"][a["key"]].get("state") == ("drain" if a["action"] == "drain" else "ready"))]
        moves = [a for a in actions if a["action"] in ("drain", "restore")]
        for action in moves:
            # Write-ahead: the loop's ownership of this drain is on disk before any HAProxy
            # changes, so a runner killed mid-action (a master restart) still restores it.
            records["backends"][action["key"]] = {"state": "drain" if action["action"] == "drain" else "ready",
                                                  "by": "remediation", "time": time.time()}
        if moves:
            _store(site, records)
    entries = _act(model, moves, who, reporter) if moves else []
    acted = time.monotonic()
    done = []
    with _site_lock(site):
        records = _load(site)
        for entry in entries:
            entry["timing"] = {"queued": round(started - arrived, 3) if arrived else None,
                               "verify": round(verified - started, 3), "act": round(acted - verified, 3)}
            records["backends"]["{}/{}".format(entry["service"], entry["backend"])] = {
                "state": entry["state"], "by": "remediation", "time": entry["time"]}
            tag = "openstack_ha/backend/" + ("drained" if entry["what"] == "drain" else "restored")
            _announce(records, site, entry, tag)
            done.append(entry)
        for action in actions:
            if action["action"] in ("drain", "restore"):
                continue
            entry = {"what": action["action"], "alert": action.get("alert"), "service": action["service"],
                     "backend": action["backend"], "why": action["reason"], "evidence": action["evidence"],
                     "decided_by": who, "reported_by": reporter, "time": time.time()}
            tag = "openstack_ha/alert/" + action["alert"] if action["action"] == "alert" else None
            _announce(records, site, entry, tag)
            done.append(entry)
        if done:
            _store(site, records)
    return done


def _arrival(data):
    """When the master received the event, on this process's monotonic clock: from the
    ``_stamp`` the master sets on every event it fires (a minion cannot choose it), never
    later than now. Coalescing compares this with when verifications started, so events that
    waited in the reactor's queue (a flood) are answered by one verification, not one each."""
    import datetime

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


def _take_pending(reporter, beacon, data):
    """Take this event's entry out of the reactor's table of waiting events (see
    ``openstack_ha_admit``) and fold what was coalesced into it into ``data``: a change among
    them makes this a change, and the services they named are checked too. Outside the
    reactor (an operator's call) there is no table and ``data`` is returned as it is."""
    import salt

    lock = salt.__dict__.get("_openstack_ha_pending_lock")
    if lock is None:
        return data
    with lock:
        entry = salt.__dict__.get("_openstack_ha_pending", {}).pop((reporter, beacon), None)
    if not entry or not entry["folded"] or not isinstance(data, dict):
        return data
    merged = dict(data)
    if "change" in entry["kinds"]:
        merged["kind"] = "change"
    named = {c.get("service") for c in data.get("changes") or [] if isinstance(c, dict)} | entry["services"]
    merged["changes"] = [{"service": name} for name in sorted(n for n in named if isinstance(n, str))]
    if len(named) != 1 or any(k not in ("change", "heartbeat") for k in entry["kinds"]):
        merged["changes"] = []  # several or unknown: the whole site is checked
        merged["kind"] = "change"
    return merged


def handle_event(tag, data):
    """
    The reactor's single entry point: ``tag`` and ``data`` of one beacon event.

    The event only says where to look: the reporter named in the tag must be a controller of
    a site in the master's pillar (else the event is ignored), the service named in the data
    must exist in that site (else the whole site is checked), and the decision rests on fresh,
    authenticated answers from the site's controllers.
    """
    arrived = _arrival(data)
    parts = str(tag).split("/")
    if len(parts) < 4 or parts[0] != "salt" or parts[1] != "beacon":
        return {"ignored": "not a beacon event"}
    reporter, beacon = parts[2], parts[3]
    data = _take_pending(reporter, beacon, data)
    if _controller_site(reporter) is None:
        _note_ignored("event from a minion that is not a controller", reporter, tag)
        return {"ignored": "{!r} is not a controller".format(reporter)}
    model = _site_model(reporter)
    if model is None:
        _note_ignored("event from a minion that is not a controller (or whose site has no valid pillar)", reporter, tag)
        return {"ignored": "{!r} is not a controller of a site with a valid pillar".format(reporter)}
    if not model["remediation"]["enabled"]:
        return {"ignored": "remediation disabled for site " + model["site"]}
    if beacon == "openstack_ha_vip":
        return {"site": model["site"], "decisions": _check_vips(model, reporter, data if isinstance(data, dict) else {})}
    if beacon == "openstack_ha_rabbitmq":
        return {"site": model["site"], "decisions": _check_rabbitmq(model, reporter, data if isinstance(data, dict) else {})}
    if beacon == "openstack_ha_galera":
        if reporter not in [n["id"] for n in __utils__["openstack_ha_model.galera_nodes"](model)]:
            return {"ignored": "{!r} is not a Galera node".format(reporter)}
        if isinstance(data, dict) and data.get("kind") == "heartbeat" and data.get("healthy") is True and not _loop_drained(model, "galera"):
            return {"site": model["site"], "decisions": []}
        return {"site": model["site"], "decisions": _reconcile(model, reporter, service="galera", arrived=arrived)}
    if isinstance(data, dict) and data.get("kind") == "heartbeat" and not _heartbeat_needs_work(model, data):
        return {"site": model["site"], "decisions": []}
    services = set()
    if isinstance(data, dict) and data.get("kind") == "change":
        for change in data.get("changes") or []:
            if isinstance(change, dict) and change.get("service") in __utils__["openstack_ha_model.backend_services"](model):
                services.add(change["service"])
    if len(services) == 1:
        return {"site": model["site"], "decisions": _reconcile(model, reporter, service=services.pop(), arrived=arrived)}
    return {"site": model["site"], "decisions": _reconcile(model, reporter, arrived=arrived)}


def _heartbeat_needs_work(model, data):
    """A heartbeat is worth a full check when its view reports a backend down (or is not a
    view), or when the loop has drained a backend it may have to restore."""
    view = data.get("view")
    if not isinstance(view, dict) or any(state != "up" for state in view.values()):
        return True
    return _loop_drained(model)


def _loop_drained(model, service=None):
    """True when the remediation loop holds a drain (of ``service``) it may have to undo."""
    records = _load(model["site"])
    return any(r.get("by") == "remediation" and r.get("state") == "drain"
               and (service is None or key.split("/")[0] == service) for key, r in records["backends"].items())


def _vip_view(model):
    """Ask every controller which VIPs it holds. Returns (answers {controller: [vip names]},
    holders {vip: [controllers]}, quorum reached)."""
    controllers = [c["id"] for c in model["controllers"]]
    addresses = {name: vip["address"] for name, vip in model["vips"].items()}
    held = {c: a for c, a in _publish(controllers, "openstack_ha_probe.vips_held", (addresses,), timeout=VERIFY_TIMEOUT).items()
            if isinstance(a, list) and all(isinstance(n, str) for n in a)}
    holders = {vip: sorted(c for c, names in held.items() if vip in names) for vip in sorted(model["vips"])}
    return held, holders, len(held) >= __utils__["openstack_ha_model.quorum_size"](model)


def _check_vips(model, reporter, data=None):
    """
    Ask every controller which VIPs it holds; alert on a split brain, an orphaned VIP (every
    controller answered, none holds it), a VIP no answering controller holds while some did
    not answer (``vip_unconfirmed``) or too few answers (``no_quorum``). With a quorum and
    one holder per VIP, make the Keystone catalog follow: repoint every endpoint to the new holder (``active_controller`` mode) or
    repair drift (``vip`` mode); never while the view is split or short of a quorum.
    """
    reported = (data or {}).get("time")
    # Seconds from the beacon seeing the change to this check starting (the event's way through
    # the master and the reactor); kept in the record of a repoint, with the other parts.
    event_lag = round(time.time() - reported, 3) if isinstance(reported, (int, float)) else None
    asked = time.monotonic()
    held, holders, quorum = _vip_view(model)
    view_took = round(time.monotonic() - asked, 3)
    decisions = []
    now = time.time()
    base = {"what": "alert", "decided_by": "remediation", "reported_by": reporter, "time": now, "site": model["site"], "evidence": held}
    if not quorum:
        decisions.append(dict(base, alert="no_quorum", vip=", ".join(sorted(model["vips"])),
                              why="only {} of {} controllers answered about the VIPs ({}): no repointing".format(
                                  len(held), len(model["controllers"]), ", ".join(sorted(held)) or "none")))
    else:
        silent = sorted(c["id"] for c in model["controllers"] if c["id"] not in held)
        for vip, who in holders.items():
            if len(who) > 1:
                decisions.append(dict(base, alert="split_brain", vip=vip, holders=who,
                                      why="VIP {} is held by {}".format(vip, ", ".join(who))))
            elif not who and silent:
                # Not orphaned as far as we know: a controller that did not answer may hold it.
                decisions.append(dict(base, alert="vip_unconfirmed", vip=vip, holders=[],
                                      why="no controller that answered holds VIP {} and {} did not answer: "
                                          "no repointing".format(vip, ", ".join(silent))))
            elif not who:
                decisions.append(dict(base, alert="vip_orphaned", vip=vip, holders=[],
                                      why="VIP {} is held by nobody (every controller answered)".format(vip)))
    for entry in decisions:
        _fire("openstack_ha/alert/" + entry["alert"], entry)
    if decisions:
        with _site_lock(model["site"]):
            records = _load(model["site"])
            records["decisions"].extend(decisions)
            _store(model["site"], records)
        return decisions
    return _follow_catalog(model, {vip: who[0] for vip, who in holders.items()}, held, reporter, data or {},
                           {"event_lag": event_lag, "view_took": view_took, "reported_at": reported if event_lag is not None else None})


# ---------------------------------------------------------------------------- RabbitMQ


def _rabbit_healthy(view, expected):
    return (view.get("running") and view.get("app_running") and not any((view.get("partitions") or {}).values())
            and not view.get("alarms") and sorted(view.get("running_nodes") or []) == sorted(expected))


def _check_rabbitmq(model, reporter, data):
    """
    Ask every RabbitMQ node of the site for its view of the cluster; alert on partitions
    (``rabbitmq_partition``), resource alarms (``rabbitmq_alarm``) and nodes that are down or
    paused (``rabbitmq_node_down``); with ``rabbitmq:heal_partitions``, restart the app of
    one partitioned minority node (never two at once, never within the cooldown).
    """
    nodes = [n["id"] for n in __utils__["openstack_ha_model.cluster_nodes"](model, "rabbitmq")]
    if reporter not in nodes:
        return []
    expected = data.get("expected") or []
    if data.get("kind") == "heartbeat" and _rabbit_healthy(data, expected):
        if any(k.startswith("rabbitmq_") for k in (_load(model["site"]).get("rabbitmq") or {})):
            with _site_lock(model["site"]):  # healthy again: the next problem is news
                records = _load(model["site"])
                for kind in [k for k in records.get("rabbitmq", {}) if k.startswith("rabbitmq_")]:
                    del records["rabbitmq"][kind]
                _store(model["site"], records)
        return []
    views = {n: v for n, v in _ask(nodes, "openstack_ha_rabbitmq.report", timeout=12, channel="slow").items() if valid_rabbit_view(v)}
    expected = sorted({n for v in views.values() for n in v.get("expected") or []}) or expected
    problems = []
    partitioned = {n: v["partitions"] for n, v in views.items() if any((v.get("partitions") or {}).values())}
    if partitioned:
        problems.append(("rabbitmq_partition", "partitions seen by {}".format(", ".join(sorted(partitioned))), sorted(partitioned)))
    alarms = sorted({a for v in views.values() for a in v.get("alarms") or []})
    if alarms:
        problems.append(("rabbitmq_alarm", "resource alarms: " + "; ".join(alarms), alarms))
    running = sorted({n for v in views.values() if v.get("app_running") for n in v.get("running_nodes") or []})
    down = sorted(set(expected) - set(running))
    if down:
        problems.append(("rabbitmq_node_down", "not running (down, paused or unreachable): " + ", ".join(down), down))
    decisions = []
    site = model["site"]
    with _site_lock(site):
        records = _load(site)
        seen = records.setdefault("rabbitmq", {})
        now = time.time()
        for kind, why, subject in problems:
            last = seen.get(kind) or {}
            if last.get("subject") == subject and now - last.get("time", 0) < 4 * model["remediation"]["heartbeat"]:
                continue  # the same condition, already announced
            seen[kind] = {"subject": subject, "time": now}
            entry = {"what": "alert", "alert": kind, "service": "rabbitmq", "why": why, "evidence": views,
                     "decided_by": "remediation", "reported_by": reporter, "time": now}
            _announce(records, site, entry, "openstack_ha/alert/" + kind)
            decisions.append(entry)
        for kind in [k for k in list(seen) if k.startswith("rabbitmq_") and k not in {p[0] for p in problems}]:
            del seen[kind]
        majority = len(nodes) // 2 + 1
        minority = [n for n in nodes if n in partitioned and views[n].get("app_running") and len(views[n].get("running_nodes") or []) < majority]
        dead = [n for n in nodes if n in views and not views[n].get("running")]
        todo = None
        if model["rabbitmq"].get("heal_partitions", True) and minority and now - seen.get("heal_time", 0) >= model["remediation"]["cooldown"]:
            seen["heal_time"] = now
            todo = ("heal", minority[0], "openstack_ha_rabbitmq.restart_app", "openstack_ha/rabbitmq/healed",
                    "{} is on the minority side of a partition: its app restarted to rejoin the majority".format(minority[0]))
        elif dead and now - seen.get("restart_time", 0) >= model["remediation"]["cooldown"]:
            # Its controller answers but its RabbitMQ does not run at all (killed, crashed):
            # start it again; it rejoins its cluster by itself. One node per cooldown.
            seen["restart_time"] = now
            todo = ("restart", dead[0], "openstack_ha_rabbitmq.start", "openstack_ha/rabbitmq/restarted",
                    "RabbitMQ is not running on {} while its controller answers: started again".format(dead[0]))
        _store(site, records)
    if todo:
        # Outside the site lock: a RabbitMQ restart takes seconds, drains must not wait for it.
        what, target, fun, tag, why = todo
        answer = _publish([target], fun, timeout=150, channel="slow").get(target)
        entry = {"what": what, "service": "rabbitmq", "backend": target, "why": why, "evidence": views, "result": answer,
                 "decided_by": "remediation", "reported_by": reporter, "time": time.time()}
        with _site_lock(site):
            records = _load(site)
            _announce(records, site, entry, tag)
            _store(site, records)
        decisions.append(entry)
    return decisions


# ------------------------------------------------------------------------- Keystone catalog


_KEYSTONE = {}


def _keystone_admin(site):
    """The site's Keystone admin account from the master config (``openstack_ha_keystone:
    <site>``), or None when this master does not manage that site's catalog."""
    admin = (__opts__.get("openstack_ha_keystone") or {}).get(site)
    return admin if isinstance(admin, dict) else None


def _keystone_urls(model, admin):
    """Where the runner reaches Keystone: ``auth_url`` from the admin config, else the
    identity service on its VIP (through HAProxy), then on each controller directly."""
    if admin.get("auth_url"):
        return admin["auth_url"] if isinstance(admin["auth_url"], list) else [admin["auth_url"]]
    identity = [n for n, svc in sorted(model["services"].items()) if svc["catalog"]["type"] == "identity"]
    if not identity:
        raise SaltInvocationError("site {} has no service of catalog type identity: set openstack_ha_keystone:{}:auth_url".format(
            model["site"], model["site"]))
    svc, scheme = model["services"][identity[0]], model["keystone"]["scheme"]
    urls = ["{}://{}:{}/v3".format(scheme, model["vips"][svc["vip"]]["address"], svc["port"])]
    return urls + ["{}://{}:{}/v3".format(scheme, c["address"], svc.get("backend_port", svc["port"])) for c in model["controllers"]]


def _keystone(model):
    """The site's Keystone session, kept between calls (its token too). Raises
    SaltInvocationError when the master config has no admin account for the site."""
    site = model["site"]
    admin = _keystone_admin(site)
    if admin is None or not admin.get("username") or not admin.get("password"):
        raise SaltInvocationError("no Keystone admin account for site {0} in the master config: set "
                                  "openstack_ha_keystone:{0}:username and :password (and :project)".format(site))
    urls = _keystone_urls(model, admin)
    key = (tuple(urls), admin["username"], str(admin["password"]), admin.get("project", "admin"),
           admin.get("user_domain", "Default"), admin.get("project_domain", "Default"), model["keystone"]["timeout"])
    cached = _KEYSTONE.get(site)
    if cached is None or cached[0] != key:
        cached = _KEYSTONE[site] = (key, __utils__["openstack_ha_keystone.connect"](
            urls, admin["username"], str(admin["password"]), key[3], key[4], key[5], key[6]))
    return cached[1]


def _catalog_failure(exc):
    """The kind of an expected failure of :func:`_catalog_sync`: ``auth``, ``unreachable`` or
    ``api`` for a Keystone error, ``unplanned`` for no holder of a VIP (ValueError) or no
    admin account / identity service (SaltInvocationError). Re-raises anything else."""
    kind = __utils__["openstack_ha_keystone.error_kind"](exc)
    if kind is not None:
        return kind
    if isinstance(exc, (ValueError, SaltInvocationError)):
        return "unplanned"
    raise exc


def _remembered(services, endpoints, updates=(), done=()):
    """The parts of Keystone's catalog a later repoint needs (service ids, names and types;
    endpoint ids, services, interfaces, regions and URLs), with the ``updates`` whose keys are
    in ``done`` applied: what Keystone holds after them."""
    moved = {e["id"]: e["new"] for e in updates if "{}/{}".format(e["service"], e["interface"]) in done}
    return {"services": [{k: s.get(k) for k in ("id", "name", "type")} for s in services],
            "endpoints": [dict({k: e.get(k) for k in ("id", "service_id", "interface", "region_id", "enabled")},
                               url=moved.get(e["id"], e.get("url")), enabled=True if e["id"] in moved else e.get("enabled"))
                          for e in endpoints]}


def _catalog_sync(model, holders, test=False, repoint_only=False, known=None):
    """
    Make the site's Keystone catalog match the model (``holders``: {vip: controller} for the
    ``active_controller`` mode). Reads the whole catalog before it changes anything, so a
    refused token or an unreachable Keystone changes nothing. With ``repoint_only`` only the
    URLs of existing endpoints are changed; with ``known`` too (a ``seen`` of an earlier
    sync) the catalog is not read first: the updates go out at once, by endpoint id (an
    endpoint deleted since fails with 404 and the next, reading, sync finds it).

    Returns ``{"result", "changes", "comment", "repointed": [{service, interface, region,
    old, new}], "failed": {what: why}, "timings": {keystone_read, keystone_write, keystone_url},
    "seen": the catalog as Keystone holds it afterwards (for ``known``)}`` (timings and seen
    only when it got to Keystone's answers); ``result`` is None in test mode when something
    would change. Raises KeystoneError (the util's) and ValueError (no holder for a VIP).
    """
    wanted = __utils__["openstack_ha_model.catalog_endpoints"](model, holders)
    client = _keystone(model)
    started = time.monotonic()
    if known is not None and repoint_only:
        client.prefer_first()
        client.authenticate()
        services, endpoints, regions = known["services"], known["endpoints"], []
    else:
        read = _read_catalog(model, regions=True)
        services, endpoints, regions = read["services"], read["endpoints"], read["regions"]
    timings = {"keystone_read": round(time.monotonic() - started, 3), "keystone_url": client.url}
    changes = __utils__["openstack_ha_catalog.plan"](wanted, regions, services, endpoints)
    if repoint_only:
        # The automatic path only moves URLs of endpoints that exist; creating the catalog (and
        # removing duplicates) is the catalog state's job, run by an operator.
        changes = dict(changes, regions=[], services=[], create=[], delete=[])
    described = __utils__["openstack_ha_catalog.describe"](changes)
    summary = "{} endpoints of {} services in region {} ({} mode)".format(
        len(wanted), len(model["services"]), model["keystone"]["region"], model["keystone"]["endpoint_mode"])
    if not described:
        return {"result": True, "changes": {}, "comment": "the catalog is as wanted: " + summary, "repointed": [], "failed": {},
                "seen": _remembered(services, endpoints)}
    if test:
        return {"result": None, "changes": described, "repointed": [], "failed": {},
                "comment": "{} catalog change(s) would be made: {}".format(len(described), summary)}
    started = time.monotonic()
    before = dict(client.counts)
    outcome = __utils__["openstack_ha_catalog.apply"](client, changes)
    timings["keystone_write"] = round(time.monotonic() - started, 3)
    # What the updates had to work around (new tokens, reset connections, resent requests).
    timings["keystone_retries"] = {k: v - before.get(k, 0) for k, v in client.counts.items() if v != before.get(k, 0)}
    done = set(outcome["done"])
    applied = {k: v for k, v in described.items() if k in done}
    repointed = [{k: e[k] for k in ("service", "interface", "region", "old", "new")}
                 for e in changes["update"] if "{}/{}".format(e["service"], e["interface"]) in done]
    if outcome["failed"]:
        comment = "{} of {} catalog change(s) failed (the next check retries them): {}".format(
            len(outcome["failed"]), len(described), "; ".join("{}: {}".format(k, v) for k, v in sorted(outcome["failed"].items())))
        return {"result": False, "changes": applied, "comment": comment, "repointed": repointed, "failed": outcome["failed"], "timings": timings}
    # Endpoints created or deleted (the state's path) are not in what was read: no memory then.
    seen = _remembered(services, endpoints, changes["update"], done) if not (changes["create"] or changes["delete"]) else None
    return {"result": True, "changes": applied, "repointed": repointed, "failed": {}, "timings": timings, "seen": seen,
            "comment": "{} catalog change(s) made: {}".format(len(applied), summary)}


def _read_catalog(model, regions=False):
    """The site's catalog as Keystone holds it now: ``{"services", "endpoints", "took"}`` and,
    with ``regions``, ``"regions"`` (the lists read side by side, from the VIP on new
    connections; ``took`` in seconds). Raises KeystoneError."""
    client = _keystone(model)
    started = time.monotonic()
    client.prefer_first()
    client.authenticate()  # once, before the reads run side by side
    reads = {"services": client.services, "endpoints": client.endpoints}
    if regions:
        reads["regions"] = client.regions
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(reads)) as pool:
        futures = {name: pool.submit(read) for name, read in reads.items()}
        found = {name: future.result() for name, future in futures.items()}
    return dict(found, took=round(time.monotonic() - started, 3))


def _guarded_sync(model, holders, known):
    """:func:`_catalog_sync` of a repoint from ``known`` (a catalog read earlier, or a
    sync's memory); an expected failure (``known`` may be that failure) becomes an outcome
    with ``result`` False and the ``alert`` to raise."""
    try:
        if isinstance(known, Exception):
            raise known
        return _catalog_sync(model, holders, repoint_only=True, known=known)
    except Exception as exc:
        return {"result": False, "comment": str(exc), "repointed": [], "alert": "catalog_" + _catalog_failure(exc)}


def _record_sync(model, holders, entry, last, outcome, parts):
    """Store a loop's catalog sync (under the catalog lock): the site's catalog record (its
    ``generation`` one up), a ``repoint`` decision when endpoints moved, an alert when the
    catalog could not be brought in line (once per distinct failure). Returns the
    decisions and the new generation."""
    site = model["site"]
    decisions = []
    # The decision records are shared with the backend decisions: their lock for the update.
    with _site_lock(site):
        records = _load(site)
        generation = (records.get("catalog") or {}).get("generation", 0) + 1
        records["catalog"] = {"holders": holders, "ok": outcome["result"] is True, "checked": time.time(),
                              "comment": outcome["comment"], "mode": model["keystone"]["endpoint_mode"],
                              "seen": outcome.get("seen"), "generation": generation}
        if outcome["repointed"]:
            decisions.append(dict(entry, what="repoint", service="keystone", time=time.time(), **parts,
                                  **outcome.get("timings", {}), endpoints=outcome["repointed"], mode=model["keystone"]["endpoint_mode"],
                                  why="{} endpoint(s) repointed: {}".format(len(outcome["repointed"]), ", ".join(sorted(
                                      {"{} -> {}".format(e["old"], e["new"]) for e in outcome["repointed"]})))))
            _announce(records, site, decisions[-1], "openstack_ha/endpoint/repointed")
        # One alert per failure, not one per retry: the VIP heartbeats retry every few seconds.
        if outcome["result"] is not True and (last.get("ok", True) or last.get("comment") != outcome["comment"]):
            kind = outcome.get("alert") or "catalog_api"
            decisions.append(dict(entry, what="alert", alert=kind, service="keystone", time=time.time(),
                                  why="catalog not brought in line (retried on the next event): " + outcome["comment"]))
            _announce(records, site, decisions[-1], "openstack_ha/alert/" + kind)
        _store(site, records)
    return decisions, generation


def _follow_catalog(model, holders, evidence, reporter, data, timings=None):
    """
    After a quorum agreed on one holder per VIP: sync the catalog when the holders changed
    since the last sync, when the last sync failed, or on a VIP change event (a VIP moved:
    drift is repaired then too). Only URLs of existing endpoints are changed (creating the
    catalog is the catalog state's job). Fires ``openstack_ha/endpoint/repointed`` with the
    old and new URLs, or an alert (``catalog_auth``, ``catalog_unreachable``, ``catalog_api``)
    when Keystone could not be brought in line; the next event retries.

    Two steps. When the holders moved and the last sync went through, the endpoints are
    repointed at once from that sync's memory of the catalog (ids and URLs: no read first,
    the clients are waiting). Then the catalog is read, without holding the catalog lock (a
    slow read must never hold up the next repoint), and what is still not as wanted is put
    right, unless another sync was recorded meanwhile (its own read judges the catalog then).

    The record of a repoint says how long Keystone took (``took``), when the endpoints were
    repointed (``repointed_at``, epoch) and, from ``timings``, when the beacon saw the change
    (``reported_at``), how long its event took to reach the runner (``event_lag``) and the
    controllers to agree on the holders (``view_took``), and how long it waited for another
    catalog sync to finish (``lock_wait``).
    """
    site = model["site"]
    if _keystone_admin(site) is None:
        return []  # this master does not manage the site's catalog
    entry = {"decided_by": "remediation", "reported_by": reporter, "evidence": evidence, "holders": holders, "site": site}
    decisions = []
    waiting = time.monotonic()
    with _site_lock(site + "-catalog"):
        lock_wait = round(time.monotonic() - waiting, 3)
        last = _load(site).get("catalog") or {}
        if last.get("holders") == holders and last.get("ok") and data.get("kind") != "change":
            return []
        generation = last.get("generation", 0)
        known = last.get("seen") if last.get("ok") and last.get("holders") != holders else None
        if known is not None:
            started = time.monotonic()
            outcome = _guarded_sync(model, holders, known)
            parts = dict(timings or {}, took=round(time.monotonic() - started, 3), repointed_at=time.time(), lock_wait=lock_wait)
            done, generation = _record_sync(model, holders, entry, last, outcome, parts)
            decisions.extend(done)
    try:
        fresh = _read_catalog(model)
    except Exception as exc:
        fresh = exc
    waiting = time.monotonic()
    with _site_lock(site + "-catalog"):
        lock_wait = round(time.monotonic() - waiting, 3)
        last = _load(site).get("catalog") or {}
        if last.get("generation", 0) != generation:
            return decisions
        started = time.monotonic()
        outcome = _guarded_sync(model, holders, fresh)
        if not isinstance(fresh, Exception):
            outcome.setdefault("timings", {})["keystone_read"] = fresh["took"]
        parts = dict(timings or {}, took=round(time.monotonic() - started, 3), repointed_at=time.time(), lock_wait=lock_wait,
                     read_back=known is not None)
        done, _ = _record_sync(model, holders, entry, last, outcome, parts)
        decisions.extend(done)
    return decisions


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
    site, _, model = _resolve_site(site)
    holders = {}
    if model["keystone"]["endpoint_mode"] == "active_controller":
        held, who, quorum = _vip_view(model)
        if not quorum or any(len(c) != 1 for c in who.values()):
            __context__["retcode"] = 1
            return {"result": False, "changes": {},
                    "comment": "refused: the controllers do not agree on one holder per VIP ({}): no repointing".format(
                        "; ".join("{}: {}".format(v, ", ".join(c) or "nobody") for v, c in who.items()) if quorum else
                        "only {} controllers answered".format(len(held)))}
        holders = {vip: c[0] for vip, c in who.items()}
    try:
        with _site_lock(site + "-catalog"):
            outcome = _catalog_sync(model, holders, test=bool(test))
    except SaltInvocationError:
        raise  # the master is not set up for this site's catalog: an operator error, shown as such
    except Exception as exc:
        _catalog_failure(exc)
        outcome = {"result": False, "changes": {}, "comment": "nothing changed: " + str(exc), "repointed": []}
    if outcome["changes"] and not test:
        with _site_lock(site):
            records = _load(site)
            # The loop's memory of endpoint ids (for a repoint without reading first) is out of
            # date, and so is any catalog the loop read before this change.
            if records.get("catalog"):
                records["catalog"].pop("seen", None)
                records["catalog"]["generation"] = records["catalog"].get("generation", 0) + 1
            if outcome["repointed"]:
                entry = {"what": "repoint", "service": "keystone", "endpoints": outcome["repointed"],
                         "decided_by": "operator (salt-run openstack_ha.catalog)", "holders": holders, "time": time.time(),
                         "why": "{} endpoint(s) repointed by the operator".format(len(outcome["repointed"]))}
                _announce(records, site, entry, "openstack_ha/endpoint/repointed")
            _store(site, records)
    if outcome["result"] is False:
        __context__["retcode"] = 1
    return {k: outcome[k] for k in ("result", "changes", "comment")}


def _catalog_view(model, holders):
    """For the status table: the catalog as Keystone holds it against what the model wants.
    Returns None when this master does not manage the site's catalog."""
    if _keystone_admin(model["site"]) is None:
        return None
    try:
        outcome = _catalog_sync(model, holders, test=True)
    except Exception as exc:
        _catalog_failure(exc)
        return {"ok": False, "mode": model["keystone"]["endpoint_mode"], "problem": str(exc), "endpoints": {}}
    return {"ok": outcome["result"] is True, "mode": model["keystone"]["endpoint_mode"], "comment": outcome["comment"],
            "drift": outcome["changes"],
            "endpoints": {"{}/{}".format(e["service"], e["interface"]): e["url"]
                          for e in __utils__["openstack_ha_model.catalog_endpoints"](model, holders)}}


# ------------------------------------------------------------------- planned maintenance


def _resolve_site(site):
    """The site an operator command means (the only one when ``site`` is None): returns
    (site, {site: controller ids}, its model). Raises SaltInvocationError for an unknown site."""
    sites = _sites()
    if site is None and len(sites) == 1:
        site = next(iter(sites))
    if site not in sites:
        raise SaltInvocationError("unknown site {!r}; known: {}".format(site, ", ".join(sorted(sites)) or "none"))
    model = _site_model(sites[site][0])
    if model is None:
        raise SaltInvocationError("the pillar of site {} is invalid and this master knows no earlier valid one: {}".format(
            site, (_BAD_PILLAR.get(site) or {}).get("error", "no model")))
    return site, sites, model


def _maintenance(site, host, service, backend, drain, force):
    site, sites, model = _resolve_site(site)
    backend = backend or host
    if backend is None:
        raise SaltInvocationError("name a backend (host=CONTROLLER, or service=NAME backend=CONTROLLER)")
    if backend not in sites[site]:
        raise SaltInvocationError("{!r} is not a controller of site {}".format(backend, site))
    if service is not None and service not in __utils__["openstack_ha_model.backend_services"](model):
        raise SaltInvocationError("unknown service {!r} in site {}".format(service, site))
    keys = _backends(model, service, backend)
    who = "operator (salt-run openstack_ha.{}{})".format("drain" if drain else "undrain", ", force" if force else "")
    results = []
    quorum = __utils__["openstack_ha_model.quorum_size"](model)
    with _site_lock(site):
        records = _load(site)
        # Only a guarded drain needs to know which other backends are healthy.
        views = _verify(model, service) if drain and not force else {}
        for key, svc in keys.items():
            if drain and not force:
                others = [k for k, s in _backends(model, svc).items() if k != key]
                # The loop's rule (openstack_ha_decide.serving): healthy and not drained on a quorum.
                healthy = [k for k in others if k not in records["maintenance"] and __utils__["openstack_ha_decide.serving"](k, views, quorum)]
                if not healthy:
                    entry = {"what": "alert", "alert": "last_backend", "service": svc, "backend": backend,
                             "why": "refused: {} is the last healthy backend of {} (use force=True)".format(backend, svc),
                             "decided_by": who, "time": time.time(), "site": site}
                    _announce(records, site, entry, "openstack_ha/alert/last_backend")
                    results.append(entry)
                    continue
            if force:
                log.warning("openstack_ha: %s of %s forced by the operator", "drain" if drain else "undrain", key)
            entry = _act(model, [{"action": "drain" if drain else "restore", "service": svc, "backend": backend,
                                  "reason": "planned maintenance", "evidence": {}}], who, "operator")[0]
            records["backends"][key] = {"state": entry["state"], "by": "operator", "time": entry["time"]}
            if drain and key not in records["maintenance"]:
                records["maintenance"].append(key)
            if not drain and key in records["maintenance"]:
                records["maintenance"].remove(key)
            _announce(records, site, entry, "openstack_ha/backend/" + ("drained" if drain else "restored"))
            results.append(entry)
        _store(site, records)
    return results


def drain(host=None, service=None, backend=None, site=None, force=False):
    """
    Planned maintenance: drain ``backend`` (or every service's backend on ``host``) on every
    HAProxy of the site, and keep the remediation loop from restoring it until
    :func:`undrain`. Refuses to drain the last healthy backend of a service unless
    ``force=True`` (which is logged).

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.drain host=lab-ctrl2
        salt-run openstack_ha.drain service=nova backend=lab-ctrl2
    """
    return _maintenance(site, host, service, backend, True, bool(force))


def undrain(host=None, service=None, backend=None, site=None, force=False):
    """
    End planned maintenance: set the backend(s) ready on every HAProxy again.

    CLI Example:

    .. code-block:: bash

        salt-run openstack_ha.undrain host=lab-ctrl2
    """
    return _maintenance(site, host, service, backend, False, bool(force))


def _collect(site, controllers, timeout):
    returns = _publish(controllers, "openstack_ha.controller_report", timeout=timeout)
    views = {}
    for ctrl in controllers:
        answer = returns.get(ctrl)
        views[ctrl] = answer if isinstance(answer, dict) and answer.get("site") == site else {"error": str(answer or "no answer")}
    return views


def _summarise(site, controllers, views):
    backends, vips = {}, {}
    for ctrl, view in views.items():
        for backend, servers in (view.get("haproxy") or {}).get("servers", {}).items():
            for server, info in servers.items():
                cell = info["status"] if info["admin"] == "ready" else info["admin"].upper()
                backends.setdefault(backend, {}).setdefault(server, {})[ctrl] = cell
        for vip in view.get("vips") or []:
            vips.setdefault(vip, []).append(ctrl)
    problems = []
    for ctrl, view in views.items():
        if "error" in view:
            problems.append("{} did not answer: {}".format(ctrl, view["error"]))
            continue
        if not view["haproxy"]["serving"]:
            problems.append("HAProxy is not serving on {}".format(ctrl))
        if not view["keepalived"]["running"]:
            problems.append("keepalived is not running on {}".format(ctrl))
    for vip, holders in vips.items():
        if len(holders) > 1:
            problems.append("split brain: VIP {} held by {}".format(vip, ", ".join(holders)))
    for backend, servers in backends.items():
        if not any(c == "UP" for cells in servers.values() for c in cells.values()):
            problems.append("backend {} has no UP server on any HAProxy".format(backend))
    galera = {ctrl: view["galera"] for ctrl, view in views.items() if isinstance(view.get("galera"), dict)}
    if galera:
        uuids = sorted({g.get("cluster_uuid") for g in galera.values() if g.get("running") and g.get("cluster_uuid")})
        if len(uuids) > 1:
            problems.append("Galera split: nodes report different cluster UUIDs ({})".format(", ".join(uuids)))
        for ctrl, g in sorted(galera.items()):
            if not g.get("healthy"):
                problems.append("Galera on {}: {}".format(ctrl, g.get("reason") or "unhealthy"))
    rabbit = {ctrl: view["rabbitmq"] for ctrl, view in views.items() if isinstance(view.get("rabbitmq"), dict)}
    for ctrl, r in sorted(rabbit.items()):
        if not r.get("app_running"):
            problems.append("RabbitMQ on {} is {}".format(ctrl, "paused or stopped" if r.get("running") else "down"))
        if any((r.get("partitions") or {}).values()):
            problems.append("RabbitMQ partition seen by {}: {}".format(ctrl, r["partitions"]))
        for alarm in r.get("alarms") or []:
            problems.append("RabbitMQ alarm: " + alarm)
    return {"site": site, "controllers": controllers, "vip_holders": vips, "backends": backends, "galera": galera,
            "rabbitmq": rabbit, "healthy": not problems, "problems": sorted(set(problems), key=problems.index)}


def _table(summary):
    ctrls = summary["controllers"]
    width = max([len(c) for c in ctrls] + [12])
    lines = ["site {}: {}".format(summary["site"], "HEALTHY" if summary["healthy"] else "DEGRADED")]
    if summary.get("bad_pillar"):
        lines.append("PILLAR INVALID: {} ({})".format(summary["bad_pillar"]["error"], summary["bad_pillar"]["acting_on"]))
    if summary.get("ignored"):
        lines.append("IGNORED (not believed): " + "; ".join("{} x{} from {}".format(e["why"], e["count"], e["who"]) for e in summary["ignored"][:5]))
    lines.append("")
    lines.append("{:<24}".format("BACKEND / SERVER") + "".join(" {:<{w}}".format("@" + c, w=width) for c in ctrls))
    for backend in sorted(summary["backends"]):
        for server in sorted(summary["backends"][backend]):
            cells = summary["backends"][backend][server]
            lines.append("{:<24}".format("{}/{}".format(backend, server)[:24])
                         + "".join(" {:<{w}}".format(cells.get(c, "-"), w=width) for c in ctrls))
    lines.append("")
    if summary.get("galera"):
        sizes = sorted({g.get("cluster_size") for g in summary["galera"].values() if g.get("running")})
        uuids = sorted({g.get("cluster_uuid") for g in summary["galera"].values() if g.get("running")})
        lines.append("GALERA  cluster size {}  state UUID {}".format("/".join(str(x) for x in sizes) or "-", ", ".join(uuids) or "-"))
        for ctrl in ctrls:
            g = summary["galera"].get(ctrl)
            if g is not None:
                state = (g.get("state") or "") + ("" if g.get("cluster_status") in (None, "Primary") else " " + g["cluster_status"])
                lines.append("  {:<{w}} {:<22} {}".format(ctrl, state.strip() if g.get("running") else "DOWN", g.get("reason") or "", w=width))
        lines.append("")
    if summary.get("rabbitmq"):
        members = sorted({m for r in summary["rabbitmq"].values() for m in r.get("members") or []})
        lines.append("RABBITMQ  members {}".format(", ".join(members) or "-"))
        for ctrl in ctrls:
            r = summary["rabbitmq"].get(ctrl)
            if r is not None:
                state = "running" if r.get("app_running") else ("paused" if r.get("running") else "DOWN")
                extra = []
                if any((r.get("partitions") or {}).values()):
                    extra.append("partitions {}".format(r["partitions"]))
                if r.get("alarms"):
                    extra.append("alarms " + "; ".join(r["alarms"]))
                lines.append("  {:<{w}} {:<9} sees {} running  {}".format(ctrl, state, len(r.get("running_nodes") or []), " ".join(extra), w=width))
        lines.append("")
    catalog = summary.get("catalog")
    if catalog is not None:
        if catalog.get("problem"):
            lines.append("KEYSTONE CATALOG ({} mode)  UNREACHABLE: {}".format(catalog["mode"], catalog["problem"]))
        else:
            lines.append("KEYSTONE CATALOG ({} mode)  {}".format(catalog["mode"], "as wanted" if catalog["ok"] else "DRIFT"))
            hosts = sorted({url.split("/")[2].rsplit(":", 1)[0] for url in catalog["endpoints"].values()})
            lines.append("  {} endpoints, pointing at {}".format(len(catalog["endpoints"]), ", ".join(hosts)))
            for key, change in sorted(catalog["drift"].items()):
                lines.append("  {:<24} is {}  wanted {}".format(key, change["old"] or "MISSING", change["new"] or "(removed)"))
        lines.append("")
    for vip in sorted(summary["vip_holders"]) or ["(none)"]:
        lines.append("VIP {:<10} held by {}".format(vip, ", ".join(summary["vip_holders"].get(vip, [])) or "NOBODY"))
    for problem in summary["problems"]:
        lines.append("PROBLEM: " + problem)
    if summary.get("maintenance"):
        lines.append("planned maintenance: " + ", ".join(summary["maintenance"]))
    if summary.get("recent"):
        lines += ["", "RECENT DECISIONS"]
        for d in summary["recent"]:
            what = d.get("alert") and "alert " + d["alert"] or d["what"]
            target = ("{}/{}".format(d["service"], d["backend"]) if d.get("backend") else d["service"]) if d.get("service") else d.get("vip", "")
            lines.append("{}  {:<20} {:<24} {}".format(time.strftime("%H:%M:%S", time.localtime(d["time"])), what, target, d.get("why", "")))
    return "\n".join(lines)


def status(site=None, timeout=10, recent=8):
    """
    Is the control plane healthy? One table per site: every backend as each controller's
    HAProxy sees it (UP, DOWN, DRAIN, MAINT), who holds each VIP, and any problem found.

    site
        only this site (default: every site the master's pillar defines).
    recent
        how many of the latest decisions to show.

    Returns the table as text, or the data itself with ``--out json``/``--out yaml``.
    """
    sites = _sites()
    if site is not None:
        sites = {site: sites[site]} if site in sites else {}
    summaries = []
    for name, ctrls in sorted(sites.items()):
        summary = _summarise(name, ctrls, _collect(name, ctrls, timeout))
        model = _site_model(ctrls[0])
        if name in _BAD_PILLAR:
            summary["healthy"] = False
            summary["problems"].insert(0, "the pillar of site {} is invalid: {}".format(name, _BAD_PILLAR[name]["error"]))
            summary["bad_pillar"] = {"error": _BAD_PILLAR[name]["error"],
                                     "acting_on": "the loop acts on the last valid model" if model else "NO valid model: remediation stopped"}
        summary["ignored"] = __utils__["openstack_ha_trace.recent"](__opts__)
        if model is not None:
            holders = {vip: who[0] for vip, who in summary["vip_holders"].items() if len(who) == 1}
            summary["catalog"] = _catalog_view(model, holders)
            if summary["catalog"] is not None and not summary["catalog"]["ok"]:
                summary["problems"].append("Keystone catalog: " + (summary["catalog"].get("problem") or "{} endpoint(s) not as wanted".format(
                    len(summary["catalog"]["drift"]))))
                summary["healthy"] = False
        records = _load(name)
        summary["maintenance"] = records["maintenance"]
        summary["recent"] = records["decisions"][-int(recent):]
        summaries.append(summary)
    if __opts__.get("output") in ("json", "yaml", "pprint", "raw"):
        return {s["site"]: s for s in summaries}
    if not summaries:
        return "no openstack_ha site has an accepted controller{}".format("" if site is None else " named " + site)
    return "\n\n".join(_table(s) for s in summaries)


# ------------------------------------------------------------------------- Galera recovery


def _progress(message):
    """Show ``message`` while a long runner works (salt-run prints progress events)."""
    log.info("openstack_ha: %s", message)
    jid_event = globals().get("__jid_event__")
    if jid_event is not None:
        jid_event.fire_event({"message": message}, "progress")


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
    """
    site, sites, model = _resolve_site(site)
    nodes = [n["id"] for n in __utils__["openstack_ha_model.galera_nodes"](model)]
    if not nodes:
        raise SaltInvocationError("Galera is not enabled in site {}".format(site))
    wait = float(timeout or model["galera"]["startup_timeout"]) + 30
    quorum = len(nodes) // 2 + 1
    statuses = _publish(nodes, "openstack_ha_galera.local_status", timeout=15)
    primary = sorted(n for n, s in statuses.items() if isinstance(s, dict) and s.get("running") and s.get("cluster_status") == "Primary")
    if primary:
        return {"refused": "the cluster is running (Primary on {}): nothing to recover; a stopped node rejoins with "
                           "`salt {} state.apply openstack_ha`".format(", ".join(primary), "<node>")}
    _progress("recovering the last committed position of {}".format(", ".join(nodes)))
    positions = {n: p for n, p in _publish(nodes, "openstack_ha_galera.recover_position", timeout=300).items() if isinstance(p, dict)}
    if len(positions) < quorum:
        return {"refused": "only {} of {} Galera nodes answered ({}); a recovery needs {}: the missing ones may hold "
                           "newer commits".format(len(positions), len(nodes), ", ".join(sorted(positions)) or "none", quorum)}
    try:
        plan = __utils__["openstack_ha_galera_plan.recovery_plan"](nodes, positions)
    except ValueError as exc:
        return {"refused": str(exc), "positions": positions}
    steps = ["write grastate.dat on {bootstrap} (uuid {uuid}, seqno {seqno}, safe_to_bootstrap 1)".format(**plan),
             "bootstrap the cluster on {}".format(plan["bootstrap"])]
    steps += ["start {} and wait until Synced".format(n) for n in plan["then"]]
    result = {"site": site, "positions": positions, "plan": steps, "missing": plan["missing"]}
    if plan["missing"]:
        result["warning"] = "{} did not answer and may hold newer commits".format(", ".join(plan["missing"]))
    if not confirm:
        result["confirm"] = "nothing changed: run again with confirm=True to carry out this plan"
        return result
    done = []
    with _site_lock(site):
        stopped = _publish(nodes, "openstack_ha_galera.stop", timeout=180)
        done.append("stopped leftover servers: {}".format(", ".join(n for n, was in stopped.items() if was is True) or "none"))
        answer = _publish([plan["bootstrap"]], "openstack_ha_galera.write_grastate", (plan["uuid"], plan["seqno"], True), timeout=30)
        if not isinstance(answer.get(plan["bootstrap"]), dict):
            return dict(result, failed="grastate.dat not written on {}: {}".format(plan["bootstrap"], answer.get(plan["bootstrap"])), done=done)
        done.append(steps[0])
        for node, bootstrap in [(plan["bootstrap"], True)] + [(n, False) for n in plan["then"]]:
            _progress("{} {}".format("bootstrapping on" if bootstrap else "starting", node))
            answer = _publish([node], "openstack_ha_galera.start", kwargs={"bootstrap": bool(bootstrap)}, timeout=wait).get(node)
            if not isinstance(answer, dict) or answer.get("state_code") != 4:
                return dict(result, failed="{} did not become Synced: {}".format(node, answer), done=done)
            done.append("{} {}: {} (cluster size {}, UUID {})".format(
                "bootstrapped" if bootstrap else "started", node, answer.get("state"), answer.get("cluster_size"), answer.get("cluster_uuid")))
            _progress(done[-1])
    entry = {"what": "galera_recover", "why": "full-cluster recovery from {} (seqno {})".format(plan["bootstrap"], plan["seqno"]),
             "evidence": positions, "decided_by": "operator (salt-run openstack_ha.galera_recover)", "time": time.time()}
    with _site_lock(site):
        records = _load(site)
        _announce(records, site, entry, "openstack_ha/galera/recovered")
        _store(site, records)
    return dict(result, done=done)
