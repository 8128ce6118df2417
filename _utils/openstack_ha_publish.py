"""
Asking the controllers: one publish, answers believed only when signed by the controller's
own accepted key, a hard deadline, no waiting for a controller known to be cut off.

:depends: runs on the master (``salt.client.LocalClient``, the master's key store,
    ``cryptography``); the controllers' ``openstack_ha_signed`` module. Every function takes
    the :class:`openstack_ha_context.Context` first.

Salt lets any accepted minion put events on the master's bus under any tag, including
``salt/job/<jid>/ret/<id>`` in another minion's name, and every accepted minion receives every
publish (so learns its jid). So an answer read off the bus is believed only when its
signature checks out against the key the master accepted for that id, over the question's
nonce and function (:func:`authenticated_answer`).

In the loop's engine, the engine's one reader of the master's bus hands each job return to
the publish waiting for its jid (:class:`Returns`); elsewhere (``salt-run``) each publish
subscribes to the bus for its own answers.
"""

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)

# Once a quorum of controllers answered, how much longer the others are awaited. A healthy
# controller answers within about the probe timeout of the others.
QUORUM_GRACE = 0.75

# One LocalClient per thread and channel: a client is not thread-safe, and one shared client
# (behind a lock) made every publish of the master wait for the slowest one in flight.
_CLIENTS = threading.local()


class Returns:
    """Job returns handed by the one reader of the master's bus (the loop's engine) to the
    publishes of its process that wait for them, by jid. Without it, each waiting publish
    held its own subscription to the bus and read (unpacked, matched) every event of the
    master: at fleet size, eight workers in publishes read every heartbeat eight more times,
    and each publish first waited for its subscription to connect."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting = {}
        self.reading = False  # set by the reader while it reads the bus

    def expect(self, jid):
        """Start keeping the returns of ``jid``; returns the queue they arrive on (their
        events' data). Call before the job is published, :meth:`forget` after."""
        found = queue.SimpleQueue()
        with self._lock:
            self._waiting[jid] = found
        return found

    def forget(self, jid):
        """Stop keeping the returns of ``jid``."""
        with self._lock:
            self._waiting.pop(jid, None)

    def deliver(self, tag, data):
        """Hand an event of the bus to the publish waiting for its jid, if it is a job return
        (``salt/job/<jid>/ret/<id>``) one waits for. True when it was handed on."""
        parts = tag.split("/", 4)
        if len(parts) != 5 or parts[3] != "ret":
            return False
        waiting = self._waiting.get(parts[2])
        if waiting is None:
            return False
        waiting.put(data)
        return True


def returns(ctx):
    """This process's :class:`Returns` (made the first time)."""
    return ctx.shared("returns", Returns)


def _new_jid():
    """A jid for a job published with returns taken from :class:`Returns`: Salt's own form
    (20 digits of time) with a random suffix, so two threads publishing in the same
    microsecond never share one."""
    import secrets

    import salt.utils.jid

    return "{}_{}".format(salt.utils.jid.gen_jid({})[:20], secrets.token_hex(4))


def _accepted_key(ctx, minion):
    """The public key the master accepted for ``minion`` (a cryptography key object), or None.
    Read through the master's own key store (``keys.cache_driver``) on every call (a key the
    master rejected since is not believed), parsed once per key text. The store's client is
    made once per process: making one builds a Salt loader (1.3 ms of CPU against 0.17 ms for
    the read itself; at fleet size it was a sixth of the loop's samples)."""
    import salt.cache
    from cryptography.hazmat.primitives import serialization

    try:
        store = ctx.shared("key_store", lambda: salt.cache.Cache(ctx.opts, driver=ctx.opts.get("keys.cache_driver", "localfs_key")))
        found = store.fetch("keys", minion)
    except Exception:  # an id that is not a valid key name, an unreadable store
        return None
    if not found or found.get("state") != "accepted" or not found.get("pub"):
        return None
    keys = ctx.shared("keys")
    text = found["pub"]
    key = keys.get(text)
    if key is None:
        try:
            key = keys[text] = serialization.load_pem_public_key(text.encode())
        except ValueError:
            return None
    return key


def authenticated_answer(ctx, minion, nonce, fun, reply, ran=None):
    """
    ``(True, answer)`` when ``reply`` is signed by ``minion``'s accepted key for
    this question (``nonce`` and ``fun``), else ``(False, None)``: a forged, replayed, altered
    or malformed reply counts as no answer from that controller (see ``openstack_ha_signed``).
    With a dict ``ran``, ``ran[minion]`` is set to the signed ``(began, ended)`` of the call
    when the body carries two numbers (the controller's clock: for timing, never for a
    decision).
    """
    import base64
    import json

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if not isinstance(reply, dict) or not isinstance(reply.get("body"), str) or not isinstance(reply.get("sig"), str):
        return False, None
    key = _accepted_key(ctx, minion)
    if key is None:
        return False, None
    try:
        key.verify(base64.b64decode(reply["sig"]), reply["body"].encode(), padding.PKCS1v15(), hashes.SHA256())
        data = json.loads(reply["body"])
    except (InvalidSignature, ValueError, TypeError):
        return False, None
    if not isinstance(data, dict) or data.get("id") != minion or data.get("nonce") != nonce or data.get("fun") != fun:
        return False, None
    times = data.get("ran")
    if ran is not None and isinstance(times, list) and len(times) == 2 \
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
        ran[minion] = (float(times[0]), float(times[1]))
    return True, data.get("answer")


NOT_APPLIED = "'openstack_ha_signed.call' is not available."


def ignored_because(reply):
    """Why an answer that :func:`authenticated_answer` refused was ignored, as the trace of
    ignored events counts it: Salt's own answer for a function the controller lacks (openstack_ha
    not applied there yet: the master may start before the first ``state.apply``) is told apart
    from every other unsigned or badly signed one. Only a fixed text is returned: nothing the
    minion sent reaches the log."""
    if reply == NOT_APPLIED:
        return "answer without openstack_ha's modules (state.apply not run there yet)"
    return "unauthenticated answer"


def publish(ctx, controllers, fun, args=(), timeout=5, channel="local", kwargs=None, wait_for=None, quorum=None,
            timing=None):
    """Call ``fun`` on ``controllers`` in one publish; return {controller: answer} of those
    whose answer arrived within ``timeout`` seconds, signed by that controller's own key (a
    hard deadline: an unreachable controller costs exactly ``timeout``, never Salt's extra
    find_job rounds).

    wait_for
        the controllers worth waiting for (default: all); once every one of them answered,
        the call returns without waiting out the others.
    quorum
        once this many answered, the rest get ``QUORUM_GRACE`` seconds more at most.
    channel
        each channel has its own LocalClient per thread (slow questions, like RabbitMQ's
        reports, use their own so that they never hold up a drain).
    timing
        a dict to fill with where the time went (epoch seconds): ``asked`` (the publish
        requested of the master), ``sent`` (the master took it), and per answering
        controller ``ran`` (when its call began and ended, its clock) and ``received``.
    """
    import secrets

    import salt.client

    nonce = secrets.token_hex(16)
    clients = getattr(_CLIENTS, "by_channel", None)
    if clients is None:
        clients = _CLIENTS.by_channel = {}
    client = clients.get(channel)
    if client is None:
        client = clients[channel] = salt.client.LocalClient(mopts=ctx.opts)
    call_args = [fun, list(args), dict(kwargs or {}), nonce]
    timing = {} if timing is None else timing
    hub = ctx.state.get("returns")
    if hub is not None and hub.reading:
        jid = _new_jid()
        arrived = hub.expect(jid)
        try:
            return _gather(ctx, _job(client, controllers, call_args, timeout, jid, False), _queued(arrived, jid), controllers,
                           fun, nonce, timeout, wait_for, quorum, timing)
        finally:
            hub.forget(jid)
    try:
        return _gather(ctx, _job(client, controllers, call_args, timeout, "", True), _subscribed(client), controllers,
                       fun, nonce, timeout, wait_for, quorum, timing)
    finally:
        # Unsubscribe from the event bus between calls: a subscriber that does not read keeps
        # a backlog of every event fired meanwhile (a flood: thousands), and the next call
        # would read through all of it before its own answers.
        client.event.close_pub()


def _job(client, controllers, call_args, timeout, jid, listen):
    """``() -> pub data``: publish the signed call (with ``jid`` when one is given)."""
    return lambda: client.run_job(controllers, "openstack_ha_signed.call", call_args, tgt_type="list", timeout=timeout,
                                  jid=jid, listen=listen)


def _subscribed(client):
    """``jid -> iterator`` of the job's return events' data read off this client's own
    subscription to the bus (None while nothing came)."""
    def read(jid):
        for raw in client.get_returns_no_block("salt/job/{}/ret".format(jid), "startswith"):
            yield None if raw is None else (raw.get("data") or {})
    return read


def _queued(arrived, jid, step=0.05):
    """``jid -> iterator`` of the return events' data the bus reader put on ``arrived`` for
    ``jid`` (None every ``step`` seconds while nothing came)."""
    def read(published):
        if published != jid:  # a master that did not take the jid it was given: none will come
            log.error("openstack_ha: the master published job %s as %s: its answers are not awaited", jid, published)
            return
        while True:
            try:
                yield arrived.get(timeout=step)
            except queue.Empty:
                yield None
    return read


def _gather(ctx, job, read, controllers, fun, nonce, timeout, wait_for, quorum, timing):
    """Publish one signed call (``job()``) and collect the answers from ``read(jid)`` (see
    :func:`publish`)."""
    returns, ran, received = {}, {}, {}
    timing.update(asked=time.time(), ran=ran, received=received)
    pub = job()
    timing["sent"] = time.time()
    if not pub or not pub.get("jid"):
        log.warning("openstack_ha: could not publish %s to %s", fun, ", ".join(controllers))
        return {}
    expected = set(pub.get("minions") or controllers) & set(controllers)
    enough = expected & set(wait_for if wait_for is not None else controllers)
    deadline = time.monotonic() + timeout
    for data in read(pub["jid"]):
        if data is not None:
            data = data if isinstance(data, dict) else {}
            who = data.get("id")
            if who in expected and who not in returns and "return" in data:
                ok, answer = authenticated_answer(ctx, who, nonce, fun, data["return"], ran)
                if ok:
                    returns[who] = answer
                    received[who] = time.time()
                else:
                    ctx.call("records.note_ignored", ignored_because(data["return"]), who, "salt/job/{}/ret".format(pub["jid"]))
        if quorum and len(returns) >= quorum and deadline > time.monotonic() + QUORUM_GRACE:
            deadline = time.monotonic() + QUORUM_GRACE  # a quorum answered: a short grace for the rest
        if set(returns) >= enough or time.monotonic() >= deadline:
            break
    return returns


def split(timing):
    """Where a publish's time went, from the ``timing`` :func:`publish` filled: ``publish``
    (the master taking the job), and over the controllers that answered, the slowest
    ``reach`` (sent -> its call began: delivery, Salt's job thread and loaders), ``run`` (the
    call itself) and ``back`` (the call's end -> its answer read here). Seconds, rounded to the
    millisecond; a part no controller's answer gives is left out. ``reach`` and ``back`` mix
    the controller's clock with the master's: off by their skew."""
    parts = {}
    if "sent" in timing and "asked" in timing:
        parts["publish"] = round(timing["sent"] - timing["asked"], 3)
    ran, received = timing.get("ran") or {}, timing.get("received") or {}
    if "sent" in timing and ran:
        parts["reach"] = round(max(began - timing["sent"] for began, _ in ran.values()), 3)
        parts["run"] = round(max(ended - began for began, ended in ran.values()), 3)
    back = [received[c] - ran[c][1] for c in ran if c in received]
    if back:
        parts["back"] = round(max(back), 3)
    return parts


def ask(ctx, controllers, fun, args=(), timeout=5, channel="local"):
    """Call ``fun`` on every controller; return the dict answers of those that answered."""
    return {c: r for c, r in publish(ctx, controllers, fun, args, timeout, channel).items() if isinstance(r, dict)}


def wait_for(ctx, model):
    """The controllers worth waiting for in this site: all but the ones that missed the last
    verification (they are brought in line when they answer again), unless that would leave
    fewer than a quorum (then everyone is awaited)."""
    controllers = [c["id"] for c in model["controllers"]]
    silent = ctx.shared("silent").get(model["site"], {})
    awake = [c for c in controllers if c not in silent]
    return awake if len(awake) >= ctx.util("model.quorum_size")(model) else controllers


def note_answers(ctx, model, answered):
    """Remember who missed this round (and who is back)."""
    silent = ctx.shared("silent").setdefault(model["site"], {})
    now = time.time()
    for ctrl in (c["id"] for c in model["controllers"]):
        if ctrl in answered:
            silent.pop(ctrl, None)
        else:
            silent.setdefault(ctrl, now)
