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

import os
import re
import time

from salt.exceptions import CommandExecutionError

ENABLED_PLUGINS = "/etc/rabbitmq/enabled_plugins"

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
            return name, __salt__["openstack_ha_rabbitmq.peer_running_nodes"](name, timeout=timeout)
        except CommandExecutionError:
            continue
    return None, []


def member(name, timeout=180):
    """
    Ensure this node's RabbitMQ runs and is a member of the site's one cluster.

    name
        this node's controller id.
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    model = __salt__["openstack_ha.model"](secrets=True)
    me_node = __salt__["openstack_ha_rabbitmq.node_name"](name)
    status = __salt__["openstack_ha_rabbitmq.cluster_status"](timeout=60)
    started = False
    if not status["running"] and __salt__["openstack_ha_rabbitmq.vm_alive"]():
        # Its VM runs but did not answer (busy, or still starting): wait for it, change nothing.
        try:
            status = __salt__["openstack_ha_rabbitmq.wait_running"](timeout)
        except CommandExecutionError as exc:
            ret.update(result=False, comment="RabbitMQ runs on {} but does not answer: {}".format(name, exc))
            return ret
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
    model = __salt__["openstack_ha.model"](secrets=True)
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
    rabbitmq, mode 0400. The value never appears in the output.

    Before RabbitMQ first starts, the file is written. A changed cookie on a running cluster
    is rolled out node by node without a restart (``openstack_ha_rabbitmq.roll_cookie``):
    every running member gets the new file and switches its running VM to it, the links
    between nodes stay up, and the state checks afterwards that the cluster is whole and
    answers with the new cookie. A node that was down at the time takes the new file when the
    state is applied there, before it starts again.
    """
    import os

    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    model = __salt__["openstack_ha.model"](secrets=True)
    wanted = model["rabbitmq"]["cookie"]
    try:
        current = __utils__["openstack_ha_files.read_nofollow"](name)
    except OSError as exc:
        ret.update(result=False, comment="refusing to touch the Erlang cookie: {} is not a regular file ({})".format(name, exc))
        return ret
    current = current.strip() if current is not None else None
    stat = os.lstat(name) if current is not None else None
    mode_ok = stat is not None and (stat.st_mode & 0o777) == 0o400
    if current == wanted and mode_ok:
        ret["comment"] = "the Erlang cookie is the pillar's"
        return ret
    before = __salt__["openstack_ha_rabbitmq.cluster_status"](timeout=10) if current != wanted else {"running": False}
    if before["running"]:
        return _roll_cookie(ret, name, wanted, before)
    ret["changes"] = {name: "cookie written" if current != wanted else "mode set to 0400"}
    if __opts__["test"]:
        ret.update(result=None, comment="the Erlang cookie would be written")
        return ret
    import pwd

    owner = pwd.getpwnam("rabbitmq")
    __utils__["openstack_ha_files.write_atomic"](name, wanted, mode=0o400, uid=owner.pw_uid, gid=owner.pw_gid)
    ret["comment"] = "the Erlang cookie was written"
    return ret


def _roll_cookie(ret, name, wanted, before):
    """The running-cluster half of :func:`cookie`: roll ``wanted`` out, then verify that this
    node answers with it and still sees every node that ran before."""
    running = before["running_nodes"]
    if __opts__["test"]:
        ret["changes"] = {name: "new cookie would be rolled out to {} (running, no restart)".format(", ".join(running))}
        ret.update(result=None, comment="the Erlang cookie would be rolled out node by node")
        return ret
    try:
        switched = __salt__["openstack_ha_rabbitmq.roll_cookie"](wanted, name)
    except CommandExecutionError as exc:
        ret.update(result=False, comment="Erlang cookie not rolled out: {}".format(exc))
        return ret
    ret["changes"] = {name: "new cookie rolled out to {} (running, no restart)".format(", ".join(sorted(switched)))}
    after = __salt__["openstack_ha_rabbitmq.cluster_status"](timeout=15)
    if not after["running"] or sorted(after["running_nodes"]) != sorted(running):
        ret.update(result=False, comment="the new Erlang cookie was rolled out, but the cluster now answers {}: {}".format(
            "without" if not after["running"] else "with running nodes", after.get("reason") or ", ".join(after["running_nodes"])))
        return ret
    ret["comment"] = "the Erlang cookie was rolled out node by node ({}); the cluster stayed whole".format(", ".join(sorted(switched)))
    return ret


def plugin_enabled(name, plugins_file=ENABLED_PLUGINS, listener=None):
    """
    Ensure RabbitMQ plugin ``name`` is enabled. Read from the node's enabled-plugins file (an
    Erlang list, ``[rabbitmq_prometheus].``): listed there, it is enabled, and nothing runs
    (``rabbitmq-plugins list`` starts an Erlang VM: 15-20 s of a converged apply on a busy
    host). Otherwise ``rabbitmq-plugins enable NAME``: on a running node online (its listener
    takes the configured address at the next restart, unless ``listener`` is given), before
    the first start offline.

    listener
        ``{port, ip}``: set as the plugin's ``tcp_config`` in a running node's VM before it is
        enabled online, so that its HTTP listener binds there at once and not on every address
        (``rabbitmq.conf`` is read only at start). Not needed for a node that is not running.
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    try:
        with open(plugins_file) as fh:
            listed = set(re.findall(r"[A-Za-z0-9_]+", fh.read()))
    except FileNotFoundError:
        listed = set()
    except OSError as exc:
        ret.update(result=False, comment="cannot read {}: {}".format(plugins_file, exc))
        return ret
    if name in listed:
        ret["comment"] = "plugin {} is enabled ({})".format(name, plugins_file)
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes={name: "enable"}, comment="plugin {} would be enabled".format(name))
        return ret
    try:
        if listener and __salt__["openstack_ha_rabbitmq.vm_alive"]():
            __salt__["openstack_ha_rabbitmq.set_listener"](name, listener["ip"], listener["port"])
        __salt__["rabbitmq.enable_plugin"](name)
    except CommandExecutionError as exc:
        ret.update(result=False, comment="plugin {} not enabled: {}".format(name, exc))
        return ret
    if not os.path.exists(plugins_file):
        ret.update(result=False, comment="rabbitmq-plugins enable {} left no {}".format(name, plugins_file))
        return ret
    ret.update(changes={name: "enabled"}, comment="plugin {} enabled".format(name))
    return ret
