#!/usr/bin/env python3
"""What a converged RabbitMQ accounts state costs: one ``rabbitmqctl export_definitions`` with
the passwords checked against its hashes (0.7.18) against one ``rabbitmqctl`` per question and
per user (until 0.7.17), on a real RabbitMQ node, in the same run.

No lab: the script starts its own RabbitMQ node in a network namespace of its own
(``rmqbench``, loopback only), creates ``--users`` users (a vhost each, permissions) and a
policy, then runs ``openstack_ha_rabbitmq.ensure_accounts(test=True)`` (nothing to change)
``--runs`` times each way, alternating, and prints the wall time and the CPU of the
``rabbitmqctl`` processes (the Erlang VMs) per run. Everything it started is killed by PID and
the namespace and its files removed, also on failure.

    .venv/bin/python bench/rabbit_accounts_read.py --users 4 --runs 5
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from salt.exceptions import CommandExecutionError  # noqa: E402

from tests.conftest import load_module  # noqa: E402

NETNS = "rmqbench"
RABBIT_BIN = "/usr/lib/rabbitmq/bin"


def node_env(base):
    return {"HOME": base, "RABBITMQ_NODENAME": "rmqbench@localhost", "RABBITMQ_MNESIA_BASE": base + "/mnesia",
            "RABBITMQ_LOG_BASE": base + "/log", "RABBITMQ_ENABLED_PLUGINS_FILE": base + "/enabled_plugins",
            "RABBITMQ_PID_FILE": base + "/pid", "RABBITMQ_CONFIG_FILE": base + "/none"}


def start_node(base):
    """A RabbitMQ node in the namespace; returns once ``rabbitmqctl status`` answers (60 s at most)."""
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
    with open(base + "/enabled_plugins", "w") as fh:
        fh.write("[].\n")
    env = dict(os.environ, **node_env(base))
    log = open(base + "/server.log", "w")
    subprocess.Popen(["ip", "netns", "exec", NETNS, RABBIT_BIN + "/rabbitmq-server"], env=env, stdout=log,
                     stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True).returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("the bench's RabbitMQ node did not start within 60 s (see {}/server.log)".format(base))


def stop_node(base):
    """Kill every process of the namespace by PID, then remove it and the node's files."""
    pids = subprocess.run(["ip", "netns", "pids", NETNS], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4, help="users of the site, each with a vhost of its own")
    parser.add_argument("--runs", type=int, default=5, help="converged reads each way")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (a network namespace)")
    base = tempfile.mkdtemp(prefix="rmqbench-")
    # The module runs "rabbitmqctl": a wrapper on PATH runs it in the namespace, with the node's cookie.
    wrapper = os.path.join(base, "bin")
    os.makedirs(wrapper)
    with open(os.path.join(wrapper, "rabbitmqctl"), "w") as fh:
        fh.write("#!/bin/sh\nexec ip netns exec {} env {} {}/rabbitmqctl \"$@\"\n".format(
            NETNS, " ".join("{}={}".format(k, v) for k, v in node_env(base).items()), RABBIT_BIN))
    os.chmod(os.path.join(wrapper, "rabbitmqctl"), 0o755)
    os.environ["PATH"] = wrapper + ":" + os.environ["PATH"]
    rabbit = load_module("_modules/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_bench")
    try:
        print("==> starting a RabbitMQ node in namespace {}".format(NETNS), flush=True)
        start_node(base)
        users = {"svc{}".format(i): {"password": "bench-password-{}".format(i), "tags": [], "vhost": "/v{}".format(i)}
                 for i in range(args.users)}
        policy = {"pattern": "^q", "apply-to": "queues", "priority": 1, "definition": {"queue-mode": "default"}, "vhost": "/v0"}
        model = {"rabbitmq": {"users": users, "policies": {"ha": policy}}}
        rabbit.ensure_accounts(model)  # create them
        export = rabbit._export_definitions

        def questions():
            raise CommandExecutionError("the bench's baseline: one question per rabbitmqctl")
        figures = {"export_definitions (0.7.18)": [], "one rabbitmqctl per question (until 0.7.17)": []}
        for run in range(args.runs):
            for label, reader in zip(figures, (export, questions)):
                rabbit._export_definitions = reader
                started, cpu = time.monotonic(), children_cpu()
                changes = rabbit.ensure_accounts(model, test=True)
                wall, used = time.monotonic() - started, children_cpu() - cpu
                if changes:
                    raise SystemExit("a converged read found changes ({}): the bench measures nothing".format(sorted(changes)))
                figures[label].append((wall, used))
                print("run {} {}: {:.2f} s, rabbitmqctl CPU {:.2f} s".format(run + 1, label, wall, used), flush=True)
        print("\nconverged accounts read, {} users, {} vhosts, 1 policy; median of {} runs".format(
            args.users, args.users, args.runs))
        print("| way | wall (s) | rabbitmqctl CPU (s) |\n| --- | --- | --- |")
        for label, runs in figures.items():
            print("| {} | {:.2f} | {:.2f} |".format(label, statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)))
        new, old = figures.values()
        print("ratio (0.7.18 / until 0.7.17): wall {:.2f}, CPU {:.2f}".format(
            statistics.median(w for w, _ in new) / statistics.median(w for w, _ in old),
            statistics.median(c for _, c in new) / statistics.median(c for _, c in old)))
    finally:
        stop_node(base)


if __name__ == "__main__":
    main()
