"""
VIP failover time in the lab: from a hard failure on the VIP holder to the VIP answering from
another controller's interface, median and p95 over N runs; and a soak: no VIP may move while
the site serves the benchmark load with nothing wrong.

Failures: keepalived SIGKILLed on the holder; HAProxy (master and worker) SIGKILLed on the holder.
Settings: the project with advert_int 0.1 (VRRPv3, the VRRP process at real-time priority,
admin-socket track script), the project's default advert_int 0.2, and keepalived at
advert_int 1, the anchors' default, measured in the same run. After each run the killed
daemon is started again through its init script and the holder takes its VIPs back.

Reloads (``--reloads N``): the holder's keepalived reloaded N times at advert_int 0.1
with both host cores kept busy, every other reload with its unicast peers changed (as a
controller replacement's apply does): every VIP move is a false failover.

Soak (``--soak SECONDS``, the issue asks 600): advert_int 0.1, 100 requests/s through
the public VIP and one core kept busy on the host, the VIP holders polled every 50 ms: every
change of holder is a false failover.

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/vip_failover.py [--runs 20] [--anchor-runs 5] [--soak 600]
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab import labctl  # noqa: E402

VIP = "10.213.0.100"
HOLDER = "lab-ctrl1"
OTHERS = [n for n, _ in labctl.CONTROLLERS if n != HOLDER]


def apply(target, advert_int=None):
    """Apply the site on ``target`` with ``advert_int`` (None: the project's default)."""
    extra = [] if advert_int is None else ["pillar=" + json.dumps({"openstack_ha": {"keepalived": {"advert_int": advert_int}}})]
    proc = labctl.salt_cmd("salt", "--out=json", target, "state.apply", "openstack_ha", *extra, check=False)
    if proc.returncode != 0:
        raise SystemExit("state.apply failed on {}: {}".format(target, proc.stdout[-2000:]))


def holds(ctrl):
    out = subprocess.run(["ip", "-n", labctl.netns(ctrl), "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True, text=True).stdout
    return (" %s/" % VIP) in out


def wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def pid_of(ctrl, pidfile):
    out = labctl.ctrl_run(ctrl, ["cat", pidfile], check=False).stdout.split()
    return int(out[0]) if out and out[0].isdigit() else None


def kill_keepalived():
    # The VRRP child first: killed after its parent it would notice and resign gracefully
    # (priority-0 advert), which is not the hard failure measured here.
    for pidfile in ("/run/vrrp.pid", "/run/keepalived.pid"):
        pid = pid_of(HOLDER, pidfile)
        if pid and labctl.alive(pid):
            os.kill(pid, signal.SIGKILL)


def kill_haproxy():
    master = pid_of(HOLDER, "/run/haproxy.pid")
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    for pid in [master] + [int(c) for c in children]:
        os.kill(pid, signal.SIGKILL)


def one_run(kill, advert_int):
    if not wait(lambda: holds(HOLDER) and not any(holds(o) for o in OTHERS), 20):
        raise SystemExit("{} did not take the VIP back".format(HOLDER))
    # At a random point of the track script's 1 s round: a fixed pause after the VIP came
    # back would kill HAProxy at the same phase of it every run.
    time.sleep(1.0 + random.random())
    start = time.monotonic()
    kill()
    if not wait(lambda: any(holds(o) for o in OTHERS), 15):
        raise SystemExit("the VIP did not move within 15 s")
    elapsed = time.monotonic() - start
    # Clean up what a hard kill leaves (the VIP stays on an interface keepalived can't tidy),
    # then start the daemon again the way its init script does.
    if kill is kill_keepalived:
        labctl.ctrl_run(HOLDER, ["sh", "-c", "ip addr del %s/24 dev eth0 2>/dev/null; ip addr del 10.213.0.101/24 dev eth0 2>/dev/null; ip addr del fd00:213::100/64 dev eth0 2>/dev/null; rm -f /run/keepalived.pid /run/vrrp.pid; true" % VIP])
        restart = labctl.salt_cmd("salt", "--out=json", HOLDER, "service.start", "keepalived", check=False)
    else:
        labctl.ctrl_run(HOLDER, ["rm", "-f", "/run/haproxy.pid"], check=False)
        restart = labctl.salt_cmd("salt", "--out=json", HOLDER, "service.start", "haproxy", check=False)
    if restart.returncode != 0:
        apply(HOLDER, advert_int)  # the slow way back: the whole state
    return elapsed


def soak(seconds):
    """VIP holder changes during ``seconds`` of load with nothing wrong; returns (changes,
    requests, failed requests)."""
    import threading

    from lab import loadgen

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results, changes, stop = [], [], threading.Event()
    thread = threading.Thread(target=lambda: results.extend(loadgen.run(VIP, 8774, rate=100, seconds=seconds, timeout=5)),
                              daemon=True)
    try:
        thread.start()
        last = [c for c in [HOLDER] + OTHERS if holds(c)]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            now = [c for c in [HOLDER] + OTHERS if holds(c)]
            if now != last:
                changes.append((round(seconds - (deadline - time.monotonic()), 2), last, now))
                last = now
            time.sleep(0.05)
        thread.join(seconds + 30)
    finally:
        burner.kill()
        burner.wait()
    return changes, len(results), len([r for r in results if r.bad()])


def reloads(count):
    """Reload (SIGHUP) the holder's keepalived ``count`` times at the advert_int applied, both
    host cores kept busy, every other reload with a unicast peer added to (or taken from) its
    configuration, as a controller replacement's apply does; returns the reloads after which
    the VIP left the holder or showed up elsewhere within 1.5 s."""
    conf = "/etc/keepalived/keepalived.conf"
    original = labctl.ctrl_run(HOLDER, ["cat", conf]).stdout
    peer = "        {}\n".format(labctl.CONTROLLERS[-1][1])
    if peer not in original:
        raise SystemExit("no unicast peer line {!r} in {}'s {}".format(peer.strip(), HOLDER, conf))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    moved = []
    try:
        for i in range(count):
            if i % 2:
                text = original if i % 4 == 3 else original.replace(peer, peer + "        10.213.0.99\n")
                labctl.ctrl_run(HOLDER, ["sh", "-c", "cat > " + conf], input_text=text)
            if not wait(lambda: holds(HOLDER) and not any(holds(o) for o in OTHERS), 20):
                raise SystemExit("{} did not take the VIP back".format(HOLDER))
            os.kill(pid_of(HOLDER, "/run/keepalived.pid"), signal.SIGHUP)
            left = wait(lambda: not holds(HOLDER) or any(holds(o) for o in OTHERS), 1.5)
            if left:
                moved.append(i + 1)
            print("  reload {:>2}{}: {}".format(i + 1, " (peers changed)" if i % 2 else "", "VIP MOVED" if left else "in place"),
                  flush=True)
            time.sleep(0.3)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        labctl.ctrl_run(HOLDER, ["sh", "-c", "cat > " + conf], input_text=original)
        os.kill(pid_of(HOLDER, "/run/keepalived.pid"), signal.SIGHUP)
    return moved


def summary(samples):
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def main():
    parser = argparse.ArgumentParser(description="VIP failover benchmark (lab)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--anchor-runs", type=int, default=5, help="runs of the previous default and of the anchors")
    parser.add_argument("--soak", type=float, default=0, help="seconds of load with nothing wrong (no VIP may move)")
    parser.add_argument("--reloads", type=int, default=0, help="reloads of the holder's keepalived, both cores busy (no VIP may move)")
    args = parser.parse_args()
    results, reloaded = [], None
    configs = (("project, advert_int 0.1 (rt priority)", 0.1, args.runs),
               ("project default, advert_int 0.2 (rt priority)", 0.2, args.anchor_runs), ("anchors (advert_int 1)", 1, args.anchor_runs))
    try:
        for label, advert, runs in configs:
            if not runs:
                continue
            apply("lab-ctrl*", advert)
            for failure, kill in (("keepalived SIGKILL", kill_keepalived), ("HAProxy SIGKILL", kill_haproxy)):
                samples = []
                for i in range(runs):
                    samples.append(one_run(kill, advert))
                    print("  {:<48} {:<20} run {:>2}: {:.3f} s".format(label, failure, i + 1, samples[-1]), flush=True)
                results.append((label, failure, samples))
        if args.reloads:
            apply("lab-ctrl*", 0.1)
            reloaded = reloads(args.reloads)
    finally:
        apply("lab-ctrl*")
    soaked = None
    if args.soak:
        if not wait(lambda: holds(HOLDER) and not any(holds(o) for o in OTHERS), 20):
            raise SystemExit("{} did not take the VIP back".format(HOLDER))
        soaked = soak(args.soak)
    print("\nVIP failover (seconds from kill to VIP on another controller)")
    print("{:<48} {:<20} {:>5} {:>8} {:>8}".format("settings", "failure", "runs", "median", "p95"))
    for label, failure, samples in results:
        med, p95 = summary(samples)
        print("{:<48} {:<20} {:>5} {:>8.3f} {:>8.3f}".format(label, failure, len(samples), med, p95))
    for failure in ("keepalived SIGKILL", "HAProxy SIGKILL"):
        ours = [summary(s)[0] for name, f, s in results if f == failure and "project" in name]
        anchor = [summary(s)[0] for name, f, s in results if f == failure and "anchors" in name]
        if ours and anchor:
            print("ratio (anchors / project), {}: {:.1f}x faster".format(failure, anchor[0] / ours[0]))
    if reloaded is not None:
        print("\nreloads of the holder's keepalived at advert_int 0.1, both host cores busy, every other one "
              "with its unicast peers changed: the VIP moved after {} of {}{}".format(
                  len(reloaded), args.reloads, " (reloads {})".format(reloaded) if reloaded else ""))
    if soaked is not None:
        changes, requests, bad = soaked
        print("\nsoak: {:.0f} s at 100 requests/s through the VIP, one host core busy: {} VIP holder change(s), "
              "{} of {} requests failed".format(args.soak, len(changes), bad, requests))
        for change in changes:
            print("  at {} s: {} -> {}".format(*change))


if __name__ == "__main__":
    main()
