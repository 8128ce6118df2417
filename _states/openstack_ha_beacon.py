"""
Configure one beacon on the minion, persistently, with honest ``changes``.

:depends: Salt's ``beacons`` execution module.

.. code-block:: yaml

    backends-beacon:
      openstack_ha_beacon.configured:
        - name: openstack_ha_backends
        - config:
          - interval: 1
          - targets: [...]

Salt's own ``beacon.present`` reports no changes when it adds a beacon; this one always says
what it did, honours ``test=True`` and saves the configuration (``beacons.conf``) so it
survives a minion restart.
"""

__virtualname__ = "openstack_ha_beacon"


def __virtual__():
    return __virtualname__


def configured(name, config):
    """Ensure beacon ``name`` runs with ``config`` (a list of one-key mappings)."""
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    current = __salt__["beacons.list"](return_yaml=False, include_opts=True, include_pillar=False).get(name)
    if current == config:
        ret["comment"] = "beacon {} is configured".format(name)
        return ret
    verb = "added" if current is None else "modified"
    ret["changes"] = {name: verb}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "beacon {} would have been {}".format(name, verb)
        return ret
    result = __salt__["beacons.add" if current is None else "beacons.modify"](name, config)
    if not result.get("result"):
        ret.update(result=False, changes={}, comment="beacon {} could not be {}: {}".format(name, verb, result.get("comment")))
        return ret
    saved = __salt__["beacons.save"]()
    if not saved.get("result"):
        ret.update(result=False, comment="beacon {} {} but not saved: {}".format(name, verb, saved.get("comment")))
        return ret
    ret["comment"] = "beacon {} {} and saved".format(name, verb)
    return ret
