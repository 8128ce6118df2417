"""
The loop at fleet size (lab/fleet.py): SITES sites of three controllers, each a real salt-minion
with the real backend beacon and a real HAProxy, on loopback; one master, then two (hot-hot).

Measured, crash -> drained on every HAProxy of site 1 (a stand-in nova SIGKILLed, the HAProxy
admin sockets polled directly), p50/p95 over N runs each:

  one site      site 1 alone: every other site's minions, HAProxies and APIs stopped (SIGSTOP);
  fleet         every site heartbeating, and faults elsewhere at RATE per second (a random
                backend of another site killed, revived once out of the cooldown), for each RATE given;
  same load     (--same-load) site 1 alone again, the host kept as busy (its runnable processes
                and CPU) as in the busiest fleet row by processes doing nothing else;
  two masters   the same at the first RATE with both masters running the loop; after half the
                runs the first master is SIGKILLed and the rest run on the second.

Also: beacon events per second reaching the master, and the master's CPU (every process of
it) per beacon event, in the fleet phase. At the end every fault injected (at site 1 and
elsewhere) is checked against the shared records: drained exactly once (none left
unhandled, none done twice).

Usage (root, scripts/setup.sh done; the lab need not run):
    .venv/bin/python bench/fleet.py [--sites 10] [--runs 20] [--rates 1,2] [--no-two-masters]
        [--two-masters-only] [--same-load] [--master-alive SECONDS] [--transport zeromq|tcp] [--workers N] [--watch S]
        [--others-nice N]
"""

import argparse
import collections
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab import fleet as fleet_lib  # noqa: E402
from lab import labctl  # noqa: E402

DRAIN_CAP = 30.0
HZ = os.sysconf("SC_CLK_TCK")


def p95(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


# Processes whose reaped children's CPU is not theirs: this bench (it reaps the stand-ins it
# kills, whose whole lifetime's CPU would land on it; they are counted as stand-ins while they
# run) and PID 1 (it reaps the orphans of a killed master and of daemonized processes).
# Before 0.7.25 both were counted with their children: up to a core of "the rest" in the
# fault rows was the stand-ins' CPU a second time.
OWN_TIME_ONLY = (os.getpid(), 1)


def _cpu_of(pid):
    """utime+stime of process ``pid`` in seconds, with its reaped children's (a minion's job
    processes are its own work) except for :data:`OWN_TIME_ONLY`; None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:13 if pid in OWN_TIME_ONLY else 15]) / HZ
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pids):
    """utime+stime (and reaped children's) of ``pids`` in seconds."""
    return sum(_cpu_of(pid) or 0 for pid in pids)


class Faults:
    """Every fault injected: (site index, controller, crash epoch, revive epoch or None)."""

    def __init__(self):
        self.done, self.lock = [], threading.Lock()

    def add(self, index, cid, crashed, revived):
        with self.lock:
            self.done.append((index, cid, crashed, revived))


def ready_for_fault(fleet, index, cid):
    """True when every backend of site ``index`` is ready everywhere in the records and
    ``cid``'s last action is out of the cooldown (a fault now is acted on, not suppressed)."""
    records = fleet.records(index)["backends"]
    now = time.time()
    for other, _ in fleet_lib.controllers(index):
        record = records.get("nova/" + other) or {}
        if record.get("state") == "drain":
            return False
    last = (records.get("nova/" + cid) or {}).get("time", 0)
    return now - last > fleet_lib.COOLDOWN + 0.5


def background(fleet, rate, stop, faults, exclude=1):
    """Inject ``rate`` faults per second at sites other than ``exclude`` until ``stop`` (none
    with ``rate`` 0: the other sites only heartbeat)."""
    if rate <= 0:
        stop.wait()
        return
    busy = {}
    lock = threading.Lock()

    def one(index, cid):
        crashed = time.time()
        fleet.crash(cid)
        time.sleep(fleet_lib.COOLDOWN + 1.0)  # revived out of the cooldown (see measure)
        fleet.revive(cid)
        faults.add(index, cid, crashed, time.time())
        with lock:
            busy[index] = time.time() + 3.0  # its restore: rise 2 probes and one round

    while not stop.is_set():
        started = time.monotonic()
        with lock:
            free = [i for i in range(1, fleet.sites + 1) if i != exclude and busy.get(i, 0) < time.time()]
        random.shuffle(free)
        for index in free:
            cid = random.choice(fleet_lib.controllers(index))[0]
            if ready_for_fault(fleet, index, cid):
                with lock:
                    busy[index] = float("inf")
                threading.Thread(target=one, args=(index, cid), daemon=True).start()
                break
        stop.wait(max(0.0, 1.0 / rate - (time.monotonic() - started)))


def drain_timing(fleet, cid, crashed, wait=10.0):
    """The ``timing`` of the loop's drain of ``cid`` decided after ``crashed`` (epoch), waited
    for up to ``wait`` seconds (a round writes it once its drain publish has returned); None
    when there is none."""
    deadline = time.monotonic() + wait
    while True:
        drain = [d for d in fleet.records(1)["decisions"] if d["what"] == "drain" and d.get("backend") == cid and d["time"] >= crashed]
        if drain and drain[-1].get("timing") or time.monotonic() > deadline:
            return drain[-1].get("timing") if drain else None
        time.sleep(0.2)


SLOW = 2.0  # seconds: a run this slow prints every decision of site 1 around it


def slow_run_account(fleet, crashed, took):
    """Print every decision recorded for site 1 from 2 s before the crash to 1 s after its
    drain (or the cap): what the loop did meanwhile, for a run far slower than the others."""
    until = crashed + (took if took is not None else DRAIN_CAP) + 1
    for d in fleet.records(1)["decisions"]:
        if crashed - 2 <= d["time"] <= until:
            print("      +{:6.2f} s {} {} by {} (reported by {}) {} {}".format(
                d["time"] - crashed, d["what"], d.get("backend"), d.get("decided_by"), d.get("reported_by"),
                d.get("timing") or "", (d.get("why") or "")[:60]), flush=True)


def measure(fleet, runs, faults, label, timings=None):
    """``runs`` crashes at site 1 (its three backends in turn): seconds to drained everywhere.
    The loop's ``timing`` of each drain is appended to ``timings`` (when given)."""
    times = []
    ctrls = [cid for cid, _ in fleet_lib.controllers(1)]
    for run in range(runs):
        cid = ctrls[run % 3]
        labctl.wait_for(lambda: ready_for_fault(fleet, 1, cid), 60, "site 1 ready for the next fault")
        labctl.wait_for(lambda: set(fleet.admin_state(cid).values()) == {"ready"}, 60, "nova/%s ready everywhere" % cid)
        time.sleep(random.uniform(0, 1))  # a random phase of the beacon's tick
        crashed = time.time()
        start = time.monotonic()
        fleet.crash(cid)
        took = None
        while time.monotonic() - start < DRAIN_CAP:
            states = fleet.admin_state(cid)
            if len(states) == 3 and set(states.values()) == {"drain"}:
                took = time.monotonic() - start
                break
            time.sleep(0.01)
        # Revived once out of the cooldown, so its recovery report restores it at once (one
        # inside the cooldown is suppressed and waits for the next heartbeat, 15 s).
        time.sleep(max(0.0, crashed + fleet_lib.COOLDOWN + 0.5 - time.time()))
        fleet.revive(cid)
        faults.add(1, cid, crashed, time.time())
        times.append(took if took is not None else DRAIN_CAP)
        timing = drain_timing(fleet, cid, crashed)
        if timings is not None and timing:
            timings.append(timing)
        if took is None or took > SLOW:
            slow_run_account(fleet, crashed, took)
        print("  {} run {:2d}/{}: {} {}  {}".format(label, run + 1, runs, cid, "{:.3f} s".format(took) if took else "NOT drained in %d s" % DRAIN_CAP,
                                                  timing or ""), flush=True)
    return times


class EventCount:
    """Beacon events of the fleet reaching master ``number``'s bus, counted in a thread."""

    def __init__(self, number):
        import salt.config
        import salt.utils.event

        opts = salt.config.master_config(os.path.join(fleet_lib.master_dir(number), "etc", "master"))
        self.bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.bus.subscribe("salt/beacon/")
        self.count, self.stop = 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            event = self.bus.get_event(wait=0.5, full=True)
            if event and event["tag"].startswith("salt/beacon/fleet") and "/openstack_ha_" in event["tag"]:
                self.count += 1

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.bus.destroy()


ROLES = ("site 1's minions", "other minions", "masters", "stand-in APIs", "HAProxies", "the rest")


def _role(pid):
    """Which part of the fleet process ``pid`` is (one of ROLES), from its command line (Salt
    keeps the original command line in front of a process's new title)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ROLES[-1]
    if "salt-minion" in cmd:
        return ROLES[0] if "/%s-c" % fleet_lib.site_id(1) in cmd else ROLES[1]
    if "salt-master" in cmd or fleet_lib.ROOT + "/master" in cmd:
        return ROLES[2]
    if "standin_api.py" in cmd:
        return ROLES[3]
    if cmd.startswith("haproxy "):
        return ROLES[4]
    return ROLES[5]


def cpu_by_pid():
    """{pid: (role, CPU seconds so far)} of every process on the host (its own and its reaped
    children's: a job thread's CPU is its minion's)."""
    seen = {pid: _cpu_of(pid) for pid in (int(e) for e in os.listdir("/proc") if e.isdigit())}
    return {pid: (_role(pid), cpu) for pid, cpu in seen.items() if cpu is not None}


def cpu_shares(before, after, seconds):
    """{role: % of one core} between two :func:`cpu_by_pid` snapshots ``seconds`` apart (a
    process that started in between counts from zero, one that ended in between is lost)."""
    shares = dict.fromkeys(ROLES, 0.0)
    for pid, (role, cpu) in after.items():
        start = before.get(pid)
        shares[role] += cpu - (start[1] if start and start[0] == role else 0.0)
    return {role: 100 * cpu / max(seconds, 1e-6) for role, cpu in shares.items()}


class HostLoad:
    """The whole host's load while it runs: the busy fraction of every core (from /proc/stat's
    cpu line), the mean count of runnable processes (its procs_running, sampled every 0.2 s) and
    the CPU each part of the fleet took (:func:`cpu_shares`)."""

    def __init__(self):
        self.cpu0, self.t0 = cpu_by_pid(), time.monotonic()
        self.busy0, self.total0 = self._jiffies()
        self.samples, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _jiffies():
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:9]]
        return sum(fields) - fields[3] - fields[4], sum(fields)  # minus idle and iowait

    def _run(self):
        while not self.stop.wait(0.2):
            with open("/proc/stat") as fh:
                for line in fh:
                    if line.startswith("procs_running "):
                        self.samples.append(int(line.split()[1]))

    def close(self):
        """Stop; returns (busy fraction 0-1, mean runnable processes, {role: % of a core})."""
        self.stop.set()
        self.thread.join(5)
        busy, total = self._jiffies()
        shares = cpu_shares(self.cpu0, cpu_by_pid(), time.monotonic() - self.t0)
        return (busy - self.busy0) / max(1, total - self.total0), statistics.mean(self.samples or [0]), shares


BURNER = """
import sys, time
duty, limit = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < limit:
    t = time.monotonic()
    while time.monotonic() - t < 0.02 * duty:
        pass
    time.sleep(0.02 * (1 - duty))
"""


def start_burners(count, duty, seconds):
    """``count`` processes each spinning ``duty`` of every 20 ms (0-1); each ends by itself after
    ``seconds``. Returns their Popen objects."""
    return [subprocess.Popen([sys.executable, "-c", BURNER, "%.3f" % duty, str(seconds)]) for _ in range(count)]


def calibrate_burners(runnable, busy, steps=6, seconds=3.0):
    """The burners' (count, duty) that keep the host at about ``runnable`` runnable processes on
    average and at least ``busy`` (0-1) of every core busy: as many burners as runnable
    processes, their duty found by bisection on the runnable count over ``steps`` short trials."""
    count = max(1, min(64, int(round(runnable))))
    low, high = 0.0, 1.0
    for _ in range(steps):
        duty = (low + high) / 2
        burners = start_burners(count, duty, seconds + 5)
        try:
            load = HostLoad()
            time.sleep(seconds)
            got_busy, got_runnable, _ = load.close()
        finally:
            stop_burners(burners)
        print("    calibrating: {} burners at duty {:.3f}: {:.0f} % busy, {:.1f} runnable".format(count, duty, 100 * got_busy, got_runnable),
              flush=True)
        if got_runnable < runnable or got_busy < busy:
            low = duty
        else:
            high = duty
    return count, high


def stop_burners(burners):
    """SIGKILL each burner by its PID and reap it."""
    for proc in burners:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def others_pids(fleet):
    """Every process of sites 2..N (minions, HAProxies, stand-ins, and their children)."""
    others = [cid for cid in fleet.ids() if not fleet_lib.at_site(cid, 1)]
    pids = [fleet.minion_pids[c] for c in others] + fleet.haproxy_pids(others) + [fleet.standin_pids[c] for c in others if c in fleet.standin_pids]
    return [child for pid in pids for child in [pid] + labctl.children(pid)]


def stop_others(fleet, sig):
    """SIGSTOP/SIGCONT every process of sites 2..N (minion, HAProxy, stand-in)."""
    for pid in others_pids(fleet):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def renice_others(fleet, value):
    """Set the nice value of every thread of every process of sites 2..N (a thread's nice value
    is its own: a minion's job and watcher threads too; threads started later inherit their
    starter's). Stand-ins started later get it from ``fleet_lib.OTHERS_NICE``."""
    fleet_lib.OTHERS_NICE[0] = value
    for pid in others_pids(fleet):
        try:
            tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
        except OSError:
            continue
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, value)
            except OSError:
                pass


def load_line(busy, runnable, shares=None):
    line = "    host: {:.0f} % of every core busy, {:.1f} runnable processes on average".format(100 * busy, runnable)
    if shares:
        line += "\n    CPU, % of one core: " + ", ".join("{} {:.1f}".format(role, shares[role]) for role in ROLES)
    return line


PARTS = ("queued", "bus", "turn", "lock", "verify", "record", "publish", "reach", "run", "back")


def parts_line(timings):
    """Where site 1's drains spent their time (the loop's ``timing``, seconds): the median and
    the largest of each part over the row's runs; how many were decided on each kind of
    evidence, and, summed over the rounds that verified although they had a signed report,
    what the reports lacked (``reports_lacking``)."""
    cells = []
    for part in PARTS:
        values = [t[part] for t in timings if isinstance(t.get(part), (int, float))]
        if values:
            cells.append("{} {:.3f}/{:.3f}".format(part, statistics.median(values), max(values)))
    sources = collections.Counter(t.get("evidence", "?") for t in timings)
    evidence = "; evidence: " + ", ".join("{} {}".format(k, v) for k, v in sorted(sources.items())) if sources else ""
    lacking = collections.Counter()
    for t in timings:
        lacking.update({reason: count for reason, count in (t.get("reports_lacking") or {}).items() if reason not in ("quorum", "fresh")})
    if lacking:
        evidence += " (reports lacking: " + ", ".join("{} {}".format(k, v) for k, v in sorted(lacking.items())) + ")"
    return "    drain timing, median/max s: " + (", ".join(cells) if cells else "none recorded") + evidence


def row(label, times):
    return "{:<44} p50 {:6.3f} s   p95 {:6.3f} s   ({} runs)".format(label, statistics.median(times), p95(times), len(times))


def check_faults(fleet, faults):
    """Every fault: exactly one drain of its backend between its crash and its revival + 5 s."""
    unhandled, twice = [], []
    first = min([f[2] for f in faults.done] or [0])
    for index, cid, crashed, revived in faults.done:
        # Its window ends 5 s after its revival, or at the next crash of the same backend (whose
        # drain is that fault's own).
        later = [f[2] for f in faults.done if f[0] == index and f[1] == cid and f[2] > crashed]
        until = min([(revived or crashed) + 5] + later)
        drains = [d for d in fleet.records(index)["decisions"] if d["what"] == "drain" and d.get("backend") == cid
                  and crashed <= d["time"] < until]
        if not drains:
            unhandled.append((cid, "crashed at +{:.1f} s".format(crashed - first), [(d["what"], round(d["time"] - first, 1), (d.get("why") or "")[:50])
                                                                               for d in fleet.records(index)["decisions"]
                                                                               if abs(d["time"] - crashed) < 15 and d.get("backend") in (cid, None)]))
        elif len(drains) > 1:
            twice.append((cid, "crashed at +{:.1f} s, revived at +{:.1f} s".format(crashed - first, (revived or crashed) - first),
                          [(d["what"], d.get("master"), round(d["time"] - first, 2), (d.get("why") or "")[:40]) for d in fleet.records(index)["decisions"]
                           if d.get("backend") == cid and crashed - 1 <= d["time"] <= (revived or crashed) + 5]))
    return unhandled, twice


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rates", default="0,1,2", help="background faults per second, comma-separated (0: heartbeats only)")
    parser.add_argument("--no-two-masters", action="store_true")
    parser.add_argument("--transport", choices=("zeromq", "tcp"), default="zeromq",
                        help="Salt's transport (tcp: a job reaches only the minions it names)")
    parser.add_argument("--master-alive", type=int, default=0,
                        help="the minions' master_alive_interval in seconds (0: Salt's default, no check)")
    parser.add_argument("--two-masters-only", action="store_true", help="skip the one-site and fleet rows")
    parser.add_argument("--workers", type=int, default=0, help="the loop engine's workers (0: master.d's)")
    parser.add_argument("--watch", type=float, default=None,
                        help="the backend beacon's watcher round in seconds (default: the project's; 0: the tick alone)")
    parser.add_argument("--others-nice", type=int, default=0,
                        help="nice value of sites 2..N's processes in the fleet rows (19: as if each site had hosts of its "
                             "own, the master's share left as it is; 0: every process equal)")
    parser.add_argument("--same-load", action="store_true",
                        help="add a row: site 1 alone with the host kept as busy as the busiest fleet row (synthetic load)")
    args = parser.parse_args()
    fleet_lib.TRANSPORT[0] = args.transport
    if args.master_alive:
        fleet_lib.MINION_EXTRA["master_alive_interval"] = args.master_alive
    if args.workers:
        fleet_lib.LOOP_EXTRA["workers"] = args.workers
    fleet_lib.WATCH[0] = args.watch

    rates = [float(r) for r in args.rates.split(",")]
    fleet = fleet_lib.Fleet(args.sites, masters=1)
    print("transport: {}, master_alive_interval: {}, loop workers: {}, watcher: {}".format(
        args.transport, args.master_alive, args.workers or "master.d's", fleet_lib.watch_round() or "off (the tick alone)"),
          flush=True)

    faults = Faults()
    rows, loads = [], {}
    try:
        fleet.up()
        time.sleep(30)  # the start-up storm of 30 minions settles; the beacons tick
        if not args.two_masters_only:
            print("one site (sites 2..{} stopped)".format(args.sites), flush=True)
            stop_others(fleet, signal.SIGSTOP)
            load, timings = HostLoad(), []
            one = measure(fleet, args.runs, faults, "one site", timings)
            loads["one"] = load.close()
            stop_others(fleet, signal.SIGCONT)
            rows.append(row("one site alone", one))
            rows.append(load_line(*loads["one"]))
            rows.append(parts_line(timings))
            time.sleep(5)
        if args.others_nice:
            renice_others(fleet, args.others_nice)
        niced = " (others at nice {})".format(args.others_nice) if args.others_nice else ""
        for rate in [] if args.two_masters_only else rates:
            print("fleet: {} sites, {} fault(s)/s elsewhere{}".format(args.sites, rate, niced), flush=True)
            stop, events = threading.Event(), EventCount(1)
            bg = threading.Thread(target=background, args=(fleet, rate, stop, faults), daemon=True)
            cpu0, t0, injected0 = cpu_seconds(fleet.find_master_pids(1)), time.monotonic(), len(faults.done)
            load, timings = HostLoad(), []
            bg.start()
            times = measure(fleet, args.runs, faults, "fleet %g/s" % rate, timings)
            stop.set()
            bg.join(30)
            loads[rate] = load.close()
            elapsed, cpu = time.monotonic() - t0, cpu_seconds(fleet.find_master_pids(1)) - cpu0
            events.close()
            rows.append(row("{} sites, {:g} fault/s elsewhere{}".format(args.sites, rate, niced), times))
            rows.append("    {:.1f} beacon events/s at the master, {:.1f} faults/s injected, master CPU {:.1f} % of a core, "
                        "{:.2f} ms CPU per event ({} / one site p95: {:.2f})".format(
                            events.count / elapsed, (len(faults.done) - injected0) / elapsed, 100 * cpu / elapsed,
                            1000 * cpu / max(1, events.count), "ratio", p95(times) / p95(one)))
            rows.append(load_line(*loads[rate]))
            rows.append(parts_line(timings))
            time.sleep(fleet_lib.COOLDOWN + 2)
        if args.others_nice:
            renice_others(fleet, 0)
        busiest = max((r for r in rates if r > 0 and r in loads), default=None)
        if args.same_load and busiest is not None and "one" in loads:
            # Site 1 alone again, the host kept as busy as the busiest fleet row kept it by
            # processes that do nothing else: what the loop's latency is at that load when no
            # other site sends it anything (the machine's share of the fleet row's slowdown).
            print("one site, the host as loaded as at {:g} fault/s ({:.0f} % busy, {:.1f} runnable processes; synthetic)".format(
                busiest, 100 * loads[busiest][0], loads[busiest][1]), flush=True)
            stop_others(fleet, signal.SIGSTOP)
            burners = []
            try:
                count, duty = calibrate_burners(loads[busiest][1], loads[busiest][0])
                burners = start_burners(count, duty, 60 * args.runs)
                load = HostLoad()
                same = measure(fleet, args.runs, faults, "one site, loaded")
                same_load = load.close()
            finally:
                stop_burners(burners)
                stop_others(fleet, signal.SIGCONT)
            rows.append(row("one site, host loaded as at {:g} fault/s".format(busiest), same))
            rows.append(load_line(*same_load) + " (p95 / one site alone: {:.2f})".format(p95(same) / p95(one)))
            time.sleep(5)
        if not args.no_two_masters:
            print("two masters: starting the second, every minion reconnected to both", flush=True)
            fleet.start_master(2)
            fleet.restart_minions(2)
            time.sleep(20)  # every beacon ticking again, its first heartbeat at both masters
            if args.others_nice:
                # The restarted minions run at nice 0 again: the rows compare with the fleet's.
                renice_others(fleet, args.others_nice)
            stop = threading.Event()
            two_rate = next((r for r in rates if r > 0), 1.0)
            bg = threading.Thread(target=background, args=(fleet, two_rate, stop, faults), daemon=True)
            bg.start()
            half = max(1, args.runs // 2)
            load, both_timings = HostLoad(), []
            both = measure(fleet, half, faults, "two masters", both_timings)
            both_load = load.close()
            print("  SIGKILL to master 1", flush=True)
            fleet.kill_master(1)
            load, after_timings = HostLoad(), []
            after = measure(fleet, args.runs - half, faults, "master 1 killed", after_timings)
            after_load = load.close()
            stop.set()
            bg.join(30)
            if args.others_nice:
                renice_others(fleet, 0)
            rows.append(row("two masters, {:g} fault/s elsewhere{}".format(two_rate, niced), both))
            rows.append(load_line(*both_load))
            rows.append(parts_line(both_timings))
            rows.append(row("  after master 1 was SIGKILLed", after))
            rows.append(load_line(*after_load))
            rows.append(parts_line(after_timings))
            time.sleep(8)  # the last faults' restores
        unhandled, twice = check_faults(fleet, faults)
        rows.append("faults injected: {}; left unhandled: {}; drained twice: {}".format(len(faults.done), len(unhandled), len(twice)))
        for item in unhandled[:5] + twice[:5]:
            rows.append("    " + repr(item))
    finally:
        print("\n".join([""] + rows), flush=True)
        fleet_lib.down()


if __name__ == "__main__":
    main()
