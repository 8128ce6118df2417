"""
Keep a controller service running, judged by its own pidfile, and reload it on change.

:depends: the ``openstack_ha`` execution module; Salt's ``service`` module.

.. code-block:: yaml

    haproxy-running:
      openstack_ha_service.running:
        - name: haproxy
        - pidfile: /run/haproxy.pid
        - reload_function: openstack_ha_haproxy.reload
        - reload_kwargs: {socket_path: /run/haproxy/admin.sock}
        - watch:
          - file: haproxy-config

Why not ``service.running``: without systemd, Salt judges a SysV service whose init script has
no ``status`` (keepalived's) by searching process names, which finds other hosts' daemons
wherever PIDs are shared (containers, the lab). And HAProxy must save its server state before
a reload, so a runtime drain survives it: ``reload_function`` does that.
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_service"


def __virtual__():
    if "openstack_ha.live_pid" not in __salt__:
        return (False, "openstack_ha execution module not loaded")
    return __virtualname__


def running(name, pidfile, enable=True, reload_function=None, reload_kwargs=None, prepare_function=None, prepare_kwargs=None):
    """
    Ensure service ``name`` runs: a live process in ``pidfile``. Starts it through Salt's
    service module when it does not, after ``prepare_function`` (given ``prepare_kwargs``)
    when one is named (HAProxy: prune the saved server state against the new configuration).
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    if __salt__["openstack_ha.live_pid"](pidfile) is not None:
        ret["comment"] = "{} is running".format(name)
        return ret
    ret["changes"] = {name: "started"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "{} would have been started".format(name)
        return ret
    if enable and not __salt__["service.enabled"](name):
        __salt__["service.enable"](name)
    if prepare_function:
        try:
            __salt__[prepare_function](**(prepare_kwargs or {}))
        except CommandExecutionError as exc:
            ret.update(result=False, changes={}, comment="{} not started: {}".format(name, exc))
            return ret
    __salt__["service.start"](name)
    if __salt__["openstack_ha.live_pid"](pidfile) is None:
        ret.update(result=False, changes={}, comment="{} failed to start (no live process in {}); see its log".format(name, pidfile))
        return ret
    ret["comment"] = "{} started".format(name)
    return ret


def mod_watch(name, pidfile, enable=True, reload_function=None, reload_kwargs=None, prepare_function=None, prepare_kwargs=None, **kwargs):
    """
    React to a watched change: start the service if it is down, otherwise reload it with
    ``reload_function`` (given ``reload_kwargs``) or the service module's reload.
    """
    if __salt__["openstack_ha.live_pid"](pidfile) is None:
        return running(name, pidfile, enable=enable, prepare_function=prepare_function, prepare_kwargs=prepare_kwargs)
    ret = {"name": name, "result": True, "comment": "", "changes": {name: "reloaded"}}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "{} would have been reloaded{}".format(name, " (server state saved first)" if reload_function else "")
        return ret
    try:
        if reload_function:
            info = __salt__[reload_function](**(reload_kwargs or {}))
            ret["comment"] = "{} reloaded: {}".format(name, info)
        elif __salt__["service.reload"](name):
            ret["comment"] = "{} reloaded".format(name)
        else:
            raise CommandExecutionError("the init script's reload failed")
    except CommandExecutionError as exc:
        ret.update(result=False, changes={}, comment="{} reload failed: {}".format(name, exc))
    return ret
