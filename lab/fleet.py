"""
A fleet on one machine, for the scale benchmark (bench/fleet.py): many sites of three
controllers, each controller a real salt-minion with the real backend beacon probing a
stand-in nova API on its own loopback address (127.0.S.C) and a real HAProxy whose admin socket
the loop drains through; one or two salt-masters on loopback running the loop, their records
and lock in a redis-server of the fleet's own.

Each controller's minion and HAProxy share a mount namespace of their own with a private tmpfs
on /run/oha-fleet, so every controller has its HAProxy socket at the path its site's pillar
names. Everything lives under /srv/openstack-ha-fleet and every process started has that path on
its command line, so :func:`down` finds and kills them by PID after any crash.

Usage (as root, after scripts/setup.sh): python -m lab.fleet up [SITES] | down
"""

import functools
import json
import os
import random
import subprocess
import sys
import time

from lab import labctl

ROOT = "/srv/openstack-ha-fleet"
PILLAR = os.path.join(ROOT, "pillar")
RUN = "/run/oha-fleet"  # each controller's private tmpfs (its HAProxy socket and state file)
REDIS_PORT = 6392
MASTER_ADDRS = ["127.0.0.1", "127.0.0.2"]
PUBLISH_PORT, RET_PORT = 4605, 4606
NOVA_PORT = 8774
COOLDOWN = 3
# Salt's transport for masters and minions: "zeromq" (Salt's default) sends every job to every
# minion of the master, which decrypts it to find it is not its own; "tcp" sends a job aimed
# at a list of minions to those alone (the loop's jobs name one site's controllers).
TRANSPORT = ["zeromq"]
MINION_EXTRA = {}  # more minion options (bench/fleet.py --master-alive)
LOOP_EXTRA = {}  # more options of the masters' openstack_ha_loop engine (bench/fleet.py --workers)
# The backend beacon's watcher round in seconds (bench/fleet.py --watch); None: the project's
# default (remediation:probe:watch in defaults.yaml); 0: the tick alone, as the fleet ran before
# 0.7.12 (every decision then needs a verification job).
WATCH = [None]
# The nice value of the stand-ins of sites 2..N (bench/fleet.py --others-nice; 0: none).
OTHERS_NICE = [0]


def _model_lib():
    sys.path.insert(0, labctl.REPO)
    from tests import conftest

    return conftest


@functools.lru_cache(maxsize=None)
def _default_watch():
    """remediation:probe:watch of defaults.yaml (read once)."""
    return _model_lib().defaults()["remediation"]["probe"]["watch"]


def watch_round():
    """The watcher round the fleet's beacons use: WATCH[0], or the project's default."""
    return WATCH[0] if WATCH[0] is not None else _default_watch()


def site_id(index):
    return "fleet%02d" % index


def at_site(cid, index):
    """Whether controller ``cid`` belongs to site ``index``."""
    return cid.startswith(site_id(index) + "-")


def controllers(index):
    """[(minion id, address)] of site ``index`` (1-based)."""
    return [("{}-c{}".format(site_id(index), n), "127.0.{}.{}".format(index, n)) for n in (1, 2, 3)]


def site_pillar(index):
    """The ``openstack_ha`` pillar of fleet site ``index``: one service (nova), no Galera or
    RabbitMQ, HAProxy's socket in the controller's private /run/oha-fleet."""
    return {"openstack_ha": {
        "site": site_id(index), "network": "127.0.{}.0/24".format(index),
        "controllers": [{"id": cid, "address": addr} for cid, addr in controllers(index)],
        "vips": {"public": {"address": "127.0.{}.100".format(index), "interface": "lo", "vrid": 1,
                            "fqdn": "{}.fleet.example".format(site_id(index))}},
        "galera": {"enabled": False}, "rabbitmq": {"enabled": False},
        "keystone": {"region": site_id(index), "interfaces": {"internal": "public", "admin": "public"}},
        "haproxy": {"socket": RUN + "/haproxy.sock", "state_file": RUN + "/haproxy.state"},
        # A short cooldown: a fault per second across the fleet needs each site ready again soon.
        "remediation": {"cooldown": COOLDOWN, "probe": {"watch": watch_round()}},
        "services": {"nova": {"port": NOVA_PORT, "vip": "public", "check": {"path": "/", "status": 200},
                              "catalog": {"type": "compute", "path": ""}}},
    }}


def probe_targets(index):
    """The backend beacon's targets for site ``index`` (what beacons.sls would render)."""
    conftest = _model_lib()
    return conftest.model_lib.probe_targets(conftest.model_lib.build(conftest.defaults(), site_pillar(index)["openstack_ha"]))


def haproxy_config(index):
    servers = "\n".join("    server {} {}:{}".format(cid, addr, NOVA_PORT) for cid, addr in controllers(index))
    return ("global\n    stats socket {run}/haproxy.sock mode 600 level admin\n    server-state-file {run}/haproxy.state\n"
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n"
            "    load-server-state-from-file global\n"
            "backend nova\n{servers}\n").format(run=RUN, servers=servers)


def master_dir(number):
    return os.path.join(ROOT, "master%d" % number)


def master_config(number):
    """Master ``number``'s configuration (1 or 2: the same but for its address and id)."""
    config = labctl.project_master_config()
    root = master_dir(number)
    config.update({
        "id": "fleet-master-%d" % number, "root_dir": root, "interface": MASTER_ADDRS[number - 1],
        "publish_port": PUBLISH_PORT, "ret_port": RET_PORT, "user": "root",
        "log_file": os.path.join(root, "log", "master"), "log_level_logfile": "warning",
        "pki_dir": os.path.join(root, "pki"), "cachedir": os.path.join(root, "cache"),
        "sock_dir": os.path.join(root, "run", "sock"), "pidfile": os.path.join(root, "run", "salt-master.pid"),
        "pillar_roots": {"base": [PILLAR] + config["pillar_roots"]["base"]},
        "auto_accept": True, "worker_threads": 8, "timeout": 15, "gather_job_timeout": 15,
        "openstack_ha_cache": "redis", "cache.redis.host": "127.0.0.1", "cache.redis.port": REDIS_PORT,
        "transport": TRANSPORT[0],
    })
    if LOOP_EXTRA:
        config["engines"] = [{name: dict(options or {}, **LOOP_EXTRA)} if name == "openstack_ha_loop" else {name: options}
                             for engine in config["engines"] for name, options in engine.items()]
    return config


def minion_dir(cid):
    return os.path.join(ROOT, "minions", cid)


def minion_config(cid, index, masters):
    beacon = [{"interval": 1}, {"timeout": 0.25}, {"budget": 0.3}, {"fall": 1}, {"rise": 2}, {"heartbeat": 15},
              {"targets": probe_targets(index)}]
    watch = watch_round()
    if watch:  # as beacons.sls writes it: the watcher, its cache and HAProxy's socket (signed reports)
        beacon[-1:-1] = [{"keepalive": True}, {"socket": RUN + "/haproxy.sock"}, {"watch": watch},
                         {"cache": RUN + "/openstack-ha-probes.json"}]
    return {
        "id": cid, "master": MASTER_ADDRS[:masters] if masters > 1 else MASTER_ADDRS[0],
        "master_port": RET_PORT, "publish_port": PUBLISH_PORT, "root_dir": minion_dir(cid), "user": "root",
        "log_level_logfile": "warning", "multiprocessing": False, "loop_interval": 1,
        "acceptance_wait_time": 1, "random_reauth_delay": 0, "auth_timeout": 10, "recon_default": 200, "recon_max": 1000,
        "tcp_keepalive": True, "tcp_keepalive_idle": 5, "tcp_keepalive_cnt": 3, "tcp_keepalive_intvl": 2,
        "beacons": {"openstack_ha_backends": beacon},
        "transport": TRANSPORT[0],
        **MINION_EXTRA,
    }


def _spawn(argv, log):
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL, start_new_session=True).pid


def _cmdlines():
    """(pid, command line with spaces for NULs) of every process but this one (a zombie's is
    empty: callers check the ones they match with ``labctl.alive``)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ")
        except OSError:
            continue
        yield int(entry), cmdline


def pids():
    """Every live process whose command line names the fleet's directory or that holds one of
    its files open."""
    found = []
    for pid, cmdline in _cmdlines():
        try:
            if (ROOT.encode() in cmdline or labctl.holds_file_under(pid, ROOT)) and labctl.alive(pid):
                found.append(pid)
        except OSError:  # gone meanwhile
            continue
    return found


def redis_pid():
    """The fleet redis-server's PID (it rewrites its command line: found by its pid file)."""
    try:
        with open(os.path.join(ROOT, "redis", "pid")) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return []
    return [pid] if labctl.alive(pid) else []


def down():
    """Kill every fleet process by PID and remove its directory (idempotent)."""
    labctl.kill_pids(pids() + redis_pid())
    if os.path.isdir(ROOT):
        subprocess.run(["rm", "-rf", "--one-file-system", ROOT], check=True)


class Fleet:
    """A running fleet: ``sites`` sites, ``masters`` masters (1 or 2)."""

    def __init__(self, sites, masters=1):
        self.sites, self.masters = int(sites), int(masters)
        self.minion_pids = {}   # controller -> salt-minion PID (the namespace's first process)
        self.standin_pids = {}  # controller -> stand-in nova PID
        self.master_pids = {}   # number -> [PIDs]

    # ------------------------------------------------------------------ set-up
    def write_pillar(self):
        os.makedirs(os.path.join(PILLAR, "fleet"), exist_ok=True)
        top = {"base": {}}
        for index in range(1, self.sites + 1):
            top["base"][site_id(index) + "-c*"] = ["fleet." + site_id(index)]
            with open(os.path.join(PILLAR, "fleet", site_id(index) + ".sls"), "w") as fh:
                json.dump(site_pillar(index), fh)
        with open(os.path.join(PILLAR, "top.sls"), "w") as fh:
            json.dump(top, fh)

    def start_redis(self):
        directory = os.path.join(ROOT, "redis")
        os.makedirs(directory, exist_ok=True)
        pid = _spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
                      "--dir", directory], os.path.join(directory, "log"))
        with open(os.path.join(directory, "pid"), "w") as fh:
            fh.write(str(pid))
        import redis

        client = redis.Redis(port=REDIS_PORT, socket_timeout=2)

        def ready():
            try:
                return client.ping()
            except redis.RedisError:
                return False
        labctl.wait_for(ready, 30, "the fleet's redis-server")
        if not labctl.alive(pid):
            raise labctl.LabError("another redis-server holds port {} (a fleet left over?)".format(REDIS_PORT))

    def start_master(self, number):
        root = master_dir(number)
        etc = os.path.join(root, "etc")
        for sub in ("etc", "log", "run/sock", "cache", "pki"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        if number > 1 and not os.listdir(os.path.join(root, "pki")):
            # The same key pair as the first master (hot-hot multi-master), and its accepted keys.
            first = os.path.join(master_dir(1), "pki")
            subprocess.run(["cp", "-a", first + "/.", os.path.join(root, "pki")], check=True)
            for ext in ("pem", "pub"):
                os.unlink(os.path.join(root, "pki", "master." + ext))
                os.rename(os.path.join(root, "pki", "fleet-master-1." + ext), os.path.join(root, "pki", "fleet-master-%d.%s" % (number, ext)))
        with open(os.path.join(etc, "master"), "w") as fh:
            json.dump(master_config(number), fh)
        sock = os.path.join(root, "run", "sock", "master_event_pub.ipc")
        if os.path.exists(sock):
            os.unlink(sock)
        subprocess.run([os.path.join(labctl.VENV_BIN, "salt-master"), "-c", etc, "-d"], check=True, timeout=60)
        labctl.wait_for(lambda: os.path.exists(sock), 60, "fleet master %d's event socket" % number)
        self.master_pids[number] = self.find_master_pids(number)

    def find_master_pids(self, number):
        """Master ``number``'s processes: those started as it and their descendants (Salt
        renames its daemons: an EventPublisher's command line names nothing)."""
        marker = ("salt-master -c " + os.path.join(master_dir(number), "etc") + " ").encode()
        named = [pid for pid, cmdline in _cmdlines() if marker in cmdline and labctl.alive(pid)]
        return sorted({p for pid in named for p in labctl.process_tree(pid)})

    def kill_master(self, number, sig=9):
        """Kill master ``number`` (SIGKILL by default: a crash) and wait until it is gone."""
        for pid in self.find_master_pids(number):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        labctl.wait_for(lambda: not self.find_master_pids(number), 30, "fleet master %d to die" % number)

    def start_standin(self, cid, address):
        nice = ["nice", "-n", str(OTHERS_NICE[0])] if OTHERS_NICE[0] and not at_site(cid, 1) else []
        self.standin_pids[cid] = _spawn(nice + [os.path.join(labctl.VENV_BIN, "python"), os.path.join(labctl.REPO, "lab", "standin_api.py"),
                                         "--service", "nova", "--address", address, "--port", str(NOVA_PORT),
                                         "--pidfile", os.path.join(ROOT, "standin", cid + ".pid")],
                                        os.path.join(ROOT, "standin", cid + ".log"))

    def start_minion(self, cid, index):
        etc = os.path.join(minion_dir(cid), "etc")
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "minion"), "w") as fh:
            json.dump(minion_config(cid, index, self.masters), fh)
        with open(os.path.join(minion_dir(cid), "haproxy.cfg"), "w") as fh:
            fh.write(haproxy_config(index))
        pidfile = os.path.join(minion_dir(cid), "var", "run", "salt-minion.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        script = ("set -e; mount -t tmpfs -o mode=0755 tmpfs {run}; haproxy -f {cfg} -D -p {run}/haproxy.pid; "
                  "exec {minion} -c {etc}").format(run=RUN, cfg=os.path.join(minion_dir(cid), "haproxy.cfg"),
                                                   minion=os.path.join(labctl.VENV_BIN, "salt-minion"), etc=etc)
        self.minion_pids[cid] = _spawn(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                                       os.path.join(minion_dir(cid), "console.log"))

    def salt(self, number, *args, timeout=300):
        """``salt ARGS --out=json --static`` on master ``number``: the parsed result ({} if none,
        also when the command outlives ``timeout``: it is killed, and callers that wait ask again)."""
        try:
            proc = subprocess.run([os.path.join(labctl.VENV_BIN, "salt"), "-c", os.path.join(master_dir(number), "etc"),
                                   "--out=json", "--static"] + list(args), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {}
        try:
            return json.loads(proc.stdout or "{}")
        except ValueError:
            return {}

    def ids(self, sites=None):
        return [cid for index in (sites or range(1, self.sites + 1)) for cid, _ in controllers(index)]

    def all_answer(self, number):
        got = self.salt(number, "-t", "10", "fleet*", "test.ping", timeout=120)
        return all(got.get(cid) is True for cid in self.ids())

    def up(self, progress=print):
        down()
        os.makedirs(RUN, exist_ok=True)
        self.write_pillar()
        self.start_redis()
        for number in range(1, self.masters + 1):
            if number > 1:
                labctl.wait_for(lambda: os.path.exists(os.path.join(master_dir(1), "pki", "fleet-master-1.pem")), 30, "master 1's key")
            self.start_master(number)
        progress("fleet: redis, {} master(s) up; starting {} controllers".format(self.masters, 3 * self.sites))
        for index in range(1, self.sites + 1):
            for cid, address in controllers(index):
                self.start_standin(cid, address)
                self.start_minion(cid, index)
        for number in range(1, self.masters + 1):
            labctl.wait_for(lambda: self.all_answer(number), 300, "every fleet controller to answer master %d" % number)
        progress("fleet: every controller answers; syncing the custom modules")
        self.salt(1, "-t", "120", "fleet*", "saltutil.sync_all", timeout=600)
        # The beacon loads once the modules are there: wait until HAProxy and the beacon are seen.
        progress("fleet: up ({} sites)".format(self.sites))

    def restart_minions(self, masters):
        """Restart every controller's minion (and its HAProxy) connected to ``masters`` masters."""
        self.masters = masters
        for cid, pid in list(self.minion_pids.items()):
            labctl.kill_pids(labctl.process_tree(pid) + self.haproxy_pids([cid]))
        for index in range(1, self.sites + 1):
            for cid, _ in controllers(index):
                self.start_minion(cid, index)
        # A minion that exits at once (its predecessor's sockets not yet released) is started again.
        time.sleep(3)
        for index in range(1, self.sites + 1):
            for cid, _ in controllers(index):
                if not labctl.alive(self.minion_pids[cid]):
                    self.start_minion(cid, index)
        for number in range(1, masters + 1):
            labctl.wait_for(lambda: self.all_answer(number), 300, "every fleet controller to answer master %d" % number)

    def haproxy_pids(self, cids=None):
        found = []
        for cid in cids or list(self.minion_pids):
            try:
                with open("/proc/%d/root%s/haproxy.pid" % (self.minion_pids[cid], RUN)) as fh:
                    found.append(int(fh.read().split()[0]))
            except (OSError, ValueError, IndexError, KeyError):
                continue
        return found

    # ------------------------------------------------------------------ faults
    def crash(self, cid):
        """Kill controller ``cid``'s stand-in nova (SIGKILL)."""
        pid = self.standin_pids.pop(cid)
        os.kill(pid, 9)
        labctl.wait_for(lambda: not labctl.alive(pid), 10, "stand-in of %s to die" % cid)

    def revive(self, cid):
        index = int(cid[len("fleet"):len("fleet") + 2])
        self.start_standin(cid, dict(controllers(index))[cid])

    def admin_state(self, cid):
        """{controller of cid's site: HAProxy admin state of nova/cid}, read from each HAProxy's
        socket directly (through /proc/PID/root: not through a master, no process spawned)."""
        index = int(cid[len("fleet"):len("fleet") + 2])
        states = {}
        for other, _ in controllers(index):
            try:
                out = labctl.haproxy_command("/proc/%d/root%s/haproxy.sock" % (self.minion_pids[other], RUN),
                                             "show servers state nova", timeout=2)
            except OSError:
                continue
            for line in out.splitlines():
                words = line.split()
                if len(words) > 6 and words[3] == cid:
                    states[other] = "drain" if int(words[6]) & 0x08 else "ready"
        return states

    def records(self, index):
        return labctl.redis_records(REDIS_PORT, site_id(index))

    def random_other(self, busy, exclude_site):
        """A controller of a site other than ``exclude_site`` and not in a site in ``busy``."""
        free = [i for i in range(1, self.sites + 1) if i != exclude_site and i not in busy]
        if not free:
            return None
        index = random.choice(free)
        return index, random.choice(controllers(index))[0]


def main(argv):
    if argv[:1] == ["down"]:
        down()
        return 0
    if argv[:1] == ["up"]:
        Fleet(int(argv[1]) if len(argv) > 1 else 10).up()
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
