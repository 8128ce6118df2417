"""
Write unavailability through the Galera VIP when the writer dies, in the lab.

A writer inserts a row through HAProxy's Galera listener (internal VIP, port 3306) every
20 ms, one connection each, as an OpenStack service reconnecting would. The current writer
node's mariadbd is SIGKILLed (its mysqld_safe first, so nothing restarts it: the server is
gone, its host stays up, as after a crash or the OOM killer); measured: seconds from the kill until the first write that
started after it has committed. N runs per setting, median and p95, all in one run:

  project            the node health daemon as HAProxy's check (inter 0.5 s, fall 2 at
                     fastinter 0.2 s), Galera's failure detection tuned (suspect 1.2 s), the
                     health daemons evicting a peer whose server died (evs.evict), the
                     remediation loop draining the dead writer;
  no eviction        the project without the health daemons' eviction (until 0.7.19): the
                     survivors wait out Galera's suspect window;
  HAProxy alone      the same HAProxy and Galera settings, the loop off;
  anchors            a plain TCP check (inter 2 s, fall 3) and Galera's default failure
                     detection (evs.suspect_timeout 5 s), the loop off.

After each run the killed node is started again by the state (it rejoins by IST) and the
cluster must be back to three Synced nodes with the same state UUID; rows committed before
each kill are counted on every node at the end (none may be lost).

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/galera_writer_failover.py [--runs 10]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drain_latency import p95  # noqa: E402
from lab import labctl  # noqa: E402

CTRLS = [n for n, _ in labctl.CONTROLLERS]
ADDRESS = dict(labctl.CONTROLLERS)
VIP, USER, PASSWORD, DB = "10.213.0.101", "keystone", "lab-keystone-db-secret", "keystone"
GALERA_DEFAULTS = {"evs.keepalive_period": "PT1S", "evs.suspect_timeout": "PT5S", "evs.inactive_timeout": "PT15S",
                   "evs.inactive_check_period": "PT0.5S", "evs.install_timeout": "PT7.5S", "evs.join_retrans_period": "PT1S",
                   "gmcast.peer_timeout": "PT3S"}
ANCHOR_CHECKS = {"inter": 2, "fastinter": 2, "timeout": 1, "fall": 3, "rise": 2}  # HAProxy's fastinter defaults to inter
SETTINGS = [
    ("project (health check + loop, Galera tuned)", {}, True),
    ("project without the eviction of dead peers (0.7.19)", {"galera": {"evict_dead_peers": False}}, True),
    ("HAProxy alone, project's settings", {}, False),
    ("anchors (TCP check inter 2 s fall 3, Galera defaults)",
     {"galera": {"check": "tcp", "provider_options": GALERA_DEFAULTS, "haproxy_check": ANCHOR_CHECKS, "evict_dead_peers": False}},
     False),
]


def salt(*args, timeout=900):
    proc = labctl.salt_cmd("salt", "--out=json", "--static", "-t", "120", *args, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit("salt {} failed: {}".format(" ".join(args), (proc.stdout + proc.stderr)[-2000:]))
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def sql(query, timeout=1):
    """Run ``query`` through the VIP; returns (ok, stdout) or, on failure, (False, the error)."""
    try:
        proc = subprocess.run(["mariadb", "--no-defaults", "-h", VIP, "-u", USER, "-p" + PASSWORD, "--connect-timeout=%d" % timeout,
                               "-N", "-B", DB, "-e", query], capture_output=True, text=True, timeout=timeout + 4)
    except subprocess.TimeoutExpired:
        return False, "no answer within {} s".format(timeout + 4)
    return (True, proc.stdout) if proc.returncode == 0 else (False, proc.stderr.strip())


def listener_state():
    """How the VIP holder's HAProxy sees the Galera listener's servers: {server: status}."""
    for ctrl in CTRLS:
        if " {}/".format(VIP) not in labctl.ctrl_run(ctrl, ["ip", "-o", "-4", "addr", "show"]).stdout:
            continue
        out = labctl.ctrl_run(ctrl, ["sh", "-c", "echo 'show stat' | socat stdio /run/haproxy/admin.sock"], check=False).stdout
        return {f[1]: f[17] for f in (line.split(",") for line in out.splitlines()) if len(f) > 17 and f[0] == "galera"
                and f[1] not in ("FRONTEND", "BACKEND")}
    return {}


def status(ctrl):
    # From inside the controller: the health daemon answers only the controllers.
    proc = subprocess.run(labctl.in_ctrl(ctrl, ["curl", "-s", "-m", "2", "http://%s:9200/status" % ADDRESS[ctrl]]), capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def wait(predicate, timeout, what, step=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise SystemExit("timed out waiting for " + what)


def synced_everywhere():
    found = [status(c) for c in CTRLS]
    return all(s and s.get("state_code") == 4 and s.get("cluster_size") == 3 for s in found)


def writer_node():
    """The node HAProxy's Galera listener sends new connections to, from the VIP holder."""
    ok, out = sql("SELECT @@wsrep_node_name")
    return out.strip() if ok else None


def configure(override, loop):
    """Apply the HAProxy and Galera settings; restart the nodes one at a time when the Galera
    provider options change (they are read at start), each back to Synced before the next."""
    pillar = "pillar=" + json.dumps({"openstack_ha": override})
    before = salt("lab-ctrl*", "cmd.run", "sha256sum /etc/mysql/mariadb.conf.d/60-openstack-ha-galera.cnf")
    salt("lab-ctrl*", "state.apply", "openstack_ha.haproxy", pillar)
    salt("lab-ctrl*", "state.sls", "openstack_ha.galera", pillar)
    after = salt("lab-ctrl*", "cmd.run", "sha256sum /etc/mysql/mariadb.conf.d/60-openstack-ha-galera.cnf")
    for ctrl in CTRLS:
        if before.get(ctrl) != after.get(ctrl):
            print("  restarting {} for the new Galera settings".format(ctrl), flush=True)
            salt(ctrl, "openstack_ha_galera.stop")
            salt(ctrl, "state.sls", "openstack_ha.galera", pillar)
            wait(synced_everywhere, 300, "three Synced nodes")
    for beacon in ("openstack_ha_backends", "openstack_ha_galera"):
        salt("lab-ctrl*", "beacons.enable_beacon" if loop else "beacons.disable_beacon", beacon)
    return pillar


def is_live_mariadbd(pid):
    """True when ``pid`` is a running (not zombie) mariadbd: read from /proc, as PID 1 here
    reaps dead processes late and kill -0 would still succeed on them."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return False
    return fields.get("Name", "").strip() == "mariadbd" and not fields.get("State", "").strip().startswith(("Z", "X"))


def one_run(pillar, marker):
    victim = writer_node()
    if victim not in CTRLS:
        raise SystemExit("no writer answers through the VIP")
    pid = int(labctl.ctrl_run(victim, ["cat", "/run/mysqld/mysqld-%s.pid" % victim]).stdout.split()[0])
    if not is_live_mariadbd(pid):
        raise SystemExit("the pid file of {} names {}, which is not a live mariadbd".format(victim, pid))
    results, stop, errors = [], threading.Event(), {}

    def write():
        n = 0
        while not stop.is_set():
            n += 1
            start = time.monotonic()
            ok, out = sql("INSERT INTO oha_bench VALUES (NULL, '%s-%d')" % (marker, n))
            results.append((start, time.monotonic(), ok))
            if not ok:
                errors[out] = errors.get(out, 0) + 1
            time.sleep(0.02)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    time.sleep(2)
    # The node's mysqld_safe goes first: left alive, it would start mariadbd again at once and,
    # with a plain TCP check, HAProxy would send the writes back to a node that is still
    # joining (port open, not Synced). Measured here: the writer's server gone, its host up;
    # the state starts it again after the run.
    supervisor = labctl.parent_of(pid)
    if supervisor and "mysqld_safe" in open("/proc/%d/cmdline" % supervisor).read():
        os.kill(supervisor, signal.SIGKILL)
    killed, killed_wall = time.monotonic(), time.time()
    os.kill(pid, signal.SIGKILL)
    gone = time.monotonic() + 5
    while is_live_mariadbd(pid) and time.monotonic() < gone:
        time.sleep(0.05)
    if is_live_mariadbd(pid):
        raise SystemExit("mariadbd {} of {} still runs 5 s after SIGKILL".format(pid, victim))
    deadline = killed + 60
    while time.monotonic() < deadline and not any(s > killed and ok for s, _, ok in results):
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    thread.join(10)
    after = [end for start, end, ok in results if start > killed and ok]
    if not after:
        raise SystemExit("no write succeeded within 60 s of the kill of {}; the writes' errors: {}; the VIP holder's "
                         "HAProxy sees the Galera servers as {}; the nodes report {}".format(
                             victim, errors, listener_state(), {c: status(c) for c in CTRLS}))
    committed = sum(1 for _, _, ok in results if ok)
    # when each survivor's health daemon evicted the victim (galera:evict_dead_peers), if it did
    evicted = sorted("%.2f s (reported gone at %.2f s)" % (e["at"] - killed_wall, e.get("reported", e["at"]) - killed_wall)
                     for c in CTRLS if c != victim
                     for e in (status(c) or {}).get("evictions", []) if e["node"] == victim and e["at"] >= killed_wall)
    salt(victim, "state.sls", "openstack_ha.galera", pillar)  # rejoin (IST)
    wait(synced_everywhere, 300, "three Synced nodes after the rejoin")
    time.sleep(12)  # HAProxy's checks (rise) and the loop's restore, then out of its cooldown
    return victim, min(after) - killed, committed, evicted



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=10)
    keys = ("project", "no-evict", "haproxy", "anchors")
    parser.add_argument("--only", choices=keys, action="append",
                        help="run only these settings (repeatable; default: all four, in order)")
    args = parser.parse_args()
    chosen = [s for s, key in zip(SETTINGS, keys) if not args.only or key in args.only]
    ok, _ = sql("CREATE TABLE IF NOT EXISTS oha_bench (id BIGINT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB")
    if not ok:
        raise SystemExit("cannot create the bench table through the VIP")
    uuid = status(CTRLS[0])["cluster_uuid"]
    rows, committed = [], 0
    try:
        for label, override, loop in chosen:
            print(label, flush=True)
            pillar = configure(override, loop)
            samples = []
            for i in range(args.runs):
                victim, seconds, n, evicted = one_run(pillar, "r%d" % i)
                samples.append(seconds)
                committed += n
                print("  run {:>2}: writer {} killed, writes back after {:.2f} s; evicted by its peers after {}".format(
                    i + 1, victim, seconds, ", ".join(evicted) or "-"), flush=True)
            rows.append((label, statistics.median(samples), p95(samples)))
    finally:
        configure({}, True)
    counts = {c: labctl.ctrl_run(c, ["mariadb", "-N", "-B", "-e", "SELECT COUNT(*) FROM keystone.oha_bench"]).stdout.strip() for c in CTRLS}
    uuids = {c: (status(c) or {}).get("cluster_uuid") for c in CTRLS}
    print("\nwrite unavailability after the writer's SIGKILL, {} runs each (seconds)".format(args.runs))
    print("{:<56} {:>7} {:>7}".format("settings", "median", "p95"))
    for label, med, high in rows:
        print("{:<56} {:>7.2f} {:>7.2f}".format(label, med, high))
    if len(rows) == len(SETTINGS):
        print("ratio anchors/project (median): {:.1f}x".format(rows[-1][1] / rows[0][1]))
    print("rows on each node: {} (writes committed during the runs: {}); state UUID {} (was {})".format(
        counts, committed, sorted(set(uuids.values())), uuid))


if __name__ == "__main__":
    main()
