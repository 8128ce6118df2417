"""
Keep HAProxy running, and reload it safely when its configuration changes.

:depends: the ``openstack_ha_haproxy`` execution module; Salt's ``service`` module.

.. code-block:: yaml

    haproxy-running:
      openstack_ha_haproxy.running:
        - name: haproxy
        - socket: /run/haproxy/admin.sock
        - state_file: /var/lib/haproxy/server-state
        - pidfile: /run/haproxy.pid
        - watch:
          - file: haproxy-config

Unlike ``service.running`` with ``reload: True``, a watched change here saves the server state
(runtime drains included) before it asks the master process for a seamless reload, so a
backend drained by the remediation loop stays drained across the reload.
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_haproxy"


def __virtual__():
    if "openstack_ha_haproxy.reload" not in __salt__:
        return (False, "openstack_ha_haproxy execution module not loaded")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "comment": "", "changes": {}}


def running(name, socket=None, state_file=None, pidfile=None, enable=True):
    """
    Ensure the HAProxy service ``name`` is running (started through Salt's service module).
    """
    ret = _ret(name)
    if __salt__["openstack_ha_haproxy.master_pid"](pidfile) is not None:
        ret["comment"] = "HAProxy is running"
        return ret
    ret["changes"] = {"haproxy": "started"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "HAProxy would have been started"
        return ret
    if enable and not __salt__["service.enabled"](name):
        __salt__["service.enable"](name)
    if not __salt__["service.start"](name) or __salt__["openstack_ha_haproxy.master_pid"](pidfile) is None:
        ret["changes"] = {}
        ret["result"] = False
        ret["comment"] = "HAProxy failed to start; see its log"
        return ret
    ret["comment"] = "HAProxy started"
    return ret


def mod_watch(name, socket=None, state_file=None, pidfile=None, enable=True, **kwargs):
    """
    React to a changed configuration: start HAProxy if it is down, otherwise save the server
    state and reload seamlessly.
    """
    ret = _ret(name)
    if __salt__["openstack_ha_haproxy.master_pid"](pidfile) is None:
        return running(name, socket=socket, state_file=state_file, pidfile=pidfile, enable=enable)
    ret["changes"] = {"haproxy": "reloaded"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "HAProxy would have been reloaded (server state saved first)"
        return ret
    try:
        info = __salt__["openstack_ha_haproxy.reload"](socket_path=socket, state_file=state_file, pidfile=pidfile)
    except CommandExecutionError as exc:
        ret["changes"] = {}
        ret["result"] = False
        ret["comment"] = "HAProxy reload failed: {}".format(exc)
        return ret
    ret["comment"] = "HAProxy reloaded: server state saved to {saved}, worker {old_worker} -> {new_worker}".format(**info)
    return ret
