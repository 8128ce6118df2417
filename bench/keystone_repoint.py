"""
Time from the VIP holder's failure to a Keystone catalog that points at a working controller,
in the lab, ``active_controller`` endpoint mode, median and p95 over N runs.

Each run stops the public VIP holder's keepalived (SIGTERM: it resigns, its VIPs move), then
polls, every 100 ms, (a) which controller holds the VIP and (b) the catalog Keystone serves
(``GET /v3/auth/catalog`` with a token issued before the run: the same catalog a new token
request returns, without the cost of issuing a token ten times a second on the controllers
under test); the first catalog that names the new holder is confirmed by a new token request
(the OpenStack client's view), and polling goes on if that disagrees. Measured:
seconds from the stop until (a) the VIP is on another controller (keepalived's own failover,
the floor under everything else) and (b) every one of the catalog's 21 endpoints names the new
holder and its Keystone answers. The anchors have no automatic path: a human edits the
endpoints. Between runs `state.sls openstack_ha.keepalived` starts keepalived again and the
catalog follows the VIP back.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/keystone_repoint.py [--runs 10]
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drain_latency import p95  # noqa: E402
from lab import keystone_lab, labctl  # noqa: E402
from tests.integration import labtools  # noqa: E402

VIP = "10.213.0.100"
CTRLS = [n for n, _ in labctl.CONTROLLERS]
ADDRESS = dict(labctl.CONTROLLERS)


def holders():
    return [c for c in CTRLS if " {}/".format(VIP) in labctl.ctrl_run(c, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout]


def hosts_of(catalog):
    return {ep["url"].split("/")[2].split(":")[0] for entry in catalog for ep in entry["endpoints"]}


def catalog_hosts(session):
    """The set of hosts a new token's catalog names (None when no token could be had)."""
    try:
        return hosts_of(session.fresh_catalog())
    except Exception:
        return None


def served_hosts(session):
    """The set of hosts the catalog Keystone serves now names, read with the session's token
    (None when Keystone did not answer)."""
    try:
        return hosts_of(session.request("GET", "/auth/catalog")["catalog"])
    except Exception:
        return None


def salt(*args):
    return labctl.salt_cmd("salt", "--out=json", *args, timeout=300, check=False)


def runner(*args):
    return json.loads(labctl.salt_cmd("salt-run", "--out=json", *args, timeout=120, check=False).stdout)


def repoint_records(since):
    """The remediation loop's repoint decisions since ``since`` (epoch), from the master's
    decision records (``openstack_ha.history``, read-only)."""
    return [d for d in labtools.decisions(500) if d.get("what") == "repoint"
            and d.get("decided_by") == "remediation" and d.get("time", 0) >= since]


def breakdown(since):
    """Print the medians of the parts of the loop's repoints since ``since``."""
    found = repoint_records(since)
    if not found:
        return
    print("the loop's {} repoints (to and back), median / max (s): ".format(len(found)) + ", ".join(
        "{} {:.2f} / {:.2f}".format(label, statistics.median(vals), max(vals)) for label, vals in (
            (label, [d[key] for d in found if isinstance(d.get(key), (int, float))]) for label, key in PARTS) if vals))
    print("Keystone URLs the runner used: {}".format(sorted({str(d.get("keystone_url")) for d in found})))
    sources = {}
    for d in found:
        sources[d.get("view_from") or "view"] = sources.get(d.get("view_from") or "view", 0) + 1
    print("who holds the VIP, learnt from: {}".format(", ".join("{} {}".format(k, v) for k, v in sorted(sources.items()))))
    slow = [d for d in found if d.get("took", 0) > 3]
    for d in slow:
        print("  slow repoint to {}: took {:.2f} s, worked around: {}".format(
            sorted(set((d.get("holders") or {}).values())), d["took"], d.get("keystone_retries") or "nothing"))


PARTS = (("beacon event to runner", "event_lag"), ("controllers' VIP view", "view_took"), ("wait for another sync", "lock_wait"),
         ("Keystone reads + PATCHes", "took"), ("of which reads", "keystone_read"), ("PATCHes", "keystone_write"))


def run_parts(since, new):
    """The parts of the loop's repoint to ``new`` since ``since`` (epoch, the stop), as one
    line: when the beacon saw the move and when the endpoints were repointed, from the stop,
    and the parts in between."""
    deadline = time.monotonic() + 20  # the record is stored once the runner has read the catalog back
    found = []
    while not found and time.monotonic() < deadline:
        found = [d for d in repoint_records(since) if new in (d.get("holders") or {}).values()
                 and isinstance(d.get("repointed_at"), (int, float)) and d["repointed_at"] >= since]
        time.sleep(0.2)
    if not found:
        return "no repoint by the loop recorded"
    d = found[0]
    marks = ["{} +{:.2f}".format(key, d[key] - since) for key in ("reported_at", "repointed_at") if isinstance(d.get(key), (int, float))]
    retries = ["{} {}".format(k, v) for k, v in sorted((d.get("keystone_retries") or {}).items())]
    source = ["view from {}".format(d["view_from"])] if d.get("view_from") else []
    return ", ".join(marks + ["{} {:.2f}".format(key, d[key]) for _, key in PARTS if isinstance(d.get(key), (int, float))]
                     + source + retries)


def one_run(session, old):
    pid = int(labctl.ctrl_run(old, ["cat", "/run/keepalived.pid"]).stdout.split()[0])
    start, began = time.monotonic(), time.time()
    os.kill(pid, signal.SIGTERM)
    vip_at = catalog_at = new = None
    deadline = start + 30
    while time.monotonic() < deadline and catalog_at is None:
        if vip_at is None:
            now_holders = holders()
            if len(now_holders) == 1 and now_holders[0] != old:
                vip_at, new = time.monotonic() - start, now_holders[0]
        if new is not None and served_hosts(session) == {ADDRESS[new]}:
            seen = time.monotonic() - start
            if catalog_hosts(session) == {ADDRESS[new]} and keystone_lab.answers(ADDRESS[new], 5000):
                catalog_at = seen
        time.sleep(0.1)
    return vip_at, catalog_at, new, began


def restore(old, session):
    salt(old, "state.sls", "openstack_ha.keepalived")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if holders() == [old] and catalog_hosts(session) == {ADDRESS[old]}:
            return
        time.sleep(0.5)
    raise SystemExit("the VIP and the catalog did not come back to {}".format(old))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    keystone_lab.deploy()
    session = keystone_lab.admin_session()
    print("active_controller mode: waiting until the master's loop acts on it", flush=True)
    labtools.site_change_seen(lambda: keystone_lab.set_endpoint_mode("active_controller"))
    vip_times, catalog_times = [], []
    since = time.time()
    try:
        print("catalog: {}".format(runner("openstack_ha.catalog")["comment"]), flush=True)
        for i in range(args.runs):
            (old,) = holders()
            vip_at, catalog_at, new, began = one_run(session, old)
            print("  run {:2d}: {} stopped; VIP on {} after {}, catalog on it after {} ({})".format(
                i + 1, old, new, "%.2f s" % vip_at if vip_at else "NEVER", "%.2f s" % catalog_at if catalog_at else "NEVER",
                run_parts(began, new) if new else "-"), flush=True)
            if vip_at is not None:
                vip_times.append(vip_at)
            catalog_times.append(catalog_at if catalog_at is not None else float("inf"))
            restore(old, session)
    finally:
        keystone_lab.set_endpoint_mode("vip")
        runner("openstack_ha.catalog")
        for ctrl, _ in labctl.CONTROLLERS:  # the stand-in APIs back, as the tests expect them
            keystone_lab.stop(ctrl)
            labtools.start_standins(ctrl)
    print("\nfrom the holder's keepalived stopping, {} runs (seconds)".format(args.runs))
    print("{:<44} {:>8} {:>8}".format("", "median", "p95"))
    print("{:<44} {:>8.2f} {:>8.2f}".format("VIP on another controller (keepalived)", statistics.median(vip_times), p95(vip_times)))
    print("{:<44} {:>8.2f} {:>8.2f}".format("catalog points at it (this project)", statistics.median(catalog_times), p95(catalog_times)))
    print("{:<44} {:>8} {:>8}".format("catalog points at it (anchors)", "never", "never"))
    print("repoint overhead over the VIP move: median {:.2f} s".format(statistics.median(catalog_times) - statistics.median(vip_times)))
    breakdown(since)


if __name__ == "__main__":
    main()
