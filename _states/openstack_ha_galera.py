"""
Galera membership and accounts for a controller, driven by the openstack_ha model.

.. code-block:: yaml

    galera-member:
      openstack_ha_galera.member:
        - name: lab-ctrl1

    galera-users:
      openstack_ha_galera.users:
        - name: openstack
        - require:
          - openstack_ha_galera: galera-member

``member`` starts this node so that there is exactly one cluster: it joins a running
Primary component when there is one, bootstraps a new cluster only on the first node and
only when every node answered and none holds Galera data, and otherwise waits (bounded by
``galera:startup_timeout``) or refuses with the reason (a full-cluster outage with data is
``salt-run openstack_ha.galera_recover``'s job, never a state's).
"""

import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_galera"


def __virtual__():
    if "openstack_ha_galera.plan" not in __salt__:
        return (False, "openstack_ha_galera execution module not loaded")
    return __virtualname__


def _stagger(model, name):
    """Seconds this node lets the nodes before it in the Galera list go first (4 s each)."""
    ids = __salt__["openstack_ha_galera.node_ids"](model)
    return 4.0 * ids.index(name) if name in ids else 0.0


def member(name, timeout=None, interval=2):
    """
    Ensure this node runs in the site's one Galera cluster.

    name
        this node's controller id (for the report).
    timeout
        seconds to wait for a cluster to form or for another node to bootstrap it
        (default ``galera:startup_timeout``).
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    model = __salt__["openstack_ha.model"](secrets=True)
    started = time.monotonic()
    deadline = started + float(timeout or model["galera"]["startup_timeout"])
    seen = []
    joined_once = False
    while True:
        plan = __salt__["openstack_ha_galera.plan"](model)
        action, reason = plan["action"], plan["reason"]
        if not seen or seen[-1] != reason:
            seen.append(reason)
        if action == "ok":
            ret["comment"] = "{}: {}".format(name, reason)
            return ret
        if action == "refuse":
            ret.update(result=False, comment="{}: refusing to start MariaDB: {}".format(name, reason))
            return ret
        if __opts__["test"]:
            ret.update(result=None, comment="{}: would {}: {}".format(name, action if action != "wait" else "wait and then join", reason),
                       changes={name: action if action != "wait" else "join"})
            return ret
        if action == "join" and not joined_once:
            # Nodes applied together would all ask the one bootstrapped node for a state
            # transfer at once; each waits a little longer than the node before it.
            joined_once = True
            time.sleep(_stagger(model, name))
            continue
        if action in ("join", "bootstrap"):
            try:
                status = __salt__["openstack_ha_galera.start"](bootstrap=action == "bootstrap", model=model)
                if action == "bootstrap":
                    # Joiners wait for the SST account before they ask for a state transfer.
                    __salt__["openstack_ha_galera.ensure_users"](model, only_sst=True)
            except CommandExecutionError as exc:
                if action == "bootstrap" or time.monotonic() >= deadline:
                    ret.update(result=False, comment="{}: {} failed: {}".format(name, action, exc))
                    return ret
                # A join can fail when another node asked the same donor at the same moment:
                # look again (the plan waits out a transfer in progress) and retry.
                seen.append("join failed ({}), retrying".format(exc))
                time.sleep(interval + _stagger(model, name))
                continue
            ret["changes"] = {name: {"action": "bootstrapped a new cluster" if action == "bootstrap" else "joined",
                                     "state": status.get("state"), "cluster_size": status.get("cluster_size"),
                                     "cluster_uuid": status.get("cluster_uuid")}}
            ret["comment"] = "{}: {}".format(name, reason)
            return ret
        if time.monotonic() >= deadline:
            ret.update(result=False, comment="{}: gave up after waiting {:.0f} s (galera:startup_timeout): {}".format(
                name, time.monotonic() - started, " -> ".join(seen)))
            return ret
        time.sleep(interval)


def users(name):
    """
    Ensure the model's databases and accounts (SST, monitoring, root, the OpenStack
    services') exist with the pillar's passwords and grants. Runs on a node in the Primary
    component; the statements replicate. ``changes`` names accounts, never passwords.
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    model = __salt__["openstack_ha.model"](secrets=True)
    try:
        changes = __salt__["openstack_ha_galera.ensure_users"](model, test=__opts__["test"])
    except CommandExecutionError as exc:
        ret.update(result=False, comment="accounts not ensured: {}".format(exc))
        return ret
    if changes and __opts__["test"]:
        ret.update(result=None, changes=changes, comment="{} account change(s) would be made".format(len(changes)))
    elif changes:
        ret.update(changes=changes, comment="{} account change(s) made".format(len(changes)))
    else:
        ret["comment"] = "databases and accounts are as the pillar says"
    return ret
