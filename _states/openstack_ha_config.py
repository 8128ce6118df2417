"""
A service's configuration file, checked by the service's own program also under ``test=True``.

:depends: Salt's ``file.managed`` state and ``file.get_managed``; the checking program
    (``haproxy -c``, ``keepalived -t``).

Salt's ``file.managed`` runs ``check_cmd`` only on a real run: its test branch returns
before, so a configuration HAProxy or keepalived would reject shows as "would change" in a
dry run and fails on the real one. Here a dry run renders the candidate to a temporary
file, runs the same check on it, and fails with the program's own message when it is
rejected; otherwise (and on every real run) it is ``file.managed`` itself, ``check_cmd``
included, so the running configuration is never replaced by one the program rejects.

.. code-block:: yaml

    /etc/haproxy/haproxy.cfg:
      openstack_ha_config.managed:
        - source: salt://openstack_ha/files/haproxy.cfg.jinja
        - check: /usr/sbin/haproxy -c -f
        - context: {...}
"""

import os
import shlex
import tempfile

__virtualname__ = "openstack_ha_config"


def __virtual__():
    return __virtualname__


def _render(name, source, template, context, user, group, mode):
    """The candidate file rendered to a temporary path: (path, None) or (None, why)."""
    sfn, _, comment = __salt__["file.get_managed"](
        name=name, template=template, source=source, source_hash="", source_hash_name=None,
        user=user, group=group, mode=mode, attrs=None, saltenv=__env__, context=context, defaults=None)
    if comment or not sfn:
        return None, comment or "nothing rendered"
    return sfn, None


def _check(check_cmd, path):
    """Run ``check_cmd PATH``: (True, output) when it accepts the file."""
    proc = __salt__["cmd.run_all"](shlex.split(check_cmd) + [path], python_shell=False, ignore_retcode=True)
    output = "\n".join(x for x in (proc.get("stdout"), proc.get("stderr")) if x).strip()
    return proc["retcode"] == 0, output.replace(path, "<candidate>")


def managed(name, source, check, template="jinja", context=None, user=None, group=None, mode=None, **kwargs):
    """
    Manage ``name`` from the Jinja template ``source`` like ``file.managed`` with
    ``check_cmd``; under ``test=True`` the candidate is checked too, and a rejected one fails
    the dry run with the program's message (the live file untouched either way).

    name
        the configuration file.
    source
        the template (``salt://...``), rendered by ``template`` (``jinja``) with ``context``.
    check
        the command that checks a candidate, the file's path appended (e.g.
        ``/usr/sbin/haproxy -c -f``): ``file.managed``'s ``check_cmd``. (Not called
        ``check_cmd`` here: Salt would also run a state argument of that name as its global
        requisite, without the file.)
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if __opts__["test"]:
        path, why = _render(name, source, template, context, user, group, mode)
        if path is None:
            return dict(ret, result=False, comment="could not render {}: {}".format(source, why))
        try:
            ok, output = _check(check, path)
        finally:
            if os.path.dirname(os.path.abspath(path)).startswith(tempfile.gettempdir()):
                try:
                    os.remove(path)
                except OSError:
                    pass
        if not ok:
            return dict(ret, result=False, comment="the new {} would be rejected by `{}`; the running one stays: {}".format(
                name, shlex.split(check)[0], output))
    ret = __states__["file.managed"](name=name, source=source, template=template, context=context, user=user, group=group,
                                     mode=mode, check_cmd=check, **kwargs)
    if __opts__["test"] and ret.get("result") is None:
        ret["comment"] = "{} ({} accepts it)".format(ret.get("comment", ""), shlex.split(check)[0]).strip()
    return ret
