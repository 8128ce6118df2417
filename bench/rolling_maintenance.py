"""
Rolling restarts under load: what clients see while every component of every controller is
restarted, one controller at a time.

Load, all through the site's own entry points: 90 GETs and 10 POSTs a second to nova through
the public VIP (HTTP), 10 writes a second through the Galera VIP (each row numbered), and a
publisher with confirms sending persistent messages to a quorum queue (reconnecting to another
node when its node goes; a message not confirmed is sent again, so "lost" means confirmed and
never delivered). Two ways to roll, in the same run on the same lab:

  project    salt-run openstack_ha.rolling_restart component=all: per controller, maintenance
             (VIPs, the Galera writer role and the backends moved away first), restart
             HAProxy, keepalived, Galera and RabbitMQ, health gate, maintenance off
  anchors    what a serial playbook does: per controller, restart the same four services one
             after the other, each waited for, with no draining (openstack_ha_maintenance.restart
             called directly)

Reported per way: HTTP requests failed or slower than 2 s, database writes failed, rows lost
(acknowledged and missing afterwards), messages lost (confirmed and never consumed), publishes
that had to be retried, and the total time. Target (issue 18): 0 failed, 0 lost for the project.

Needs the lab up and applied (lab/labctl up, then the headline state.apply).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pika

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab import labctl, loadgen  # noqa: E402

CTRLS = [n for n, _ in labctl.CONTROLLERS]
ADDRESS = dict(labctl.CONTROLLERS)
PUBLIC, INTERNAL, NOVA = "10.213.0.100", "10.213.0.101", 8774
DB_USER, DB_PASSWORD, DB = "keystone", "lab-keystone-db-secret", "keystone"
RABBIT_USER, RABBIT_PASSWORD, VHOST = "openstack", "lab-rabbit-secret-0001", "/openstack"
COMPONENTS = ("haproxy", "keepalived", "galera", "rabbitmq")


def sql(query, timeout=2):
    try:
        proc = subprocess.run(["mariadb", "--no-defaults", "-h", INTERNAL, "-u", DB_USER, "-p" + DB_PASSWORD,
                               "--connect-timeout=%d" % timeout, "-N", "-B", DB, "-e", query],
                              capture_output=True, text=True, timeout=timeout + 6)
    except subprocess.TimeoutExpired:
        return False, "timeout"
    return proc.returncode == 0, (proc.stdout if proc.returncode == 0 else proc.stderr).strip()


def salt(*args, timeout=1800):
    proc = labctl.salt_cmd("salt", "--out=json", "--static", "-t", "900", *args, check=False, timeout=timeout)
    try:
        return json.loads(proc.stdout or "{}")
    except ValueError:
        return {"error": proc.stdout + proc.stderr}


class Writer(threading.Thread):
    """Numbered rows through the Galera VIP, ``rate`` a second; remembers which were acknowledged."""

    def __init__(self, marker, rate=10):
        super().__init__(daemon=True)
        self.marker, self.rate, self.stop = marker, rate, threading.Event()
        self.acked, self.failed, self.errors = [], 0, []

    def run(self):
        n, self.began = 0, time.monotonic()
        while not self.stop.is_set():
            n += 1
            ok, out = sql("INSERT INTO oha_roll (note) VALUES ('%s-%d')" % (self.marker, n))
            if ok:
                self.acked.append(n)
            else:
                self.failed += 1
                self.errors.append("{:.1f} s: {}".format(time.monotonic() - self.began, out[-160:]))
            self.stop.wait(1.0 / self.rate)

    def lost(self):
        ok, out = sql("SELECT note FROM oha_roll WHERE note LIKE '%s-%%'" % self.marker, timeout=10)
        if not ok:
            raise SystemExit("cannot read the rows back: " + out)
        present = {int(line.rsplit("-", 1)[1]) for line in out.splitlines() if line}
        return len(set(self.acked) - present)


def params(ctrl):
    return pika.ConnectionParameters(host=ADDRESS[ctrl], port=5672, virtual_host=VHOST, socket_timeout=3,
                                     credentials=pika.PlainCredentials(RABBIT_USER, RABBIT_PASSWORD), blocked_connection_timeout=10)


def channel(start):
    """A confirming channel on the first node that answers, from ``start`` on."""
    for i in range(len(CTRLS)):
        ctrl = CTRLS[(start + i) % len(CTRLS)]
        try:
            conn = pika.BlockingConnection(params(ctrl))
            ch = conn.channel()
            ch.confirm_delivery()
            return conn, ch, (start + i) % len(CTRLS)
        except (pika.exceptions.AMQPError, OSError):
            continue
    return None, None, start


class Publisher(threading.Thread):
    """Persistent messages to a quorum queue with publisher confirms, ``rate`` a second; a
    message whose publish fails is sent again on a new connection (at least once)."""

    def __init__(self, queue, rate=10):
        super().__init__(daemon=True)
        self.queue, self.rate, self.stop = queue, rate, threading.Event()
        self.confirmed, self.retried = set(), 0

    def run(self):
        conn, ch, node, n = None, None, 0, 0
        pending = None
        while not self.stop.is_set():
            if pending is None:
                n += 1
                pending = n
            if ch is None:
                conn, ch, node = channel(node + 1)
                if ch is None:
                    self.stop.wait(0.5)
                    continue
            try:
                ch.basic_publish("", self.queue, str(pending).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
                self.confirmed.add(pending)
                pending = None
                self.stop.wait(1.0 / self.rate)
            except (pika.exceptions.AMQPError, OSError):
                self.retried += 1
                ch = None
                try:
                    conn.close()
                except Exception:
                    pass

    def lost(self):
        conn, ch, _ = channel(0)
        got, deadline = set(), time.monotonic() + 60
        while time.monotonic() < deadline:
            method, _, body = ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                if self.confirmed <= got:
                    break
                time.sleep(0.2)
                continue
            got.add(int(body))
        ch.queue_delete(self.queue)
        conn.close()
        return len(self.confirmed - got)


def http_load(seconds_box, results):
    """90 GETs and 10 POSTs a second to nova through the public VIP until ``seconds_box`` says stop."""
    while not seconds_box["stop"]:
        begin = time.monotonic()
        results.extend(loadgen.run(PUBLIC, NOVA, rate=90, seconds=1, timeout=5))
        for _ in range(10):
            thread, result = loadgen.start(PUBLIC, NOVA, "POST", "roll-" + uuid.uuid4().hex[:8], timeout=5)
            results.append(result)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - begin)))


def anchors_roll():
    """Per controller, restart each service in turn, no draining: a serial playbook."""
    for ctrl in CTRLS:
        for component in COMPONENTS:
            out = salt(ctrl, "openstack_ha_maintenance.restart", component)
            if not isinstance(out.get(ctrl), dict) or "component" not in out[ctrl]:
                return "{} {}: {}".format(ctrl, component, out)
    return None


def project_roll():
    proc = labctl.salt_cmd("salt-run", "--out=json", "openstack_ha.rolling_restart", "component=all", check=False, timeout=3600)
    text, doc, decoder = proc.stdout.strip(), None, json.JSONDecoder()
    while text:
        doc, end = decoder.raw_decode(text)
        text = text[end:].strip()
    if not isinstance(doc, dict) or doc.get("failed") or doc.get("refused"):
        return str(doc)
    return None


def one_way(label, roll):
    marker = "%s-%s" % (label, uuid.uuid4().hex[:6])
    queue = "oha-roll-" + marker
    conn, ch, _ = channel(0)
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    writer, publisher, results, box = Writer(marker), Publisher(queue), [], {"stop": False}
    http = threading.Thread(target=http_load, args=(box, results), daemon=True)
    for thread in (writer, publisher, http):
        thread.start()
    time.sleep(3)
    started = time.monotonic()
    problem = roll()
    print("   (the roll began {:.1f} s into the writes)".format(started - writer.began), flush=True)
    took = time.monotonic() - started
    time.sleep(3)
    box["stop"] = True
    writer.stop.set()
    publisher.stop.set()
    for thread in (http, writer, publisher):
        thread.join(30)
    time.sleep(6)  # the last requests' own timeouts
    bad_ones = [r for r in results if r.status not in (200, 201) or r.elapsed is None or r.elapsed > 2.0]
    bad = len(bad_ones)
    for r in bad_ones[:10]:
        print("   bad request: {!r}".format(r), flush=True)
    for error in writer.errors[:10]:
        print("   failed write at {}".format(error), flush=True)
    return {"way": label, "http": len(results), "http_bad": bad, "writes": len(writer.acked) + writer.failed,
            "writes_failed": writer.failed, "rows_lost": writer.lost(), "messages": len(publisher.confirmed),
            "messages_lost": publisher.lost(), "publishes_retried": publisher.retried, "seconds": round(took, 1),
            "problem": problem}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--only", choices=["project", "anchors"])
    args = parser.parse_args()
    ok, out = sql("CREATE TABLE IF NOT EXISTS oha_roll (id BIGINT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB")
    if not ok:
        raise SystemExit("the Galera VIP does not take writes: " + out)
    ways = [("project", project_roll), ("anchors", anchors_roll)]
    rows = []
    for label, roll in ways:
        if args.only and label != args.only:
            continue
        print("== {}: rolling restart of haproxy, keepalived, galera, rabbitmq on {} under load".format(label, ", ".join(CTRLS)), flush=True)
        row = one_way(label, roll)
        rows.append(row)
        print("   {http} HTTP requests, {http_bad} failed or > 2 s; {writes} writes, {writes_failed} failed, {rows_lost} rows lost; "
              "{messages} messages, {messages_lost} lost ({publishes_retried} publishes retried); {seconds} s".format(**row), flush=True)
        if row["problem"]:
            print("   the roll stopped: " + row["problem"], flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
