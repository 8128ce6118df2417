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
Standard library only, so it runs on the distribution's python3.
"""

import argparse
import ipaddress
import json
import os
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
        threading.Thread(target=self._refresh_forever, daemon=True).start()
        if args.pidfile:
            threading.Thread(target=self._watch_forever, daemon=True).start()

    def _watch_forever(self):
        while True:
            with self.lock:
                was_running = bool(self.cached and self.cached.get("running"))
            gone = server_gone(self.args.pidfile) if was_running else None
            with self.lock:
                self.gone = gone
            time.sleep(self.args.watch)

    def _refresh_forever(self):
        while True:
            started = time.monotonic()
            result = self._status()
            with self.lock:
                self.cached, self.at = result, time.monotonic()
            time.sleep(max(0.05, self.args.interval - (time.monotonic() - started)))

    def status(self):
        with self.lock:
            cached, age = self.cached, time.monotonic() - self.at
            gone = self.gone
        if cached is None:
            return self._status()
        if gone and cached.get("running"):
            return dict(cached, running=False, healthy=False, reason="database not running: {}".format(gone))
        if age > self.args.stale:
            return dict(cached, healthy=False, reason="no fresh answer from the database for {:.1f} s".format(age))
        return cached

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
                             " 'wsrep_connected', 'wsrep_last_committed', 'wsrep_local_index');"
                             " SELECT 'read_only', @@global.read_only;"
                             " SELECT 'sst_user', COUNT(*) FROM mysql.user WHERE User = '{}';".format(self.args.sst_user.replace("'", "")))
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
            else:
                self._send(404, "not found\n", "text/plain")

        do_HEAD = do_GET

        def log_message(self, fmt, *args):
            pass

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
    args = parser.parse_args()
    handler = make_handler(Probe(args), args.client_timeout)
    servers = [BoundedServer((address, args.port), handler, args.allow, args.max_clients) for address in args.address]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
