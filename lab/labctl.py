"""
The openstack_ha lab: three controllers on one machine.

Each controller is a network namespace plus its own mount and UTS namespaces: /etc, /var/lib,
/var/log and /var/cache are overlays of the host's (so installed packages are there, but every
write stays with that controller), /run is a fresh tmpfs, and the hostname is its own. The three
are joined by the bridge ``ohabr0``; the salt-master runs on the host on the bridge address,
with this repository as file_roots and pillar_roots, and one salt-minion runs in each
controller. A stand-in HTTP API per service per controller answers the health checks of the
OpenStack services that are not installed.

Usage: labctl.py up | keystone | master2 up|down | settle | status | shell CTRL [CMD...] | salt ARGS... | run ARGS... | down

``master2 up`` starts a second salt-master on the bridge (hot-hot multi-master: both run the
loop, on the same records in the lab's redis) and reconnects every minion to both; ``master2
down`` goes back to one.

``keystone`` (after ``state.apply openstack_ha``: it needs the Galera cluster) replaces the
Keystone stand-ins with a real Keystone on every controller (see lab/keystone.py).

Everything it creates is named ``oha-*`` / ``ohabr0`` or lives under ``/srv/openstack-ha-lab``,
so ``down`` removes it even after a crash of an earlier run.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

# The lab's daemons run as on a real controller, with Python caching their modules' bytecode.
# Salt 3008 loads its modules afresh for every job; with PYTHONDONTWRITEBYTECODE inherited from
# the caller's environment (set on some CI machines) it compiled openstack_ha's from source
# each time, a third of a job's CPU on the controller.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
STATE = "/srv/openstack-ha-lab"
NS_DIR = os.path.join(STATE, "ns")
MASTER_DIR = os.path.join(STATE, "master")
BRIDGE = "ohabr0"
BRIDGE_ADDR = "10.213.0.1"
PREFIX = 24
CONTROLLERS = [("lab-ctrl%d" % i, "10.213.0.%d" % (10 + i)) for i in (1, 2, 3)]
# The lab is dual-stack: a ULA network beside the IPv4 one, on the bridge and in every
# controller (added without duplicate address detection, so they are usable at once).
BRIDGE_ADDR6 = "fd00:213::1"
PREFIX6 = 64
# A fourth controller, started only on demand (add_spare): the one a replacement brings in.
SPARE = ("lab-ctrl4", "10.213.0.14")
ADDRESSES6 = {name: "fd00:213::%d" % (10 + i) for i, (name, _) in enumerate(CONTROLLERS + [SPARE], start=1)}
# The one file root is states/ (the custom modules are linked into it): the pillar, the tests,
# the lab and the virtualenv are never served to minions.
OVERLAID = ("etc", "usr/local", "var/lib", "var/log", "var/cache")
# A second pillar root searched before the repository's: a test puts a changed copy of a site
# file here (the first root holding a file wins) and removes it afterwards.
PILLAR_OVERRIDES = os.path.join(STATE, "pillar")
# The lab Keystone's admin account: on the master only (master config), like a real site's.
KEYSTONE_ADMIN = {"username": "admin", "password": "lab-keystone-admin-secret", "project": "admin"}


class LabError(Exception):
    """A lab step failed; the message says which and why."""


def run(cmd, check=True, capture=True, timeout=120, input_text=None):
    """Run ``cmd`` (a list); return its CompletedProcess. Raises LabError naming the command."""
    try:
        proc = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, input=input_text)
    except subprocess.TimeoutExpired:
        raise LabError("timed out after {}s: {}".format(timeout, " ".join(cmd))) from None
    if check and proc.returncode != 0:
        raise LabError("failed ({}): {}\n{}".format(proc.returncode, " ".join(cmd), (proc.stderr or proc.stdout or "").strip()))
    return proc


def step(message):
    print("==> " + message, flush=True)


def netns(name):
    return "oha-" + name.split("-")[-1]


def ns_files(name):
    short = name.split("-")[-1]
    return os.path.join(NS_DIR, short + ".mnt"), os.path.join(NS_DIR, short + ".uts")


def in_ctrl(name, cmd):
    """The command line that runs ``cmd`` inside controller ``name`` (all three namespaces)."""
    mnt, uts = ns_files(name)
    return ["nsenter", "--net=/run/netns/" + netns(name), "--mount=" + mnt, "--uts=" + uts, "--"] + list(cmd)


def ctrl_run(name, cmd, **kwargs):
    return run(in_ctrl(name, cmd), **kwargs)


def alive(pid):
    """True if ``pid`` exists and is not a zombie (PID 1 here reaps late; read /proc, not kill -0)."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return False


def kill_pids(pids, grace=5.0):
    """SIGTERM then, after ``grace`` seconds, SIGKILL each pid; wait (bounded) until all are gone."""
    pids = [p for p in set(pids) if p != os.getpid() and alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return
    if pids:
        raise LabError("processes would not die: {}".format(pids))


def parent_of(pid):
    """The parent PID of ``pid`` (from /proc), or None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid):
    """PIDs of the live processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry) as fh:
                for line in fh:
                    if line.startswith("PPid:"):
                        if int(line.split()[1]) == pid and alive(int(entry)):
                            found.append(int(entry))
                        break
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def ns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_namespaces(paths):
    """PIDs of every process whose net or mount namespace is one of the bind-mounted ``paths``."""
    inodes = {ino for ino in (ns_inode(p) for p in paths) if ino}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for kind in ("net", "mnt"):
            try:
                if os.stat("/proc/%s/ns/%s" % (entry, kind)).st_ino in inodes:
                    found.append(int(entry))
                    break
            except OSError:
                break
    return found


def session_of(pid):
    """The session ID of ``pid`` (0 when it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return 0


def master_pids(directory=None):
    """PIDs of the lab's salt-master processes: those started with the lab's config dir (of the
    second master with ``directory=MASTER2_DIR``), and every process of their session.

    salt-master rewrites its process title, so the whole command line is matched as one string;
    some of its processes (the EventPublisher) keep only their new name. A daemonized master's
    processes share one session (saved in run/session at its start), which a process outliving
    a SIGKILLed parent keeps: a process of that session with a file under the master's directory
    open (its log) is one of them too.
    """
    root = directory or MASTER_DIR
    marker = "salt-master -c " + os.path.join(root, "etc") + " "
    found, sessions = [], {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry))
            sessions.setdefault(session_of(int(entry)), []).append(int(entry))
    wanted = {session_of(pid) for pid in found}
    try:
        with open(os.path.join(root, "run", "session")) as fh:
            wanted.add(int(fh.read().strip()))
    except (OSError, ValueError):
        pass
    wanted -= {0, 1, os.getsid(0)}  # never this process's own session
    kin = [pid for sid in wanted for pid in sessions.get(sid, []) if pid not in found and holds_file_under(pid, root)]
    return sorted(found + kin)


def holds_file_under(pid, root):
    """True when process ``pid`` has a file under ``root`` open (a master's log, say)."""
    prefix = root.rstrip("/") + "/"
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith(prefix):
                return True
        except OSError:
            continue
    return False


def link_exists(name):
    return run(["ip", "link", "show", name], check=False).returncode == 0


def netns_exists(name):
    return name in run(["ip", "netns", "list"]).stdout.split()


def is_mountpoint(path):
    return run(["mountpoint", "-q", path], check=False).returncode == 0


# ---------------------------------------------------------------------------------------- up


def project_master_config():
    """``master.d/openstack_ha.conf``, the file operators copy, with its checkout path
    (/srv/openstack_ha) replaced by this repository: the lab (and CI) run that very file."""
    import yaml

    with open(os.path.join(REPO, "master.d", "openstack_ha.conf")) as fh:
        text = fh.read().replace("/srv/openstack_ha", REPO)
    return yaml.safe_load(text)


def master_config(second=False):
    """The lab master's configuration: the project's master.d file, plus where the lab keeps
    its files, the override pillar root (searched first) and the lab's Keystone account. The
    records and the per-site lock are in the lab's redis (REDIS_*), as two masters need them;
    ``second``: the second master's (MASTER2_*), on the same store."""
    config = project_master_config()
    root, address, metrics = (MASTER2_DIR, MASTER2_ADDR, LOOP_METRICS_PORT + 1) if second else (MASTER_DIR, BRIDGE_ADDR, LOOP_METRICS_PORT)
    config.update({
        "id": "lab-master-2" if second else "lab-master",
        "root_dir": root,
        "interface": address,
        "user": "root",
        "log_file": os.path.join(root, "log", "master"),
        "log_level_logfile": "info",
        "pki_dir": os.path.join(root, "pki"),
        "cachedir": os.path.join(root, "cache"),
        "sock_dir": os.path.join(root, "run", "sock"),
        "pidfile": os.path.join(root, "run", "salt-master.pid"),
        "openstack_ha_cache": "redis",
        "cache.redis.host": REDIS_HOST,
        "cache.redis.port": REDIS_PORT,
        "pillar_roots": {"base": [PILLAR_OVERRIDES, os.path.join(REPO, "lab", "pillar")] + config["pillar_roots"]["base"]},
        "worker_threads": 4,
        "timeout": 15,
        "gather_job_timeout": 15,
        "state_output": "mixed",
        "openstack_ha_keystone": {"lab": dict(KEYSTONE_ADMIN)},
    })
    # The loop's metrics and its alerts to the lab's Alertmanager (repeated every 10 s here).
    for engine in config["engines"]:
        if "openstack_ha_loop" in engine:
            engine["openstack_ha_loop"] = dict(engine["openstack_ha_loop"] or {}, metrics="{}:{}".format(address, metrics),
                                               alertmanager=ALERTMANAGER_URL, alert_repeat=10, status_interval=10)
    return config


# ------------------------------------------------------------------------------ alertmanager

LOOP_METRICS_PORT = 9387
ALERTMANAGER_PORT = 9093
ALERTMANAGER_URL = "http://{}:{}".format(BRIDGE_ADDR, ALERTMANAGER_PORT)
ALERTMANAGER_DIR = os.path.join(STATE, "alertmanager")
ALERTMANAGER_CONFIG = """# The lab's Alertmanager: holds the alerts, sends them nowhere.
route:
  receiver: lab
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: lab
"""


PROMETHEUS_PORT = 9090
PROMETHEUS_URL = "http://{}:{}".format(BRIDGE_ADDR, PROMETHEUS_PORT)
PROMETHEUS_DIR = os.path.join(STATE, "prometheus")


def prometheus_config():
    """The lab's Prometheus: every exporter of the three controllers and the loop's metrics,
    the repository's alert rules, alerts to the lab's Alertmanager; 5 s intervals (a lab: quicker
    than a site's 15-30 s, not so quick that the scrapes crowd a 2-core machine)."""
    def targets(port):
        return [{"targets": ["{}:{}".format(address, port)], "labels": {"controller": name}} for name, address in CONTROLLERS]
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s", "scrape_timeout": "4s"},
        "rule_files": [os.path.join(REPO, "monitoring", "openstack_ha.rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["{}:{}".format(BRIDGE_ADDR, ALERTMANAGER_PORT)]}]}]},
        "scrape_configs": [
            {"job_name": "haproxy", "static_configs": targets(8405)},
            {"job_name": "mysqld", "static_configs": targets(9104)},
            {"job_name": "rabbitmq", "static_configs": targets(15692)},
            {"job_name": "openstack_ha_loop", "static_configs": [{"targets": ["{}:{}".format(BRIDGE_ADDR, LOOP_METRICS_PORT)]}]},
        ],
    }


def _pid_in(directory):
    try:
        with open(os.path.join(directory, "pid")) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return []
    return [pid] if alive(pid) else []


def prometheus_pids():
    """The lab Prometheus's PID (from its pid file), if it runs."""
    return _pid_in(PROMETHEUS_DIR)


def _start_daemon(directory, argv, ready_url, what):
    """Start ``argv`` in its own session, logging to ``directory``/log, its PID in
    ``directory``/pid; wait (bounded) until ``ready_url`` answers 200."""
    log = open(os.path.join(directory, "log"), "a")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    with open(os.path.join(directory, "pid"), "w") as fh:
        fh.write(str(proc.pid))

    def ready():
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False
    wait_for(ready, 60, what)


def start_prometheus():
    """Start Debian's Prometheus on the bridge address, once. Returns True when started."""
    if prometheus_pids():
        return False
    os.makedirs(os.path.join(PROMETHEUS_DIR, "data"), exist_ok=True)
    with open(os.path.join(PROMETHEUS_DIR, "prometheus.yml"), "w") as fh:
        json.dump(prometheus_config(), fh, indent=1)  # JSON is YAML
    _start_daemon(PROMETHEUS_DIR, ["prometheus", "--config.file=" + os.path.join(PROMETHEUS_DIR, "prometheus.yml"),
                                   "--storage.tsdb.path=" + os.path.join(PROMETHEUS_DIR, "data"),
                                   "--web.listen-address={}:{}".format(BRIDGE_ADDR, PROMETHEUS_PORT)],
                  PROMETHEUS_URL + "/-/ready", "the lab's Prometheus")
    return True


def alertmanager_pids():
    """The lab Alertmanager's PID (from its pid file), if it runs."""
    return _pid_in(ALERTMANAGER_DIR)


def start_alertmanager():
    """Start Debian's Alertmanager on the bridge address (no clustering), once. Returns True
    when it was started."""
    if alertmanager_pids():
        return False
    os.makedirs(os.path.join(ALERTMANAGER_DIR, "data"), exist_ok=True)
    with open(os.path.join(ALERTMANAGER_DIR, "alertmanager.yml"), "w") as fh:
        fh.write(ALERTMANAGER_CONFIG)
    _start_daemon(ALERTMANAGER_DIR, ["prometheus-alertmanager", "--config.file=" + os.path.join(ALERTMANAGER_DIR, "alertmanager.yml"),
                                     "--storage.path=" + os.path.join(ALERTMANAGER_DIR, "data"), "--cluster.listen-address=",
                                     "--web.listen-address={}:{}".format(BRIDGE_ADDR, ALERTMANAGER_PORT)],
                  ALERTMANAGER_URL + "/-/ready", "the lab's Alertmanager")
    return True


def start_master(second=False):
    """Start the lab's salt-master (the second one with ``second``), once. True when started."""
    root = MASTER2_DIR if second else MASTER_DIR
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    for sub in ("log", "run/sock", "cache", "pki"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.makedirs(PILLAR_OVERRIDES, exist_ok=True)
    with open(os.path.join(etc, "master"), "w") as fh:
        json.dump(master_config(second), fh, indent=1)  # JSON is YAML
    if master_pids(root):
        return False
    sock = os.path.join(root, "run", "sock", "master_event_pub.ipc")
    if os.path.exists(sock):
        os.unlink(sock)
    run([os.path.join(VENV_BIN, "salt-master"), "-c", etc, "-d"], timeout=60)
    wait_for(lambda: os.path.exists(sock), 30, "the salt-master's event socket")
    started = [session_of(pid) for pid in master_pids(root)]
    if started and started[0] not in (0, 1, os.getsid(0)):
        with open(os.path.join(root, "run", "session"), "w") as fh:
            fh.write(str(started[0]))
    return True


# ----------------------------------------------------------------------------- the lab's syslog

SYSLOG_DIR = os.path.join(STATE, "syslog")
SYSLOG_LOG = os.path.join(SYSLOG_DIR, "log")


def syslog_pids():
    """The lab's syslog catcher's PID (from its pid file), if it runs."""
    return _pid_in(SYSLOG_DIR)


def start_syslog():
    """Catch /dev/log into SYSLOG_LOG (lab/syslog_catcher.py: each line names the controller that
    sent it), where no syslog runs on the host. Returns "started", "running" or why not."""
    if syslog_pids():
        return "running"
    if os.path.lexists("/dev/log"):
        return "not started: the host's own syslog has /dev/log"
    os.makedirs(SYSLOG_DIR, exist_ok=True)
    pidfile = os.path.join(SYSLOG_DIR, "pid")
    # In a network namespace of its own, whose datagram queue is long: a Unix datagram socket's
    # queue (net.unix.max_dgram_qlen, 10 on this host) would otherwise fill in a burst of HAProxy's
    # request logs and block keepalived's next syslog() until the catcher drained it.
    script = "echo 4096 > /proc/sys/net/unix/max_dgram_qlen && exec \"$@\""
    with open(os.path.join(SYSLOG_DIR, "errors"), "a") as errors:  # the child keeps its own copy
        subprocess.Popen(["unshare", "--net", "sh", "-c", script, "catcher", sys.executable,
                          os.path.join(REPO, "lab", "syslog_catcher.py"), SYSLOG_LOG, pidfile],
                         stdout=errors, stderr=errors, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: os.path.exists("/dev/log") and syslog_pids(), 20, "the lab's syslog catcher on /dev/log")
    return "started"


def syslog_tail(lines=60, match=None):
    """The last ``lines`` lines of the lab's syslog (those containing ``match`` when given);
    "" when there is none."""
    try:
        with open(SYSLOG_LOG, errors="replace") as fh:
            fh.seek(max(0, os.path.getsize(SYSLOG_LOG) - 2 * 1024 * 1024))
            kept = [line for line in fh if match is None or match in line]
    except OSError:
        return ""
    return "".join(kept[-lines:])


# --------------------------------------------------------------------- the shared record store

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6391
REDIS_DIR = os.path.join(STATE, "redis")


def redis_records(port, site, host="127.0.0.1"):
    """``site``'s records as the masters sharing the redis at ``host:port`` keep them (Salt's
    redis cache layout), with the decision log (a key of its own since 0.7.24; inside the
    records before) as ``decisions``."""
    import redis
    import salt.payload

    raw, log = redis.Redis(host=host, port=port).hmget("$KEYS_openstack_ha/%s/" % site, ["records", "decisions"])
    data = salt.payload.loads(raw) if raw else {"backends": {}}
    data["decisions"] = salt.payload.loads(log) if log else data.get("decisions") or []
    return data


def redis_pids():
    """The lab redis-server's PID (from its pid file), if it runs."""
    return _pid_in(REDIS_DIR)


def start_redis():
    """Start Debian's redis-server on loopback (no persistence): the masters' shared records
    and lock. Once; True when started."""
    if redis_pids():
        return False
    os.makedirs(REDIS_DIR, exist_ok=True)
    log = open(os.path.join(REDIS_DIR, "log"), "a")
    proc = subprocess.Popen(["redis-server", "--bind", REDIS_HOST, "--port", str(REDIS_PORT), "--save", "",
                             "--appendonly", "no", "--dir", REDIS_DIR], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    with open(os.path.join(REDIS_DIR, "pid"), "w") as fh:
        fh.write(str(proc.pid))

    def ready():
        import socket

        try:
            with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False
    wait_for(ready, 30, "the lab's redis-server")
    return True


# ------------------------------------------------------------------------------ second master

MASTER2_DIR = os.path.join(STATE, "master2")
MASTER2_ADDR = "10.213.0.2"


def process_tree(pid):
    """``pid`` and every descendant of it alive now (read from /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def minion_tree(name):
    """PIDs of controller ``name``'s salt-minion and its descendants."""
    pid = ctrl_run(name, ["cat", "/run/salt-minion.pid"], check=False).stdout.strip()
    if not (pid.isdigit() and alive(int(pid))):
        return []
    return process_tree(int(pid))


def haproxy_command(path, command, timeout=1.0):
    """Send one command to the HAProxy admin socket at ``path``; its whole answer (str).
    Raises OSError when the socket does not answer."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def restart_minions(names=None):
    """Restart the controllers' salt-minions with their current config (minion_config)."""
    names = names or [n for n, _ in CONTROLLERS]
    for name in names:
        kill_pids(minion_tree(name))
    for name in names:
        start_minion(name)


def masters_answer(names, directories):
    """True when every controller in ``names`` answers test.ping from every master."""
    for directory in directories:
        out = run([os.path.join(VENV_BIN, "salt"), "-c", os.path.join(directory, "etc"), "--out=json", "--static",
                   "-t", "5", "-L", ",".join(names), "test.ping"], check=False).stdout
        try:
            if not all(json.loads(out or "{}").get(i) is True for i in names):
                return False
        except ValueError:
            return False
    return True


def start_second_master():
    """Hot-hot multi-master: a second salt-master on the bridge (MASTER2_ADDR) with the first
    one's key pair and accepted minion keys and the same shared records (redis), and every
    controller's minion restarted connected to both. Waits until both masters reach all three."""
    names = [n for n, _ in CONTROLLERS]
    addrs = run(["ip", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if MASTER2_ADDR + "/" not in addrs:
        run(["ip", "addr", "add", "%s/%d" % (MASTER2_ADDR, PREFIX), "dev", BRIDGE])
    if not master_pids(MASTER2_DIR):
        pki = os.path.join(MASTER2_DIR, "pki")
        if os.path.isdir(pki):
            run(["rm", "-rf", "--one-file-system", pki])
        os.makedirs(MASTER2_DIR, exist_ok=True)
        run(["cp", "-a", os.path.join(MASTER_DIR, "pki"), pki])
        # Salt names the key pair after the master's id (master.pem links to it): the same
        # pair, under the second master's name.
        for ext in ("pem", "pub"):
            os.unlink(os.path.join(pki, "master." + ext))
            os.rename(os.path.join(pki, "lab-master." + ext), os.path.join(pki, "lab-master-2." + ext))
    start_master(second=True)
    MULTI_MASTER.add("on")
    restart_minions(names)
    wait_for(lambda: masters_answer(names, [MASTER_DIR, MASTER2_DIR]), 120, "both masters to reach every controller")


def stop_second_master():
    """Back to one master: the minions restarted connected to the first only, the second
    master stopped, its address removed (idempotent)."""
    names = [n for n, _ in CONTROLLERS]
    was = bool(MULTI_MASTER) or any(ctrl_run(n, ["grep", "-q", MASTER2_ADDR, "/etc/salt/minion.d/lab.conf"], check=False).returncode == 0
                                    for n in names if netns_exists(netns(n)))
    MULTI_MASTER.clear()
    if was:
        restart_minions(names)
    kill_pids(master_pids(MASTER2_DIR))
    if link_exists(BRIDGE) and MASTER2_ADDR + "/" in run(["ip", "-o", "addr", "show", "dev", BRIDGE]).stdout:
        run(["ip", "addr", "del", "%s/%d" % (MASTER2_ADDR, PREFIX), "dev", BRIDGE])
    if was:
        wait_for(lambda: masters_answer(names, [MASTER_DIR]), 120, "the master to reach every controller")


# In this process: the minions are (being) configured for both masters.
MULTI_MASTER = set()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise LabError("timed out after {}s waiting for {}".format(timeout, what))


def ensure_bridge():
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if BRIDGE_ADDR + "/" not in addrs:
        run(["ip", "addr", "add", "%s/%d" % (BRIDGE_ADDR, PREFIX), "dev", BRIDGE])
    if BRIDGE_ADDR6 + "/" not in addrs:
        run(["ip", "addr", "add", "%s/%d" % (BRIDGE_ADDR6, PREFIX6), "dev", BRIDGE, "nodad"])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_ns_dir():
    os.makedirs(NS_DIR, exist_ok=True)
    if not is_mountpoint(NS_DIR):
        run(["mount", "--bind", NS_DIR, NS_DIR])
        run(["mount", "--make-private", NS_DIR])


def ensure_network(name, address):
    ns = netns(name)
    host_if = ns + "-h"
    if not netns_exists(ns):
        run(["ip", "netns", "add", ns])
    if not link_exists(host_if):
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", host_if, "master", BRIDGE, "up"])
    nsx = ["ip", "netns", "exec", ns]
    run(nsx + ["ip", "link", "set", "lo", "up"])
    run(nsx + ["ip", "link", "set", "eth0", "up"])
    have = run(nsx + ["ip", "-o", "addr", "show", "dev", "eth0"]).stdout
    if address + "/" not in have:
        run(nsx + ["ip", "addr", "add", "%s/%d" % (address, PREFIX), "dev", "eth0"])
    if ADDRESSES6[name] + "/" not in have:
        run(nsx + ["ip", "addr", "add", "%s/%d" % (ADDRESSES6[name], PREFIX6), "dev", "eth0", "nodad"])


def addresses(name):
    """Controller ``name``'s addresses: its IPv4 one, then its IPv6 one."""
    return [dict(CONTROLLERS)[name], ADDRESSES6[name]]


def state_dir(name):
    """Controller ``name``'s directory on the host: its overlays' upper and work directories
    (``upper/var/log/salt/minion`` is its minion's log, readable after the controller is gone)."""
    return os.path.join(STATE, name.split("-")[-1])


def ensure_filesystems(name):
    """Create the controller's mount+UTS namespaces (once) with its overlays and /run."""
    mnt, uts = ns_files(name)
    if is_mountpoint(mnt) and is_mountpoint(uts):
        return False
    base = state_dir(name)
    script = ["set -e", "hostname " + name, "mount --make-rprivate /"]
    for d in OVERLAID:
        upper, work = os.path.join(base, "upper", d), os.path.join(base, "work", d)
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        script.append("mount -t overlay overlay -o lowerdir=/{d},upperdir={u},workdir={w} /{d}".format(d=d, u=upper, w=work))
    script += [
        "mount -t tmpfs -o mode=0755 tmpfs /run",
        "mkdir -p /run/lock /run/netns /run/haproxy /run/salt",
        "echo '127.0.1.1 {n}' >> /etc/hosts".format(n=name),
        "echo {n} > /etc/hostname".format(n=name),
    ]
    for path in (mnt, uts):
        open(path, "a").close()
    run(["unshare", "--mount=" + mnt, "--uts=" + uts, "--propagation", "private", "sh", "-c", "\n".join(script)])
    return True


def minion_config(name):
    return {
        "id": name,
        # Hot-hot multi-master while the second master runs (start_second_master).
        "master": [BRIDGE_ADDR, MASTER2_ADDR] if MULTI_MASTER else BRIDGE_ADDR,
        "user": "root",
        "log_level_logfile": "info",
        "pidfile": "/run/salt-minion.pid",
        "acceptance_wait_time": 1,
        "random_reauth_delay": 0,
        "recon_default": 200,
        "recon_max": 1000,
        "auth_timeout": 10,
        "loop_interval": 1,
        # A controller cut off (a partition test) notices a dead master connection in ~10 s
        # and reconnects when the link returns, instead of after the kernel's 2 hours.
        "tcp_keepalive": True,
        "tcp_keepalive_idle": 5,
        "tcp_keepalive_cnt": 3,
        "tcp_keepalive_intvl": 2,
        # Jobs as threads, not forked processes: the verify and act calls of the remediation
        # loop answer in tens of milliseconds instead of hundreds (see README, "Latency").
        "multiprocessing": False,
        "startup_states": "",
    }


def start_minion(name):
    ctrl_run(name, ["mkdir", "-p", "/etc/salt/minion.d"])
    ctrl_run(name, ["sh", "-c", "cat > /etc/salt/minion.d/lab.conf"], input_text=json.dumps(minion_config(name), indent=1))
    pid = ctrl_run(name, ["cat", "/run/salt-minion.pid"], check=False).stdout.strip()
    if pid.isdigit() and alive(int(pid)):
        return False
    ctrl_run(name, [os.path.join(VENV_BIN, "salt-minion"), "-d"], timeout=60)
    return True


def lab_services():
    """(service, backend port, check path) for each API in the lab pillar, read with the master's eyes."""
    import yaml

    with open(os.path.join(REPO, "pillar", "openstack_ha", "services.sls")) as fh:
        services = yaml.safe_load(fh)["openstack_ha"]["services"]
    return [(svc, spec.get("backend_port", spec["port"])) for svc, spec in sorted(services.items())]


def start_standins(name, address):
    """Start one stand-in API per service on this controller (skipped where one already runs)."""
    started = 0
    for service, port in lab_services():
        if service == "keystone" and keystone_running(name):
            continue  # the real Keystone (lab/keystone.py) serves here
        pidfile = "/run/standin-%s.pid" % service
        pid = ctrl_run(name, ["cat", pidfile], check=False).stdout.strip()
        if pid.isdigit() and alive(int(pid)):
            continue
        ctrl_run(name, ["sh", "-c", 'nohup "$0" "$@" >/var/log/standin-{s}.log 2>&1 &'.format(s=service),
                        os.path.join(VENV_BIN, "python"), os.path.join(REPO, "lab", "standin_api.py"),
                        "--service", service, "--address", address, "--address", ADDRESSES6[name], "--port", str(port), "--pidfile", pidfile,
                        "--journal", "/var/log/standin-%s-posts.log" % service])
        started += 1
    return started


def keystone_running(name):
    """True when the real Keystone (lab/keystone.py) runs on controller ``name``."""
    pid = ctrl_run(name, ["cat", "/run/keystone.pid"], check=False).stdout.strip()
    return pid.isdigit() and alive(int(pid))


def salt_cmd(tool, *args, timeout=300, check=True):
    cmd = [os.path.join(VENV_BIN, tool), "-c", os.path.join(MASTER_DIR, "etc")] + list(args)
    return run(cmd, timeout=timeout, check=check)


def accept_keys(ids=None):
    ids = ids or [name for name, _ in CONTROLLERS]

    def all_pending_or_accepted():
        keys = json.loads(salt_cmd("salt-key", "-L", "--out=json").stdout)
        known = set(keys.get("minions", [])) | set(keys.get("minions_pre", []))
        return all(i in known for i in ids)

    wait_for(all_pending_or_accepted, 60, "the minions ({}) to present their keys".format(", ".join(ids)))
    for i in ids:
        salt_cmd("salt-key", "-y", "-a", i, check=False)

    def all_answer():
        out = salt_cmd("salt", "--out=json", "--static", "-t", "5", "-L", ",".join(ids), "test.ping", check=False).stdout
        try:
            return all(json.loads(out or "{}").get(i) is True for i in ids)
        except ValueError:
            return False

    wait_for(all_answer, 90, "the minions ({}) to answer test.ping".format(", ".join(ids)))


def up():
    for tool in ("ip", "nsenter", "unshare", "mountpoint"):
        run(["sh", "-c", "command -v " + tool])
    if not os.path.exists(os.path.join(VENV_BIN, "salt-master")):
        raise LabError("no salt in {}: run scripts/setup.sh first".format(VENV_BIN))
    step("bridge {} on {}/{}".format(BRIDGE, BRIDGE_ADDR, PREFIX))
    ensure_bridge()
    ensure_ns_dir()
    for name, address in CONTROLLERS:
        step("controller {} ({}): namespaces, overlays, link".format(name, address))
        ensure_network(name, address)
        ensure_filesystems(name)
    step("syslog (/dev/log) to {}: {}".format(SYSLOG_LOG, start_syslog()))
    step("Alertmanager on {}".format(ALERTMANAGER_URL) + ("" if start_alertmanager() else " (already running)"))
    step("Prometheus on {}".format(PROMETHEUS_URL) + ("" if start_prometheus() else " (already running)"))
    step("redis-server on {}:{} (the masters' shared records)".format(REDIS_HOST, REDIS_PORT) + ("" if start_redis() else " (already running)"))
    step("salt-master on {}".format(BRIDGE_ADDR) + ("" if start_master() else " (already running)"))
    for name, address in CONTROLLERS:
        started = start_minion(name)
        count = start_standins(name, address)
        step("{}: salt-minion {}, {} stand-in APIs started".format(name, "started" if started else "already running", count))
    step("accepting minion keys and waiting for all three to answer")
    accept_keys()
    step("syncing custom modules to the controllers")
    salt_cmd("salt", "lab-ctrl*", "saltutil.sync_all")
    step("lab is up: {}".format(", ".join(n for n, _ in CONTROLLERS)))


# -------------------------------------------------------------------------------------- down


def intruder_pids():
    """The intruder minion's processes (lab/intruder.py), from its pid file."""
    try:
        with open(os.path.join(STATE, "intruder", "minion.pid")) as fh:
            pid = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [pid] + children(pid) if alive(pid) else []


def _remove_namespaces(names):
    """Kill every process of these controllers' namespaces, unmount and delete them."""
    paths = ["/run/netns/" + netns(n) for n in names] + [p for n in names for p in ns_files(n)]
    kill_pids(pids_in_namespaces(paths))
    for name in names:
        for path in ns_files(name):
            if is_mountpoint(path):
                run(["umount", path])
        ns = netns(name)
        if netns_exists(ns):
            run(["ip", "netns", "del", ns])
        if link_exists(ns + "-h"):
            run(["ip", "link", "del", ns + "-h"], check=False)  # may already be gone with its netns


def add_spare():
    """Bring the spare controller (SPARE) up like the others: namespaces, link, minion, its
    key accepted, stand-in APIs, custom modules synced. Not applied: that is the test's."""
    name, address = SPARE
    step("spare controller {} ({}): namespaces, overlays, link".format(name, address))
    ensure_network(name, address)
    ensure_filesystems(name)
    start_minion(name)
    start_standins(name, address)
    accept_keys([name])
    salt_cmd("salt", name, "saltutil.sync_all")
    step("{} is up".format(name))


def remove_spare():
    """Stop and remove the spare controller and its key (idempotent)."""
    _remove_namespaces([SPARE[0]])
    salt_cmd("salt-key", "-y", "-d", SPARE[0], check=False)
    if os.path.isdir(state_dir(SPARE[0])):
        run(["rm", "-rf", "--one-file-system", state_dir(SPARE[0])])


def down():
    """Remove every process, mount, namespace and link of the lab, whatever state it is in."""
    names = [n for n, _ in CONTROLLERS + [SPARE]]
    paths = ["/run/netns/" + netns(n) for n in names] + [p for n in names for p in ns_files(n)]
    pids = (pids_in_namespaces(paths) + master_pids() + master_pids(MASTER2_DIR) + intruder_pids() + alertmanager_pids()
            + prometheus_pids() + redis_pids())
    step("stopping {} lab processes".format(len(pids)))
    kill_pids(pids)
    _remove_namespaces(names)
    kill_pids(syslog_pids())  # last: it catches what the others said as they stopped
    if link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE])
    if os.path.isdir(NS_DIR) and is_mountpoint(NS_DIR):
        run(["umount", NS_DIR])
    if os.path.isdir(STATE):
        run(["rm", "-rf", "--one-file-system", STATE])
    step("lab is down")


# ------------------------------------------------------------------------------------ status


def controller_facts(name):
    """What one controller looks like from the host: its namespace, minion and addresses."""
    facts = {"id": name, "netns": netns_exists(netns(name)), "minion": "-", "addresses": []}
    if not facts["netns"] or not all(is_mountpoint(p) for p in ns_files(name)):
        return facts
    pid = ctrl_run(name, ["cat", "/run/salt-minion.pid"], check=False).stdout.strip()
    facts["minion"] = "running" if pid.isdigit() and alive(int(pid)) else "stopped"
    out = ctrl_run(name, ["ip", "-o", "addr", "show", "dev", "eth0", "scope", "global"], check=False).stdout
    facts["addresses"] = [line.split()[3] for line in out.splitlines()]
    return facts


def status():
    rows = [controller_facts(name) for name, _ in CONTROLLERS]
    print("{:<10} {:<6} {:<8} {}".format("CONTROLLER", "NETNS", "MINION", "ADDRESSES (eth0)"))
    for r in rows:
        print("{:<10} {:<6} {:<8} {}".format(r["id"], "yes" if r["netns"] else "no", r["minion"], " ".join(r["addresses"]) or "-"))
    print("salt-master: {}".format("running" if master_pids() else "stopped"))
    return 0 if all(r["minion"] == "running" for r in rows) and master_pids() else 1


LAB_VIPS = {"public": "10.213.0.100", "public/ipv6": "fd00:213::100", "internal": "10.213.0.101"}


def vip_holders(address):
    """The controllers whose eth0 holds ``address`` now."""
    return [name for name, _ in CONTROLLERS
            if " {}/".format(address) in run(["ip", "-n", netns(name), "-o", "addr", "show", "dev", "eth0"], check=False).stdout]


def settle(timeout=30.0):
    """Wait (bounded) until every lab VIP is held by exactly one controller; print who holds
    each. Returns 0, or 1 when the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        holders = {name: vip_holders(address) for name, address in LAB_VIPS.items()}
        if all(len(who) == 1 for who in holders.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for name, who in sorted(holders.items()):
        step("VIP {} ({}) held by {}".format(name, LAB_VIPS[name], ", ".join(who) or "NOBODY"))
    return 0 if all(len(who) == 1 for who in holders.values()) else 1


# Salt 3008's CLIs leave their own Runner/MasterMinion open at exit and say so on stderr
# ("unclosed Runner ...; call destroy()"): Salt's housekeeping, not the operator's business.
SALT_EXIT_NOISE = re.compile(r"^(\[WARNING \] )?unclosed (Runner|MasterMinion|WheelClient|RunnerClient|LocalClient|SaltEvent)\b")


def salt_cli(cmd):
    """Run a Salt CLI with stdout passed through and stderr without Salt's exit-time noise;
    return its exit code."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if not SALT_EXIT_NOISE.match(line):
            sys.stderr.write(line)
            sys.stderr.flush()
    return proc.wait()


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if os.geteuid() != 0:
        print("labctl: must run as root (namespaces, mounts, links)", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "up":
            up()
        elif command == "down":
            down()
        elif command == "keystone":
            sys.path.insert(0, REPO)
            from lab import keystone_lab

            keystone_lab.deploy()
        elif command == "master2":
            if rest not in (["up"], ["down"]):
                raise LabError("usage: labctl.py master2 up|down")
            start_second_master() if rest == ["up"] else stop_second_master()
        elif command == "settle":
            return settle()
        elif command == "status":
            return status()
        elif command == "shell":
            if not rest:
                raise LabError("usage: labctl.py shell CTRL [CMD...]")
            name = rest[0] if rest[0].startswith("lab-") else "lab-" + rest[0]
            cmd = rest[1:] or [os.environ.get("SHELL", "/bin/bash")]
            return subprocess.call(in_ctrl(name, cmd))
        elif command in ("salt", "run", "key"):
            tool = {"salt": "salt", "run": "salt-run", "key": "salt-key"}[command]
            return salt_cli([os.path.join(VENV_BIN, tool), "-c", os.path.join(MASTER_DIR, "etc")] + rest)
        else:
            raise LabError("unknown command {!r}; see --help".format(command))
    except LabError as exc:
        print("labctl {}: {}".format(command, exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
