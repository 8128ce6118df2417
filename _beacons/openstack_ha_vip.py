"""
Report when this controller gains or loses one of its site's VIPs.

:depends: ``ip`` (iproute2), through ``openstack_ha_probe.vips_held``.

Event tag: ``salt/beacon/<minion id>/openstack_ha_vip/change`` (and ``.../heartbeat``).

Data keys:
    ``kind``: ``change`` or ``heartbeat``;
    ``gained`` / ``lost`` (change only): lists of ``{vip, address, interface}``;
    ``held``: the VIP names this controller holds now;
    ``time``: epoch seconds.

Options (written by the ``openstack_ha.beacons`` state):

.. code-block:: yaml

    beacons:
      openstack_ha_vip:
        - interval: 1
        - heartbeat: 30
        - vips:
            public: {address: 10.0.0.100, interface: eth0}
"""

import time

import salt.utils.beacons

__virtualname__ = "openstack_ha_vip"


def __virtual__():
    return __virtualname__


def validate(config):
    vips = salt.utils.beacons.list_to_dict(config).get("vips")
    if not isinstance(vips, dict) or not vips:
        return False, "openstack_ha_vip: 'vips' must be a mapping of VIP name to {address, interface}"
    return True, "valid"


def beacon(config):
    conf = salt.utils.beacons.list_to_dict(config)
    now = time.time()
    # The same question the runner asks every controller, answered the same way. When `ip`
    # fails this raises (Salt logs it) rather than report every VIP lost.
    held = __salt__["openstack_ha_probe.vips_held"]({name: vip["address"] for name, vip in conf["vips"].items()})
    memory = __context__.setdefault("openstack_ha_vip", {"held": None, "heartbeat": 0})
    events = []
    if memory["held"] is not None and held != memory["held"]:
        describe = lambda names: [dict(conf["vips"][n], vip=n) for n in names]
        events.append({
            "tag": "change", "kind": "change", "held": held, "time": now,
            "gained": describe(sorted(set(held) - set(memory["held"]))),
            "lost": describe(sorted(set(memory["held"]) - set(held))),
        })
    memory["held"] = held
    if now - memory["heartbeat"] >= float(conf.get("heartbeat", 30)):
        memory["heartbeat"] = now
        events.append({"tag": "heartbeat", "kind": "heartbeat", "held": held, "time": now})
    return events
