"""
Publish availability through RabbitMQ while the node holding the queue dies, in the lab.

A publisher (connected to another node, publisher confirms, mandatory routing, reconnecting
across every node of the transport URL as oslo.messaging does) publishes one persistent
message every 20 ms. The node holding the queue (the quorum queue's leader, or the classic
queue's home node) is SIGKILLed. Measured: seconds from the kill until a publish is confirmed
again (capped at 90 s), median and p95 over N runs, for:

  project    a quorum queue (this project's default for the OpenStack vhost): a new leader
             is elected among the survivors;
  defaults   a classic queue without mirroring, RabbitMQ's default: the queue is gone until
             its node is back (here: restarted by the remediation loop, about 10-20 s).

Between runs the killed node is back in the cluster (the remediation loop restarts it).

Usage: lab/labctl up && lab/labctl salt '*ctrl*' state.apply openstack_ha &&
       .venv/bin/python bench/rabbitmq_node_loss.py [--runs 10]
"""

import argparse
import os
import signal
import statistics
import sys
import threading
import time

import pika

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drain_latency import p95  # noqa: E402
from lab import labctl  # noqa: E402

CTRLS = [n for n, _ in labctl.CONTROLLERS]
ADDRESS = dict(labctl.CONTROLLERS)
USER, PASSWORD, VHOST = "openstack", "lab-rabbit-secret-0001", "/openstack"
CAP = 90


def params(ctrl):
    return pika.ConnectionParameters(host=ADDRESS[ctrl], port=5672, virtual_host=VHOST, socket_timeout=3,
                                     credentials=pika.PlainCredentials(USER, PASSWORD), blocked_connection_timeout=10)


def running_nodes(ctrl):
    proc = labctl.ctrl_run(ctrl, ["rabbitmqctl", "-q", "cluster_status", "--formatter", "json"], check=False)
    import json
    try:
        return sorted(json.loads(proc.stdout).get("running_nodes") or [])
    except ValueError:
        return []


def wait_cluster(timeout=180):
    deadline = time.monotonic() + timeout
    want = sorted("rabbit@" + c for c in CTRLS)
    while time.monotonic() < deadline:
        if all(running_nodes(c) == want for c in CTRLS):
            return
        time.sleep(3)
    raise SystemExit("the cluster did not come back to three running nodes")


def beam_pid(ctrl):
    out = labctl.ctrl_run(ctrl, ["cat", "/run/rabbitmq/pid"], check=False).stdout.split()
    return int(out[0]) if out and out[0].isdigit() else None


def one_run(kind, home, other, queue):
    conn = pika.BlockingConnection(params(home))  # declared on `home`: its leader / home node
    ch = conn.channel()
    ch.queue_delete(queue)
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": kind})
    conn.close()
    confirmed, stop = [], threading.Event()

    def publish():
        order = [other] + [c for c in CTRLS if c not in (other, home)] + [home]
        ch = conn = None
        while not stop.is_set():
            try:
                if ch is None:
                    for ctrl in order:
                        try:
                            conn = pika.BlockingConnection(params(ctrl))
                            break
                        except pika.exceptions.AMQPError:
                            continue
                    else:
                        time.sleep(0.2)
                        continue
                    ch = conn.channel()
                    ch.confirm_delivery()
                ch.basic_publish("", queue, b"x", pika.BasicProperties(delivery_mode=2), mandatory=True)
                confirmed.append(time.monotonic())
            except (pika.exceptions.AMQPError, OSError):
                try:
                    if conn is not None and conn.is_open:
                        conn.close()
                except Exception:  # noqa: BLE001 - a dead connection may fail to close
                    pass
                ch = conn = None
            time.sleep(0.02)
        if conn is not None and conn.is_open:
            conn.close()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    time.sleep(3)
    pid = beam_pid(home)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while time.monotonic() < killed + CAP and not any(t > killed + 0.05 for t in confirmed):
        time.sleep(0.05)
    stop.set()
    thread.join(15)
    after = [t for t in confirmed if t > killed + 0.05]
    return (min(after) - killed) if after else float(CAP)



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    wait_cluster()
    rows = []
    for label, kind in (("project: quorum queue", "quorum"), ("defaults: classic queue, no mirroring", "classic")):
        samples = []
        for i in range(args.runs):
            home = CTRLS[i % len(CTRLS)]
            other = CTRLS[(i + 1) % len(CTRLS)]
            seconds = one_run(kind, home, other, "bench.node-loss." + kind)
            samples.append(seconds)
            print("  {:<40} run {:>2}: {} killed, publishing back after {:.2f} s".format(label, i + 1, home, seconds), flush=True)
            wait_cluster()
            time.sleep(11)  # out of the loop's restart cooldown
        rows.append((label, statistics.median(samples), p95(samples)))
    print("\npublish unavailability after SIGKILL of the queue's node, {} runs each (seconds, cap {})".format(args.runs, CAP))
    print("{:<40} {:>7} {:>7}".format("settings", "median", "p95"))
    for label, med, high in rows:
        print("{:<40} {:>7.2f} {:>7.2f}".format(label, med, high))


if __name__ == "__main__":
    main()
