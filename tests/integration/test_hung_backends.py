"""A hung backend (SIGSTOP: the kernel still accepts connections) under client load."""

import os
import signal
import time
import uuid

from lab import loadgen
from tests.integration import labtools
from tests.integration.labtools import CTRLS, VIPS, drained_everywhere, ready_everywhere, sh, standin_pid, wait_until

NOVA = 8774
VICTIM = "lab-ctrl2"


def post_journal(ctrl):
    """The X-Request-Ids of every POST nova's stand-in on ``ctrl`` has executed."""
    return sh(ctrl, "cat /var/log/standin-nova-posts.log 2>/dev/null || true").split()


def test_sigstop_under_load_fails_no_get_and_replays_no_post(remediating):
    pid = standin_pid(VICTIM, "nova")
    posts = []
    os.kill(pid, signal.SIGSTOP)
    try:
        # Three POSTs in a row before any other traffic: round robin sends one to the stopped
        # backend. Each waits up to 15 s (the lab's HAProxy gives up on a response after 10 s).
        for _ in range(3):
            posts.append(loadgen.start(VIPS["public"], NOVA, "POST", "post-" + uuid.uuid4().hex, timeout=15))
            time.sleep(0.15)
        # Then GETs at 50/s for 8 s while the remediation loop notices the hang and drains it.
        results = loadgen.run(VIPS["public"], NOVA, rate=50, seconds=8, timeout=5)
        wait_until(lambda: drained_everywhere(VICTIM), 20, "the hung nova/%s drained everywhere" % VICTIM, interval=0.5)
        for thread, _ in posts:
            thread.join(20)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(loadgen.summary(results))
    failed = [r for r in results if r.status != 200]
    assert not failed, (len(failed), failed[:5])
    # A GET stuck on the stopped backend was given up after the response timeout (1.5 s) and
    # answered by another backend: nothing waits anywhere near the 10 s server timeout.
    assert max(r.elapsed for r in results) < 4, loadgen.summary(results)

    answered = [r for _, r in posts if r.status == 201]
    stuck = [r for _, r in posts if r.status != 201]
    assert len(answered) == 2 and len(stuck) == 1, posts
    assert stuck[0].status == 504, stuck  # HAProxy's own clean failure, after its server timeout
    time.sleep(1)  # the resumed stand-in may still execute what sat in its socket
    journals = {c: post_journal(c) for c in CTRLS}
    everywhere = [i for ids in journals.values() for i in ids]
    for r in answered:
        assert everywhere.count(r.request_id) == 1, journals
    # The stuck POST was never replayed on another backend (at most the stopped one ran it).
    assert all(stuck[0].request_id not in journals[c] for c in CTRLS if c != VICTIM), journals
    assert everywhere.count(stuck[0].request_id) <= 1, journals
    wait_until(lambda: ready_everywhere(VICTIM), 45, "nova/%s restored after SIGCONT" % VICTIM, interval=0.5)


def test_without_the_loop_haproxy_alone_still_fails_no_get(remediating):
    """The HAProxy settings are the safety net: with the beacons off, every GET still succeeds."""
    rc, _ = labtools.salt("lab-ctrl*", "beacons.disable_beacon", "openstack_ha_backends")
    assert rc == 0
    pid = standin_pid(VICTIM, "nova")
    try:
        os.kill(pid, signal.SIGSTOP)
        try:
            results = loadgen.run(VIPS["public"], NOVA, rate=50, seconds=6, timeout=5)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        rc, _ = labtools.salt("lab-ctrl*", "beacons.enable_beacon", "openstack_ha_backends")
        assert rc == 0
    print(loadgen.summary(results))
    assert not [r for r in results if r.status != 200], loadgen.summary(results)
