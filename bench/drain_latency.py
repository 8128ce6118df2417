"""
The remediation loop against HAProxy's own checks, in the lab.

1. Time from a backend failure to that backend out of rotation on all three HAProxies:
   crash (SIGKILL) and hang (SIGSTOP) of nova's backend on lab-ctrl3, N runs each, median and
   p95, for: the project (beacons + engine + runner drain it), HAProxy's checks alone at the
   anchors' settings (inter 2 s fall 3; Kolla's inter 2 s fall 5), and HAProxy alone at this
   project's own check settings (the remediation loop off, so what it adds is visible).
2. Failed client requests through the VIP at 100 requests/s for 20 s while one backend is
   killed at 5 s: the project against HAProxy's checks alone.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/drain_latency.py [--runs 20] [--anchor-runs 5] [--load-runs 3] [--watch 0.2]
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab import labctl, loadgen  # noqa: E402

CTRLS = [n for n, _ in labctl.CONTROLLERS]
VICTIM = "lab-ctrl3"
SERVICE, PORT, VIP = "nova", 8774, "10.213.0.100"
COOLDOWN = 10  # the default remediation:cooldown


def salt(*args):
    proc = labctl.salt_cmd("salt", "--out=json", *args, check=False)
    if proc.returncode != 0:
        raise SystemExit("salt {} failed: {}".format(" ".join(args), proc.stdout[-1500:] + proc.stderr[-500:]))


def configure(inter, fall, remediation, haproxy=None, services=None):
    """Apply openstack_ha.haproxy with these check settings (plus optional ``haproxy`` and
    ``services`` pillar overrides) and switch the backend beacons on or off."""
    override = {"remediation": {"haproxy_check": {"inter": inter, "fall": fall}}}
    if haproxy:
        override["haproxy"] = haproxy
    if services:
        override["services"] = services
    salt("lab-ctrl*", "state.apply", "openstack_ha.haproxy", "pillar=" + json.dumps({"openstack_ha": override}))
    salt("lab-ctrl*", "beacons.enable_beacon" if remediation else "beacons.disable_beacon", "openstack_ha_backends")


_WATCH = {"now": (0, None, None)}  # the watcher, probe timeout and keep-alive the master's loop acts on (the lab's pillar)


def set_watch(seconds, probe_timeout=None, keepalive=None):
    """Run the backend beacons' watcher every ``seconds`` (0: off, the tick probes), and probe
    with ``probe_timeout`` seconds (None: the lab's 0.75 s) and ``keepalive`` (None: the
    default, connections kept): the lab site with
    ``remediation:probe`` changed in the master's override pillar root (the runner's model must
    know it too), the beacons applied, and (when the setting changed) waited until the master's
    loop acts on it."""
    import yaml

    from tests.integration import labtools

    def change():
        document = None
        if seconds or probe_timeout or keepalive is not None:
            with open(os.path.join(labctl.REPO, "pillar", "openstack_ha", "sites", "lab.sls")) as fh:
                document = yaml.safe_load(fh)
            probe = document["openstack_ha"].setdefault("remediation", {}).setdefault("probe", {})
            if seconds:
                probe["watch"] = seconds
            if probe_timeout:
                probe["timeout"] = probe_timeout
            if keepalive is not None:
                probe["keepalive"] = keepalive
        labtools.write_site(document)
        salt("lab-ctrl*", "saltutil.refresh_pillar")
        salt("lab-ctrl*", "state.apply", "openstack_ha.beacons")

    wanted = (seconds or 0, probe_timeout, keepalive)
    if wanted == _WATCH["now"]:
        change()
        return
    labtools.site_change_seen(change)
    _WATCH["now"] = wanted


def sockets():
    """Each controller's HAProxy admin socket, reached through its master's mount namespace."""
    out = {}
    for ctrl in CTRLS:
        pid = labctl.ctrl_run(ctrl, ["cat", "/run/haproxy.pid"]).stdout.split()[0]
        out[ctrl] = "/proc/{}/root/run/haproxy/admin.sock".format(pid)
    return out


def ask(path, command):
    return labctl.haproxy_command(path, command)


def out_of_rotation(path):
    """True when HAProxy sends no new request to the victim: drained, in maintenance or DOWN."""
    for line in ask(path, "show servers state {}".format(SERVICE)).splitlines()[2:]:
        f = line.split()
        if len(f) > 6 and f[3] == VICTIM:
            return f[5] == "0" or int(f[6]) & 0x09 != 0  # op state stopped, or forced maint/drain
    return False


def back_in_rotation(path):
    for line in ask(path, "show servers state {}".format(SERVICE)).splitlines()[2:]:
        f = line.split()
        if len(f) > 6 and f[3] == VICTIM:
            return f[5] == "2" and int(f[6]) & 0x09 == 0
    return False


def pid_of_backend():
    out = labctl.ctrl_run(VICTIM, ["cat", "/run/standin-%s.pid" % SERVICE], check=False).stdout.split()
    return int(out[0]) if out else None


def wait(predicate, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def recover(kind, pid):
    if kind == "hang":
        os.kill(pid, signal.SIGCONT)
    else:
        labctl.start_standins(VICTIM, dict(labctl.CONTROLLERS)[VICTIM])
    paths = sockets()
    if not wait(lambda: all(back_in_rotation(p) for p in paths.values()), 60, 0.2):
        raise SystemExit("the backend did not come back into rotation within 60 s")
    time.sleep(COOLDOWN + 0.5)  # out of the remediation's cooldown, so every run starts alike


def one_failure(kind):
    paths = sockets()
    pid = pid_of_backend()
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL if kind == "crash" else signal.SIGSTOP)
    if not wait(lambda: all(out_of_rotation(p) for p in paths.values()), 60):
        raise SystemExit("backend never left rotation")
    elapsed = time.monotonic() - start
    recover(kind, pid)
    return elapsed


def p95(samples):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def load_run(rate=100, seconds=20, fail_at=5, kind="crash"):
    """Send ``rate`` GETs a second through the VIP; SIGKILL (crash) or SIGSTOP (hang) the victim
    at ``fail_at`` s. Returns the requests that failed or took over 2 s, and the results."""
    pid = pid_of_backend()
    results = loadgen.run(VIP, PORT, rate, seconds, timeout=2.5,
                          events={fail_at: lambda: os.kill(pid, signal.SIGKILL if kind == "crash" else signal.SIGSTOP)})
    recover(kind, pid)
    return sum(1 for r in results if r.bad()), results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--anchor-runs", type=int, help="runs of each HAProxy-alone setting (default: --runs)")
    parser.add_argument("--load-runs", type=int, default=3)
    parser.add_argument("--only", choices=("project", "watcher", "anchors", "kolla"), help="measure one setting (no ratio, no load phase)")
    parser.add_argument("--watch", type=float, default=0,
                        help="also measure the project with the backend watcher every WATCH seconds (remediation:probe:watch)")
    parser.add_argument("--probe-timeout", type=float,
                        help="with --watch: the probes' timeout (remediation:probe:timeout; the lab's pillar: 0.75 s, the default 0.25 s)")
    args = parser.parse_args()
    configs = [
        ("project (loop drain; checks inter 2 s fall 3)", 2, 3, True),
    ] + ([("project, watcher every {} s{}".format(args.watch, ", probe timeout {} s".format(args.probe_timeout) if args.probe_timeout else ""),
            2, 3, args.watch)] if args.watch else []) + [
        ("HAProxy alone, anchors (inter 2 s fall 3)", 2, 3, False),
        ("HAProxy alone, anchors (inter 2 s fall 3)", 2, 3, False),
        ("HAProxy alone, Kolla (inter 2 s fall 5)", 2, 5, False),
    ]
    if args.only:
        configs = [c for c in configs if args.only in c[0].lower()]
        args.load_runs = 0
    rows = []
    load = []
    try:
        for label, inter, fall, remediation in configs:
            if remediation is not True and remediation is not False:
                set_watch(remediation, args.probe_timeout)
            configure(inter, fall, bool(remediation))
            time.sleep(4)  # a disabled beacon's watcher thread ends within 3 s
            for kind in ("crash", "hang"):
                samples = []
                for i in range(args.runs if remediation else (args.anchor_runs or args.runs)):
                    samples.append(one_failure(kind))
                    print("  {:<52} {:<5} run {:>2}: {:.2f} s".format(label, kind, i + 1, samples[-1]), flush=True)
                rows.append((label, kind, statistics.median(samples), p95(samples)))
            if remediation is not True and remediation is not False:
                set_watch(0)
        for label, remediation in (("project (loop drain)", True), ("HAProxy checks alone (inter 2 s fall 3)", False)):
            if not args.load_runs:
                break
            configure(2, 3, remediation)
            time.sleep(4)
            counts = [load_run()[0] for _ in range(args.load_runs)]
            print("  load, {}: {}".format(label, counts), flush=True)
            load.append((label, counts))
    finally:
        if args.watch:
            set_watch(0)
        configure(2, 3, True)
    print("\nbackend out of rotation on all three HAProxies, {} runs each of the project, {} of each HAProxy-alone "
          "setting (seconds)".format(args.runs, args.anchor_runs or args.runs))
    print("{:<52} {:<6} {:>7} {:>7}".format("settings", "kind", "median", "p95"))
    for label, kind, med, high in rows:
        print("{:<52} {:<6} {:>7.2f} {:>7.2f}".format(label, kind, med, high))
    for kind in ("crash", "hang") if not args.only else ():
        ours = [r[2] for r in rows if r[1] == kind and r[0].startswith("project")][0]
        anchors = [r[2] for r in rows if r[1] == kind and "anchors" in r[0]][0]
        print("ratio anchors/project, {}: {:.1f}x".format(kind, anchors / ours))
    print("\nfailed or >2 s requests of 2,000 (100/s for 20 s, backend SIGKILLed at 5 s)")
    for label, counts in load:
        print("{:<52} runs {} median {}".format(label, counts, statistics.median(counts)))


if __name__ == "__main__":
    main()
