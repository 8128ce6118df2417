#!/usr/bin/python3
"""
openstack-ha-galera-health: the Galera node's health, over HTTP, for HAProxy and the
openstack_ha beacons (managed by Salt: openstack_ha.galera; do not edit).

GET /        200 "synced" only when this node is Synced (wsrep_local_state 4; or a Donor with
             --available-when-donor, as a mariabackup donor keeps serving), in the Primary
             component, ready, not read-only and not in maintenance; 503 with the reason
             otherwise (HAProxy moves the single writer to the next node).
GET /status  200 and a JSON document, also while the database is down: the wsrep status,
             grastate.dat (uuid, seqno, safe_to_bootstrap) and whether the SST user exists.
             The openstack_ha.galera state reads it from every node before it starts one.

Only the site's controllers may ask (``--allow``; others are disconnected at once), an idle or slow client is
cut off after ``--client-timeout`` seconds, and at most ``--max-clients`` requests are served
at once (more are closed at once): a host that opens idle connections cannot make it stop
answering HAProxy's checks, which would mark every Galera node down.

Runs as the ``mysql`` user and talks to the local server over its unix socket (no password).
The maintenance switch is a file: while it exists the node reports 503. With --pidfile it
also watches the server's process (every --watch seconds, one /proc read): a server that has
died is reported at once, without waiting for the next look at the database.

GET /watch   a stream of JSON lines, one now, then one at every change and every second:
             whether this node's server runs and, when it is seen gone, its gcomm UUID.

With --peer NAME=ADDRESS (one per other Galera node) it follows each peer's /watch and
evicts a peer whose server died: when the peer's own daemon reports its server gone and a
connection to the peer's replication port is refused (its host answers, nothing listens),
the UUID that this node's Primary view gives that peer is evicted (``evs.evict``), and the
survivors' commits go on at once instead of after Galera's suspect window. A restarted
server rejoins under a new UUID. A silent peer (a dead host, a cut link, a hung server) is
left to Galera's own failure detection.

Standard library only, so it runs on the distribution's python3.
"""

import argparse
import ipaddress
import json
import os
import re
import select
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATES = {1: "Joining", 2: "Donor/Desynced", 3: "Joined", 4: "Synced"}
ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def read_grastate(datadir):
    """grastate.dat as {uuid, seqno, safe_to_bootstrap}, or None when there is none."""
    path = os.path.join(datadir, "grastate.dat")
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("uuid", "seqno", "safe_to_bootstrap"):
            out[key.strip()] = value.strip()
    try:
        return {"uuid": out.get("uuid", ZERO_UUID), "seqno": int(out.get("seqno", "-1")),
                "safe_to_bootstrap": out.get("safe_to_bootstrap", "0") == "1"}
    except ValueError:
        return {"uuid": out.get("uuid", ZERO_UUID), "seqno": -1, "safe_to_bootstrap": False}


def server_gone(pidfile):
    """Why the server named by ``pidfile`` is gone ("process 123 exited"), or None while its
    process lives or there is no evidence (no pid file, unreadable: the next look at the
    database decides). A zombie counts as gone (it is dead, only not yet reaped)."""
    try:
        with open(pidfile) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open("/proc/{}/status".format(pid)) as fh:
            for line in fh:
                if line.startswith("State:"):
                    return "process {} exited".format(pid) if line.split()[1] in ("Z", "X") else None
    except OSError:
        return "process {} exited".format(pid)
    return None


def start_in_flight(path, max_age, now=None):
    """What the openstack_ha state's marker ``path`` says about a start of this node's server
    that is under way ({"bootstrap": bool, "age": seconds}), or None when there is none or it
    is older than ``max_age`` seconds (left behind by a start that was killed)."""
    try:
        with open(path) as fh:
            marker = json.loads(fh.read())
        since = float(marker["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    age = (time.time() if now is None else now) - since
    if age < 0 or age > max_age:
        return None
    return {"bootstrap": bool(marker.get("bootstrap")), "age": round(age, 1)}


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def refused(address, port, timeout):
    """True only when a TCP connection to ``address``:``port`` is refused: the host answered
    and nothing listens there. A connection made, a timeout or an unreachable host: False."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        sock.close()
    return False


def refused_within(address, port, window, step=0.05):
    """True once a connection to ``address``:``port`` is refused within ``window`` seconds
    (tried every ``step``): a server seen gone may still hold its sockets for a moment (its
    threads exit one by one after the first), so one try right away is not enough."""
    deadline = time.monotonic() + window
    while True:
        if refused(address, port, min(0.25, window)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def eviction(name, report, view, done):
    """The gcomm UUID to evict for peer ``name``, or None.

    ``report`` is what the peer's own health daemon last said about its server
    ({"gone": reason or None, "uuid": the server's gcomm UUID}), ``view`` this node's Primary
    view ({node name: gcomm UUID}, empty when this node is not Primary), ``done`` the (name,
    UUID) pairs evicted already. Only a UUID this node's own view gives that peer is evicted,
    so a peer can only ever get itself evicted."""
    if not isinstance(report, dict) or not report.get("gone"):
        return None
    uuid = report.get("uuid")
    if not isinstance(uuid, str) or view.get(name) != uuid:
        return None
    return None if (name, uuid) in done else uuid


class Client:
    """One long-lived ``mariadb`` client in batch mode on the server's unix socket: a query is
    written to its stdin and its rows read back up to an end marker, so each look at the
    database costs a round trip, not a client process (one every half second per node was a
    fifth of a core on a slow host). A client that fails, exits or does not answer within
    ``timeout`` seconds is killed and a new one started for the next query."""

    END = "openstack-ha-end-of-answer"

    def __init__(self, socket_path, timeout=2.0):
        self.cmd = ["mariadb", "--no-defaults", "--socket=" + socket_path, "-u", "mysql", "-N", "-B",
                    "--unbuffered", "--connect-timeout=1"]
        self.timeout = timeout
        self.proc = None
        self.lock = threading.Lock()

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                stream.close()
        self.proc = None

    def query(self, sql):
        """The rows (lists of column strings) that ``sql`` (one or more statements) returns.
        Raises RuntimeError with the client's own message, or OSError."""
        with self.lock:
            try:
                return self._query(sql)
            except BaseException:
                self.close()
                raise

    def _query(self, sql):
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.proc.stdin.write("{}; SELECT '{}';\n".format(sql.strip().rstrip(";"), self.END).encode())
        self.proc.stdin.flush()
        out, fd, end = b"", self.proc.stdout.fileno(), ("\n" + self.END + "\n").encode()
        deadline = time.monotonic() + self.timeout
        while not (b"\n" + out).endswith(end):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError("no answer within {} s".format(self.timeout))
            chunk = os.read(fd, 65536)
            if not chunk:  # the client exited: the server went away, or the query failed
                self.proc.wait()
                lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(lines[-1] if lines else "mariadb exited ({})".format(self.proc.returncode))
            out += chunk
        return [line.split("\t") for line in out.decode(errors="replace").splitlines()[:-1]]


class Probe:
    """Asks the local server every ``interval`` seconds in a background thread; answers come
    from the last result at once, so a check never waits for the database (a hung or busy
    server shows up as a stale result instead, which is reported as unhealthy)."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.cached, self.at = None, 0.0
        self.gone = None
        self.client = Client(args.socket)
        self.evictions = []  # the last evictions of dead peers, newest last (in /status)
        self.server_uuid = None  # the gcomm UUID of this node's server, as last seen running
        # the peers in this node's Primary view ({name: gcomm UUID}), as the last answering look
        # saw them: a look that failed (the server busy as a peer dies) leaves it as it was
        self.view = {}
        self.changed = threading.Condition(self.lock)  # notified when the server is seen gone or back
        self.watching = {}  # /watch streams being served, per client address
        threading.Thread(target=self._refresh_forever, daemon=True).start()
        if args.pidfile:
            threading.Thread(target=self._watch_forever, daemon=True).start()
        self.evicted = set()
        # Evictions go through a client of their own: a look at the database may be waiting on
        # the provider right when a peer dies (seen: a second), and an eviction must not wait
        # behind it.
        self.evictor = Client(args.socket)
        for name, address in args.peer:
            threading.Thread(target=self._follow_forever, args=(name, address), daemon=True).start()

    def liveness(self):
        """What /watch streams: {"running", "gone", "uuid"} of this node's server."""
        with self.lock:
            return self._liveness()

    def _liveness(self):
        cached = self.cached or {}
        return {"running": bool(cached.get("running")) and not self.gone, "gone": self.gone, "uuid": self.server_uuid}

    def watch_begin(self, who):
        """Count a /watch stream of client ``who``; False (not counted) when that client has
        two already (one per peer is enough; two let a reconnect overlap) or --max-watchers
        are served, so a controller cannot take every stream."""
        with self.lock:
            if self.watching.get(who, 0) >= 2 or sum(self.watching.values()) >= self.args.max_watchers:
                return False
            self.watching[who] = self.watching.get(who, 0) + 1
            return True

    def watch_end(self, who):
        with self.lock:
            self.watching[who] -= 1
            if not self.watching[who]:
                del self.watching[who]

    def wait_for_change(self, report, timeout):
        """Wait until the liveness differs from ``report``, at most ``timeout`` seconds."""
        with self.changed:
            self.changed.wait_for(lambda: self._liveness() != report, timeout)

    def _follow_forever(self, name, address):
        """Follow peer ``name``'s health daemon (/watch) and evict its server's UUID when the
        daemon reports it gone and the peer refuses the replication port; reconnect on loss."""
        try:
            self.evictor.query("SELECT 1")  # its client started before it is needed
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass
        while True:
            try:
                self._follow(name, address)
            except (OSError, ValueError):
                pass
            time.sleep(1.0)

    def _follow(self, name, address):
        with socket.create_connection((address, self.args.port), timeout=2.0) as sock:
            sock.sendall(b"GET /watch HTTP/1.0\r\n\r\n")
            sock.settimeout(3.0)  # the peer writes a line every second at least
            stream = sock.makefile("rb")
            if b" 200 " not in stream.readline(256):
                return
            while stream.readline(1024).strip():
                pass  # the headers
            reported = None  # when the peer first said its server was gone
            while True:
                line = stream.readline(4096)
                if not line:
                    return
                report = json.loads(line)
                reported = (reported or time.time()) if isinstance(report, dict) and report.get("gone") else None
                with self.lock:
                    view = self.view
                uuid = eviction(name, report, view, self.evicted)
                if uuid and refused_within(address, self.args.gcomm_port, self.args.evict_confirm):
                    self._evict(name, uuid, reported)

    def _evict(self, name, uuid, reported):
        try:
            self.evictor.query("SET GLOBAL wsrep_provider_options = 'evs.evict={}'".format(uuid))
            outcome = "evicted"
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            outcome = "eviction failed: {}".format(exc)
        with self.lock:
            self.evicted.add((name, uuid))
            self.evictions = (self.evictions + [{"node": name, "uuid": uuid, "at": round(time.time(), 3),
                                                 "reported": round(reported, 3), "outcome": outcome}])[-10:]

    def _watch_forever(self):
        # Whether or not a look at the database saw the server go first: a server whose
        # process is gone is reported gone (its last UUID is kept: ``liveness``).
        while True:
            gone = server_gone(self.args.pidfile)
            with self.lock:
                if gone != self.gone:
                    self.gone = gone
                    self.changed.notify_all()
            time.sleep(self.args.watch)

    def _refresh_forever(self):
        while True:
            started = time.monotonic()
            result = self._status()
            with self.lock:
                before = self._liveness()
                self.cached, self.at = result, time.monotonic()
                if result.get("running") and result.get("gcomm_uuid"):
                    self.server_uuid = result["gcomm_uuid"]  # kept after the server is gone
                if result.get("cluster_status") == "Primary":
                    self.view = result.get("members") or {}
                elif result.get("running"):
                    self.view = {}  # this node answered and is not Primary: it evicts nobody
                if self._liveness() != before:
                    self.changed.notify_all()
            time.sleep(max(0.05, self.args.interval - (time.monotonic() - started)))

    def status(self):
        with self.lock:
            cached, age = self.cached, time.monotonic() - self.at
            gone, evictions = self.gone, list(self.evictions)
        if cached is None:
            return self._status()
        if gone and cached.get("running"):
            return dict(cached, running=False, healthy=False, reason="database not running: {}".format(gone))
        if age > self.args.stale:
            cached = dict(cached, healthy=False, reason="no fresh answer from the database for {:.1f} s".format(age))
        return dict(cached, evictions=evictions) if evictions else cached

    def _sql(self, query):
        return self.client.query(query)

    def _status(self):
        out = {"node": self.args.node, "running": False, "healthy": False, "reason": "",
               "maintenance": os.path.exists(self.args.maintenance_file),
               "grastate": read_grastate(self.args.datadir),
               "starting": start_in_flight(self.args.starting_file, self.args.starting_max) if self.args.starting_file else None}
        try:
            rows = self._sql("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_local_state_comment',"
                             " 'wsrep_cluster_status', 'wsrep_cluster_size', 'wsrep_cluster_state_uuid', 'wsrep_ready',"
                             " 'wsrep_connected', 'wsrep_last_committed', 'wsrep_local_index', 'wsrep_gcomm_uuid');"
                             " SELECT 'read_only', @@global.read_only;"
                             " SELECT 'sst_user', COUNT(*) FROM mysql.user WHERE User = '{}';".format(self.args.sst_user.replace("'", ""))
                             + (" SELECT 'member', node_uuid, node_name FROM mysql.wsrep_cluster_members;" if self.args.peer else ""))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            out["reason"] = "database not answering: {}".format(exc)
            return out
        values = {row[0].lower(): row[1] for row in rows if len(row) == 2}
        out.update(running=True,
                   state_code=int(values.get("wsrep_local_state", "0") or 0),
                   state=values.get("wsrep_local_state_comment", ""),
                   cluster_status=values.get("wsrep_cluster_status", ""),
                   cluster_size=int(values.get("wsrep_cluster_size", "0") or 0),
                   cluster_uuid=values.get("wsrep_cluster_state_uuid", ""),
                   ready=values.get("wsrep_ready") == "ON",
                   last_committed=int(values.get("wsrep_last_committed", "-1") or -1),
                   read_only=values.get("read_only") == "1",
                   sst_ready=values.get("sst_user", "0") != "0")
        if UUID_RE.match(values.get("wsrep_gcomm_uuid", "")):
            out["gcomm_uuid"] = values["wsrep_gcomm_uuid"]
        if self.args.peer:
            members = [(row[2], row[1]) for row in rows if len(row) == 3 and row[0] == "member" and UUID_RE.match(row[1])]
            names = [name for name, _ in members]
            out["members"] = {name: uuid for name, uuid in members if names.count(name) == 1}  # a name claimed twice: neither
        if out["cluster_status"] != "Primary":
            out["reason"] = "not in the Primary component ({})".format(out["cluster_status"] or "no cluster")
        elif out["state_code"] != 4 and not (out["state_code"] == 2 and self.args.available_when_donor):
            out["reason"] = "not Synced ({})".format(out["state"] or STATES.get(out["state_code"], out["state_code"]))
        elif not out["ready"]:
            out["reason"] = "wsrep not ready"
        elif out["read_only"]:
            out["reason"] = "read-only"
        elif out["maintenance"]:
            out["reason"] = "maintenance ({} exists)".format(self.args.maintenance_file)
        else:
            out.update(healthy=True, reason="synced" if out["state_code"] == 4 else "donor (mariabackup keeps serving)")
        return out


def args_peer(text):
    """``NAME=ADDRESS`` (the address may be in brackets) as (name, canonical address)."""
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise argparse.ArgumentTypeError("expected NAME=ADDRESS, got {!r}".format(text))
    return name, canonical(address.strip("[]"))


def canonical(address):
    """``address`` spelt one way: IPv6 compressed and lower-case, without a scope, an
    IPv4-mapped IPv6 address as its IPv4 address; anything unparsable unchanged."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    return str(ip.ipv4_mapped) if ip.version == 6 and ip.ipv4_mapped else str(ip)


class BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``max_clients`` requests at once and only
    clients whose address is in ``allowed``: beyond the bound a connection is closed at once."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, allowed, max_clients):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.allowed = {canonical(a) for a in allowed}
        self.slots = threading.BoundedSemaphore(max_clients)
        super().__init__(address, handler)

    def verify_request(self, request, client_address):
        return not self.allowed or canonical(client_address[0]) in self.allowed

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_handler(probe, client_timeout=2.0):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        timeout = client_timeout  # an idle or slow client is cut off

        def _send(self, code, body, kind):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            status = probe.status()
            if self.path.split("?")[0] == "/status":
                self._send(200, json.dumps(status, sort_keys=True) + "\n", "application/json")
            elif self.path.split("?")[0] == "/":
                self._send(200 if status["healthy"] else 503, status["reason"] + "\n", "text/plain")
            elif self.path.split("?")[0] == "/watch" and self.command == "GET":
                self._stream()
            else:
                self._send(404, "not found\n", "text/plain")

        do_HEAD = do_GET

        def _stream(self):
            """/watch: a JSON line of the server's liveness now, then at every change and at
            least every second, for up to an hour; at most two streams per client and
            --max-watchers in all."""
            who = canonical(self.client_address[0])
            if not probe.watch_begin(who):
                self._send(503, "too many watchers\n", "text/plain")
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                ends = time.monotonic() + 3600
                while time.monotonic() < ends:
                    report = probe.liveness()
                    self.wfile.write((json.dumps(report, sort_keys=True) + "\n").encode())
                    self.wfile.flush()
                    probe.wait_for_change(report, 1.0)
            except OSError:
                pass
            finally:
                probe.watch_end(who)

        def log_message(self, fmt, *args):
            pass

    Handler.probe = probe
    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--node", required=True)
    parser.add_argument("--address", action="append", required=True,
                        help="an address to listen on (repeat: one per address family of the node)")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--socket", default="/run/mysqld/mysqld.sock")
    parser.add_argument("--datadir", default="/var/lib/mysql")
    parser.add_argument("--maintenance-file", default="/etc/mysql/openstack-ha-maintenance")
    parser.add_argument("--sst-user", default="sst")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two looks at the database")
    parser.add_argument("--pidfile", help="the server's pid file: its process is watched between two looks")
    parser.add_argument("--watch", type=float, default=0.1, help="seconds between two looks at the server's process")
    parser.add_argument("--starting-file", help="the marker the openstack_ha state writes while it starts the server")
    parser.add_argument("--starting-max", type=float, default=900.0,
                        help="a start marker older than this many seconds is stale (its start was killed)")
    parser.add_argument("--stale", type=float, default=3.0, help="an answer older than this is unhealthy")
    parser.add_argument("--allow", action="append", default=[],
                        help="an address that may ask (repeat; the controllers and the local host); none: everyone")
    parser.add_argument("--client-timeout", type=float, default=2.0, help="seconds an idle or slow client is given")
    parser.add_argument("--max-clients", type=int, default=32, help="requests served at once; more are closed")
    parser.add_argument("--available-when-donor", action="store_true",
                        help="a Donor/Desynced node stays healthy (a mariabackup donor keeps serving)")
    parser.add_argument("--peer", action="append", default=[], type=args_peer,
                        help="NAME=ADDRESS of another Galera node (repeat): evict it when its server dies")
    parser.add_argument("--gcomm-port", type=int, default=4567, help="Galera's replication port")
    parser.add_argument("--evict-confirm", type=float, default=1.0,
                        help="seconds within which a dead peer's replication port must refuse a connection")
    parser.add_argument("--max-watchers", type=int, default=8, help="/watch streams served at once")
    args = parser.parse_args()
    handler = make_handler(Probe(args), args.client_timeout)
    servers = [BoundedServer((address, args.port), handler, args.allow, args.max_clients) for address in args.address]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
