"""
The remediation loop's intake: a master engine that takes every ``openstack_ha_*`` beacon
event off the master's event bus and hands it to the runner's ``handle_event``.

:depends: ``engines_dirs`` and ``engines`` in the master's configuration
    (``master.d/openstack_ha.conf``); the runner ``openstack_ha``; ``_utils/openstack_ha_admit.py``.

.. code-block:: yaml

    engines:
      - openstack_ha_loop:
          workers: 8

Why an engine and not a reactor file: Salt's reactor renders an SLS file for every event that
matches its glob, in one process, before any of this project's code can look at the event.
A hostile minion may fire beacon events under any tag (Salt lets a minion choose the tag and
the id in it), and at 1,000 events a second the reactor spent its time rendering, so a real
crash waited seconds behind the flood. Here an event costs a tag split and a dictionary
lookup: events of minions that are not controllers are dropped, events of a reporter's beacon
already waiting are folded into it (``openstack_ha_admit``), and the runner calls run in a
pool of ``workers`` threads, one at a time per (reporter, beacon), and at most one more waiting.
"""

import concurrent.futures
import logging
import threading

import salt.utils.event

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha_loop"


def __virtual__():
    if __opts__.get("__role") != "master":
        return False, "openstack_ha_loop runs on the master"
    return __virtualname__


def _work(admission, handle, pool, key):
    """Take the waiting entry ``key`` and run the runner on it; then hand on what waited for
    it meanwhile. Logs what went wrong, never raises."""
    taken = admission.take(key)
    if taken is None:
        return
    tag, data = taken
    try:
        result = handle(tag=tag, data=data)
        if isinstance(result, dict) and result.get("decisions"):
            log.info("openstack_ha: %s -> %s", tag, result["decisions"])
    except Exception:  # pylint: disable=broad-except
        log.exception("openstack_ha: handling %s failed", tag)
    finally:
        delay = admission.finish(key)
        if delay is not None:
            timer = threading.Timer(delay, pool.submit, (_work, admission, handle, pool, key))
            timer.daemon = True
            timer.start()


def start(workers=8, wait=5):
    """
    Run the intake until the master stops: read the event bus, admit, hand to the runner.

    ``workers``: runner calls at once (each waits mostly on controllers' answers).
    """
    admission = __utils__["openstack_ha_admit.admission"](__opts__["cachedir"])
    handle = __runners__["openstack_ha.handle_event"]
    note = __utils__["openstack_ha_trace.note"]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="openstack_ha")
    log.info("openstack_ha: the loop's intake is running (%d workers)", int(workers))
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
        while True:
            event = bus.get_event(wait=wait, full=True, auto_reconnect=True)
            if not event or not str(event.get("tag", "")).startswith("salt/beacon/"):
                continue
            tag, data = event["tag"], event.get("data")
            if "/openstack_ha_" not in tag:
                continue
            verdict, what = admission.offer(tag, data)
            if verdict == "queue":
                pool.submit(_work, admission, handle, pool, what)
            elif verdict == "drop":
                note(__opts__, "intake", what, tag.split("/")[2] if tag.count("/") >= 2 else "?", tag)
