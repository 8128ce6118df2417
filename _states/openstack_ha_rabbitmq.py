"""
RabbitMQ cluster membership and accounts for a controller, driven by the openstack_ha model.

.. code-block:: yaml

    rabbitmq-member:
      openstack_ha_rabbitmq.member:
        - name: lab-ctrl2

    rabbitmq-accounts:
      openstack_ha_rabbitmq.accounts:
        - name: openstack

``member`` makes the start order irrelevant: every node lists every other node (classic
peer discovery), and a node that came up on its own while a cluster runs elsewhere (it
started before the others could answer) joins that cluster. Only the first node of the list
may stay alone, so two clusters can never both survive.
"""

import json
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_rabbitmq"


def __virtual__():
    if "openstack_ha_rabbitmq.cluster_status" not in __salt__:
        return (False, "openstack_ha_rabbitmq execution module not loaded")
    return __virtualname__


def _peer_cluster(model, me, timeout):
    """The running members as the first peer that answers sees them: (peer node, members)."""
    for node in __salt__["openstack_ha_rabbitmq.node_ids"](model):
        if node == me:
            continue
        name = __salt__["openstack_ha_rabbitmq.node_name"](node)
        try:
            out = __salt__["openstack_ha_rabbitmq.ctl"]("-n", name, "cluster_status", "--formatter", "json", timeout=timeout)
        except CommandExecutionError:
            continue
        data = json.loads(out)
        return name, sorted(data.get("running_nodes") or [])
    return None, []


def member(name, timeout=180):
    """
    Ensure this node's RabbitMQ runs and is a member of the site's one cluster.

    name
        this node's controller id.
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    model = __salt__["openstack_ha.model"]()
    me_node = __salt__["openstack_ha_rabbitmq.node_name"](name)
    status = __salt__["openstack_ha_rabbitmq.cluster_status"]()
    started = False
    if not status["running"]:
        if __opts__["test"]:
            ret.update(result=None, changes={name: "start"}, comment="RabbitMQ would be started on {}".format(name))
            return ret
        try:
            status = __salt__["openstack_ha_rabbitmq.start"](timeout)
        except CommandExecutionError as exc:
            ret.update(result=False, comment=str(exc))
            return ret
        started = True
    ids = __salt__["openstack_ha_rabbitmq.node_ids"](model)
    first = __salt__["openstack_ha_rabbitmq.node_name"](ids[0])
    others_here = [n for n in status["members"] if n != me_node]
    if not others_here and me_node != first:
        # Alone while the site lists other nodes: join the cluster a peer runs, if any.
        deadline = time.monotonic() + timeout
        peer, running = _peer_cluster(model, name, 15)
        while peer is None and time.monotonic() < deadline:
            time.sleep(3)
            peer, running = _peer_cluster(model, name, 15)
        if peer is not None and me_node not in running:
            if __opts__["test"]:
                ret.update(result=None, changes={name: "join " + peer}, comment="{} would join {}'s cluster".format(name, peer))
                return ret
            try:
                status = __salt__["openstack_ha_rabbitmq.join"](peer, timeout)
            except CommandExecutionError as exc:
                ret.update(result=False, comment="{} could not join {}: {}".format(name, peer, exc))
                return ret
            ret["changes"] = {name: {"joined": peer, "members": status["members"]}}
            ret["comment"] = "{} joined the cluster of {}".format(name, peer)
            return ret
    if started:
        ret["changes"] = {name: {"started": True, "members": status["members"]}}
    ret["comment"] = "{} runs in a cluster of {} ({} running)".format(name, len(status["members"]), len(status["running_nodes"]))
    return ret


def accounts(name):
    """Ensure the pillar's vhosts, users, permissions and policies (compared as data)."""
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    model = __salt__["openstack_ha.model"]()
    try:
        changes = __salt__["openstack_ha_rabbitmq.ensure_accounts"](model, test=__opts__["test"])
    except CommandExecutionError as exc:
        ret.update(result=False, comment="RabbitMQ accounts not ensured: {}".format(exc))
        return ret
    if changes:
        ret["changes"] = changes
        ret["result"] = None if __opts__["test"] else True
        ret["comment"] = "{} change(s){}".format(len(changes), " would be made" if __opts__["test"] else " made")
    else:
        ret["comment"] = "vhosts, users, permissions and policies are as the pillar says"
    return ret


def cookie(name):
    """
    Ensure the Erlang cookie at ``name`` is the pillar's (``rabbitmq:cookie``), owned by
    rabbitmq, mode 0400, before RabbitMQ first starts. The value never appears in the output.

    A different cookie on a node whose RabbitMQ runs is not swapped underneath it (the node
    and its CLI would stop understanding each other): the state fails and says how to roll it
    out, one node at a time.
    """
    import os

    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    model = __salt__["openstack_ha.model"]()
    wanted = model["rabbitmq"]["cookie"]
    current = None
    if os.path.exists(name):
        with open(name) as fh:
            current = fh.read().strip()
    stat = os.stat(name) if current is not None else None
    mode_ok = stat is not None and (stat.st_mode & 0o777) == 0o400
    if current == wanted and mode_ok:
        ret["comment"] = "the Erlang cookie is the pillar's"
        return ret
    if current != wanted and __salt__["openstack_ha_rabbitmq.cluster_status"](timeout=10)["running"]:
        ret.update(result=False, comment=(
            "the Erlang cookie in the pillar differs from the one RabbitMQ runs with on {}: change it one node at a "
            "time (stop RabbitMQ on the node, apply openstack_ha.rabbitmq, wait for it to rejoin), never on all nodes "
            "at once".format(__grains__["id"])))
        return ret
    ret["changes"] = {name: "cookie written" if current != wanted else "mode set to 0400"}
    if __opts__["test"]:
        ret.update(result=None, comment="the Erlang cookie would be written")
        return ret
    tmp = name + ".openstack-ha"
    with open(tmp, "w") as fh:
        fh.write(wanted)
    __salt__["file.chown"](tmp, "rabbitmq", "rabbitmq")
    os.chmod(tmp, 0o400)
    os.replace(tmp, name)
    ret["comment"] = "the Erlang cookie was written"
    return ret
