"""
Cost of one backend-beacon tick: 7 services x 3 controllers = 21 probes, one of them
blackholed (its address never answers ARP, as when a host is gone), wall time and CPU per
tick over N ticks, running the real beacon code. Baselines in the same run: all probes in
one blocking concurrent round (waits for the blackholed probe's timeout), and the same probes
one after another, as a naive beacon would do them; and 0.7.7's way, a pool of threads with
one blocking probe per thread (the beacon now probes on non-blocking sockets in its own thread).
Then the backend watcher's round (the 20 answering backends, rounds back to back): on kept
connections (HTTP keep-alive, 0.7.9's default) against a new connection per probe (0.7.8's way,
`probe:keepalive: false`), CPU per round.

Runs inside a throwaway network namespace (10.77.0.0/24 on a veth it creates), removed
afterwards. Usage: .venv/bin/python bench/beacon_cost.py [--ticks 20]
"""

import argparse
import concurrent.futures
import importlib.util
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "oha-bench-beacon"


def load(relpath, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fn, ticks):
    walls, cpus = [], []
    for _ in range(ticks):
        c0, w0 = cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(cpu() - c0)
    return statistics.median(walls), max(walls), statistics.median(cpus)


def inner(ticks):
    probe = load("_modules/openstack_ha_probe.py", "probe")
    beacon = load("_beacons/openstack_ha_backends.py", "beacon")
    beacon.__salt__ = {"openstack_ha_probe.probe_round": probe.probe_round, "openstack_ha_probe.close_probes": probe.close_probes}
    beacon.__context__ = {}
    servers = []
    targets = []
    try:
        for i in range(20):
            port = 18000 + i
            servers.append(subprocess.Popen([sys.executable, os.path.join(HERE, "lab", "standin_api.py"), "--service", "s%d" % i,
                                             "--address", "127.0.0.1", "--port", str(port)]))
            targets.append({"service": "svc%d" % (i // 3), "backend": "c%d" % (i % 3), "address": "127.0.0.1", "port": port, "path": "/", "status": 200})
        targets.append({"service": "svc6", "backend": "c2", "address": "10.77.0.99", "port": 8774, "path": "/", "status": 200})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(r["up"] for r in probe.probe_targets(targets[:-1], 0.5).values()):
            time.sleep(0.1)
        result = probe.probe_targets(targets, 0.25)
        assert sum(1 for r in result.values() if not r["up"]) == 1, result
        config = [{"targets": targets}, {"timeout": 0.25}, {"budget": 0.3}, {"fall": 1}, {"rise": 2}, {"heartbeat": 3600}]
        beacon.beacon(config)  # first tick opens the probes' selector
        ticking = measure(lambda: beacon.beacon(config), ticks)
        blocking = measure(lambda: probe.probe_targets(targets, 0.25), max(3, ticks // 4))
        sequential = measure(lambda: [probe._probe(t["address"], t["port"], t["path"], t["status"], 0.25) for t in targets],
                             max(3, ticks // 4))
        # 0.7.7's way: a pool of threads that outlives the tick, one blocking probe per thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
            threaded = measure(lambda: list(pool.map(lambda t: probe._probe(t["address"], t["port"], t["path"], t["status"], 0.25),
                                                      targets)), max(3, ticks // 4))
        assert beacon.__context__["openstack_ha_backends"]["state"]["svc6/c2"] == "down"
        rounds = {}
        for keep in (True, False, True, False):  # alternated: a drift of the machine hits both
            state = {}
            try:
                probe.probe_round(state, targets[:-1], 0.25, 0.3, keep=keep)
                took = measure(lambda: probe.probe_round(state, targets[:-1], 0.25, 0.3, keep=keep), ticks * 5)
                assert all(r["up"] for r in probe.probe_round(state, targets[:-1], 0.25, 0.3, keep=keep).values())
                assert bool(state["idle"]) == keep, state["idle"]
            finally:
                probe.close_probes(state)
            rounds.setdefault(keep, []).append(took[2])
    finally:
        for server in servers:
            server.send_signal(signal.SIGKILL)
            server.wait()
    print("beacon tick, 21 probes, 1 blackholed backend, probe timeout 0.25 s (project default), budget 0.3 s")
    print("{:<28} {:>10} {:>10} {:>12}".format("", "wall med", "wall max", "CPU med"))
    rows = (("beacon tick (this project)", ticking), ("one blocking round", blocking), ("sequential (naive)", sequential),
            ("thread per probe (0.7.7)", threaded))
    for label, (wall, worst, cpu_s) in rows:
        print("{:<28} {:>9.3f}s {:>9.3f}s {:>11.4f}s".format(label, wall, worst, cpu_s))
    print("ratio blocking/beacon wall: {:.1f}x; sequential/beacon: {:.1f}x; CPU thread per probe/beacon: {:.1f}x".format(
        blocking[0] / ticking[0], sequential[0] / ticking[0], threaded[2] / ticking[2]))
    kept, fresh = statistics.mean(rounds[True]), statistics.mean(rounds[False])
    print("\nwatcher round, 20 answering backends, CPU median per round ({} rounds, twice each):".format(ticks * 5))
    print("  kept connections (0.7.9 default)   {:.4f}s".format(kept))
    print("  a connection per probe (0.7.8)     {:.4f}s".format(fresh))
    print("  ratio: {:.2f}x".format(fresh / kept))
    probe.close_probes(beacon.__context__["openstack_ha_backends"]["probes"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(args.ticks)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        ns = ["ip", "netns", "exec", NS]
        subprocess.run(ns + ["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(ns + ["ip", "link", "add", "bh0", "type", "veth", "peer", "name", "bh1"], check=True)
        subprocess.run(ns + ["ip", "addr", "add", "10.77.0.1/24", "dev", "bh0"], check=True)
        subprocess.run(ns + ["ip", "link", "set", "bh0", "up"], check=True)
        subprocess.run(ns + [sys.executable, os.path.abspath(__file__), "--inner", "--ticks", str(args.ticks)], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=True)


if __name__ == "__main__":
    main()
