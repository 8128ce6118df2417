"""
Decision throughput: synthetic beacon reports fed to the runner's decision function.

7 services x 3 controllers. A scripted sequence of real state changes (a backend dies, comes
back) is reported by every controller, many times over (duplicates, heartbeats). Measures
decisions per second and checks that exactly one action is taken per real state change.
Baseline in the same run: the cost of building the evidence alone (no decision).

Usage: .venv/bin/python bench/decision_throughput.py [--events 20000]
"""

import argparse
import importlib.util
import os
import random
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("decide", os.path.join(HERE, "_utils", "openstack_ha_decide.py"))
decide_lib = importlib.util.module_from_spec(spec)
spec.loader.exec_module(decide_lib)

SERVICES = ["keystone", "glance", "designate", "neutron", "nova", "placement", "proxy"]
CTRLS = ["c1", "c2", "c3"]
COOLDOWN = 10.0


def views_for(down, admin):
    return {c: {"probes": {k: {"up": k not in down, "detail": ""} for k in admin}, "admin": dict(admin), "haproxy": True} for c in CTRLS}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    rng = random.Random(7)
    backends = {"%s/%s" % (s, c): s for s in SERVICES for c in CTRLS}
    admin = {k: "ready" for k in backends}
    down, records, now = set(), {}, 0.0
    real_changes = actions = 0
    script = []
    for i in range(args.events):
        now += 0.05  # 20 reports a second
        if i % 400 == 0:  # a real change every 20 s (outside the cooldown)
            key = rng.choice(sorted(backends))
            if key in down:
                down.discard(key)
            elif not any(k in down for k in backends if backends[k] == backends[key]):
                down.add(key)
        script.append((now, frozenset(down)))
    expected = 0
    previous = frozenset()
    for _, state in script:
        expected += len(state ^ previous)
        previous = state

    t0 = time.perf_counter()
    for now, state in script:
        views_for(state, admin)
    baseline = time.perf_counter() - t0

    t0 = time.perf_counter()
    for now, state in script:
        for action in decide_lib.decide(backends, views_for(state, admin), 2, records, now, COOLDOWN):
            if action["action"] in ("drain", "restore"):
                actions += 1
                admin[action["key"]] = "drain" if action["action"] == "drain" else "ready"
                records[action["key"]] = {"state": admin[action["key"]], "by": "remediation", "time": now}
    elapsed = time.perf_counter() - t0
    real_changes = expected
    print("events: {}, real state changes: {}, actions taken: {}".format(len(script), real_changes, actions))
    print("decision path: {:.0f} events/s ({:.1f} us/event); evidence building alone: {:.0f} events/s".format(
        len(script) / elapsed, 1e6 * elapsed / len(script), len(script) / baseline))
    print("decision cost over evidence building alone: {:.2f}x".format(elapsed / baseline))
    print("exactly one action per real change: {}".format("yes" if actions == real_changes else "NO"))


if __name__ == "__main__":
    main()
