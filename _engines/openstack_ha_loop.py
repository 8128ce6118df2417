"""
The remediation loop's intake: a master engine that takes every ``openstack_ha_*`` beacon
event off the master's event bus and hands it to the runner's ``handle_event``.

:depends: ``engines_dirs`` and ``engines`` in the master's configuration
    (``master.d/openstack_ha.conf``); the runner ``openstack_ha``; ``_utils/openstack_ha_admit.py``.

.. code-block:: yaml

    engines:
      - openstack_ha_loop:
          workers: 8
          metrics: 192.0.2.10:9387                 # optional: the loop's Prometheus metrics
          alertmanager: http://192.0.2.20:9093     # optional: its alerts delivered there

Why an engine and not a reactor file: Salt's reactor renders an SLS file for every event that
matches its glob, in one process, before any of this project's code can look at the event.
A hostile minion may fire beacon events under any tag (Salt lets a minion choose the tag and
the id in it), and at 1,000 events a second the reactor spent its time rendering, so a real
crash waited seconds behind the flood. Here an event costs a tag split and a dictionary
lookup: events of minions that are not controllers are dropped, events of a reporter's beacon
already waiting are folded into it (``openstack_ha_admit``), and the runner calls run in a
pool of ``workers`` threads, one at a time per (reporter, beacon), and at most one more waiting;
the sites share those threads fairly (``openstack_ha_turns``: the next free worker takes a turn
of the site with the fewest running), so a quiet site's crash never waits behind a busy site's queue.
The signed report a VIP event or a backend change event carries is also kept at once
(``keep_report``, in a small pool of its own, one waiting per controller and beacon): the turn
of a VIP move's first step may be waiting for the reports of the next, and a backend round
waits for its site's other controllers' reports, which must not queue behind the workers'
publishes (when they did, a busy master verified instead, and its publishes made the queue
longer). Job returns
(``salt/job/<jid>/ret/<id>``) are handed from here to the runner's publish waiting for them
(``openstack_ha_publish.Returns``): the bus is read once in the engine, not once more by
every publish in flight.
"""

import concurrent.futures
import logging
import threading
import time
import types

import salt.utils.event

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha_loop"


def __virtual__():
    if __opts__.get("__role") != "master":
        return False, "openstack_ha_loop runs on the master"
    return __virtualname__


def _work(admission, handle, pool, key, metrics=None):
    """Take the waiting entry ``key`` and run the runner on it; then hand on what waited for
    it meanwhile. Logs what went wrong, never raises."""
    taken = admission.take(key)
    if taken is None:
        return
    tag, data, received = taken
    started, result = time.monotonic(), None
    try:
        admission.mark_turn(received, started)
        result = handle(tag=tag, data=data)
        if isinstance(result, dict) and result.get("decisions"):
            log.info("openstack_ha: %s -> %s", tag, result["decisions"])
    except Exception:  # pylint: disable=broad-except
        log.exception("openstack_ha: handling %s failed", tag)
    finally:
        admission.mark_turn(None, None)
        if metrics is not None:
            metrics.observe(tag, result, time.monotonic() - started, time.time())
        delay = admission.finish(key)
        if delay is not None:
            timer = threading.Timer(delay, pool.submit, (admission.group(key[0]), _work, admission, handle, pool, key, metrics))
            timer.daemon = True
            timer.start()


def _keep(admission, keep, key):
    """Keep the newest waiting report of ``key`` (reporter, beacon): the runner's ``keep_report``."""
    taken = admission.take_report(key)
    if taken is None:
        return
    try:
        keep(tag=taken[0], data=taken[1])
    except Exception:  # pylint: disable=broad-except
        log.exception("openstack_ha: keeping the report of %s failed", taken[0])


def _watch_status(status, metrics, interval, stop):
    """Every ``interval`` seconds, gather the status of every site into the metrics."""
    while not stop.wait(interval):
        try:
            result = status(timeout=10, recent=1, quick=True)
            metrics.observe_status(result.get("data", result) if isinstance(result, dict) else {})
        except Exception:  # pylint: disable=broad-except
            log.exception("openstack_ha: gathering the status for the metrics failed")


def _forward(forwarder, tag, data):
    try:
        forwarder.handle(tag, data)
    except Exception:  # pylint: disable=broad-except
        log.exception("openstack_ha: forwarding %s to Alertmanager failed", tag)


def _real(dunder):
    """The object behind a loader dunder (a thread of the engine has no loader context)."""
    return dunder.value() if type(dunder).__name__ == "NamedLoaderContext" else dunder


def _records_check(ctx, still_open):
    """``key -> still_open(records of key's site, key)``: the sticky alerts checked against
    the shared records (another master may have ended them)."""
    return lambda key: still_open(ctx.call("records.load", key[0]), key)


def start(workers=8, wait=5, metrics=None, alertmanager=None, alert_repeat=60, status_interval=60):
    """
    Run the intake until the master stops: read the event bus, admit, hand to the runner.

    ``workers``: runner calls at once (each waits mostly on controllers' answers).
    ``metrics``: ``ADDRESS:PORT`` to serve the loop's Prometheus metrics on (``/metrics``).
    ``alertmanager``: the URL of an Alertmanager to deliver the loop's alerts to (v2 API),
    repeated every ``alert_repeat`` seconds while open. With ``metrics``, the status of
    every site is gathered every ``status_interval`` seconds for the site gauges.
    """
    __utils__["openstack_ha_import_guard.install"]()  # threads load Salt modules at once
    admission = __utils__["openstack_ha_admit.admission"](__opts__["cachedir"])
    handle = __runners__["openstack_ha.handle_event"]
    keep_report = __runners__["openstack_ha.keep_report"]
    note = __utils__["openstack_ha_trace.note"]
    trusted = __utils__["openstack_ha_alerting.trusted"]
    # Only a loop asked to serve metrics needs prometheus_client (Salt 3008 installs it, pip
    # installs of 3006 and 3007 do not).
    loop_metrics = __utils__["openstack_ha_metrics.loop_metrics"]() if metrics else None
    if metrics:
        loop_metrics.serve(*__utils__["openstack_ha_metrics.split_listen"](metrics))
        threading.Thread(target=_watch_status, args=(__runners__["openstack_ha.status"], loop_metrics, float(status_interval),
                                                     threading.Event()), daemon=True, name="openstack_ha-status").start()
    forwarder = None
    if alertmanager:
        ctx = __utils__["openstack_ha_context.new"](_real(__opts__), _real(__utils__), {})
        forwarder = __utils__["openstack_ha_alerting.forwarder"](str(alertmanager), loop_metrics, float(alert_repeat),
                                                                 still_open=_records_check(ctx, __utils__["openstack_ha_alerting.drain_still_open"]))
        threading.Thread(target=forwarder.run_repeats, args=(threading.Event(),), daemon=True,
                         name="openstack_ha-alert-repeat").start()
        log.info("openstack_ha: alerts go to the Alertmanager at %s", alertmanager)
    # Each site's turns share the workers fairly with the others' (a busy site never makes a
    # quiet one's crash wait behind its queue).
    pool = __utils__["openstack_ha_turns.pool"](int(workers), "openstack_ha")
    # Keeping a report is a signature check and a dictionary write: two threads of their own.
    keepers = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="openstack_ha-keep")
    intake = types.SimpleNamespace(admission=admission, pool=pool, keepers=keepers, forwarder=forwarder, metrics=loop_metrics,
                                   handle=handle, keep=keep_report, to_keep=__utils__["openstack_ha_admit.report_to_keep"],
                                   note=note, trusted=trusted,
                                   returns=__runners__["openstack_ha.returns_hub"]())
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
        # The runner's publishes take their answers from this reader only once it is
        # subscribed (until then, and in salt-run, each publish subscribes itself).
        intake.returns.reading = bool(bus.connect_pub(timeout=30))
        log.info("openstack_ha: the loop's intake is running (%d workers; job returns read %s)", int(workers),
                 "here" if intake.returns.reading else "by each publish")
        try:
            while True:
                event = bus.get_event(wait=wait, full=True, auto_reconnect=True)
                if event:
                    _take(intake, str(event.get("tag", "")), event.get("data"))
        finally:
            intake.returns.reading = False


def _take(intake, tag, data):
    """One event of the bus: a job return to the publish waiting for it, the loop's own run
    events to the Alertmanager forwarder, a beacon event admitted and handed to the pool."""
    if tag.startswith("salt/job/"):
        intake.returns.deliver(tag, data)
        return
    if tag.startswith("salt/run/openstack_ha/"):
        # Checked here, not in a worker: a minion's flood of such tags costs the intake a
        # prefix test, and takes no worker from remediation.
        if intake.forwarder is not None and intake.trusted(tag, data):
            intake.pool.submit(("alerts",), _forward, intake.forwarder, tag, data)
        return
    if not tag.startswith("salt/beacon/") or "/openstack_ha_" not in tag:
        return
    admission, pool = intake.admission, intake.pool
    verdict, what = admission.offer(tag, data)
    if verdict != "drop" and intake.to_keep(what, data) and admission.offer_report(what, tag, data):
        # Kept at once, not in the event's turn: a turn may be waiting for it.
        intake.keepers.submit(_keep, admission, intake.keep, what)
    if verdict == "queue":
        pool.submit(admission.group(what[0]), _work, admission, intake.handle, pool, what, intake.metrics)
    elif verdict == "drop":
        intake.note(__opts__, "intake", what, tag.split("/")[2] if tag.count("/") >= 2 else "?", tag)
