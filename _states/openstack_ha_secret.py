"""
Files that hold a secret of the site, written from the model at run time.

:depends: the ``openstack_ha`` execution module; the ``openstack_ha_files`` utils module.

.. code-block:: yaml

    galera-sst-auth:
      openstack_ha_secret.file:
        - name: /etc/mysql/mariadb.conf.d/61-openstack-ha-galera-secrets.cnf
        - kind: galera_sst
        - group: mysql

Why a state of its own: ``file.managed`` with a template gets its values as context, and
``state.show_sls`` (or a failed render) prints that context, secrets included. Here the SLS
names only the file and what kind of secret goes into it; the value is read from the model
when the state runs and never appears in the state's arguments, its output or its changes.
The other configuration files (``haproxy.cfg``, the wsrep settings) then hold no secret and
show their diffs again. Written atomically, owner and mode set before any byte is written,
never through a link.

Kinds: ``galera_sst`` (``wsrep_sst_auth``, a MariaDB option file), ``haproxy_stats`` (the
userlist the stats page authenticates against, an HAProxy configuration file loaded with a
second ``-f``), ``mysqld_exporter`` (the monitor account for Prometheus's mysqld_exporter),
``tls`` (a service's certificate and key, ``service`` names it),
``galera_tls_ca``/``galera_tls_cert``/``galera_tls_key`` (this node's replication TLS).
"""

import grp
import os
import pwd

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_secret"

HEADER = "# Managed by Salt (openstack_ha). Holds a secret of the site: do not copy, do not edit.\n"


def __virtual__():
    if "openstack_ha.model" not in __salt__:
        return (False, "openstack_ha execution module not loaded")
    return __virtualname__


def render(kind, model, service=None):
    """The content of a secret file of ``kind`` from ``model`` (with its secrets). Raises
    CommandExecutionError for an unknown kind or service."""
    if kind == "galera_sst":
        g = model["galera"]
        return HEADER + "[mysqld]\nwsrep_sst_auth = {}:{}\n".format(g["sst_user"], g["sst_password"])
    if kind == "mysqld_exporter":
        g = model["galera"]
        # Quoted: a '#' would start a comment (the validator refuses quotes and backslashes).
        return HEADER + '[client]\nuser = {}\npassword = "{}"\nsocket = /run/mysqld/mysqld.sock\n'.format(
            g["monitor_user"], g["monitor_password"])
    if kind == "haproxy_stats":
        stats = model["haproxy"]["stats"]
        if not stats.get("enabled"):
            return HEADER + "# the stats listener is disabled: no user\n"
        # Quoted: a password may hold '#' or spaces (the validator refuses quotes and backslashes).
        return HEADER + 'userlist openstack_ha_stats\n    user {} insecure-password "{}"\n'.format(stats["user"], stats["password"])
    if kind in ("galera_tls_ca", "galera_tls_cert", "galera_tls_key"):
        tls = model["galera"].get("tls")
        me = (model.get("local") or {}).get("id")
        if not tls or me not in (tls.get("nodes") or {}):
            raise CommandExecutionError("galera:tls has no certificate for {}".format(me))
        value = tls["ca"] if kind == "galera_tls_ca" else tls["nodes"][me]["certificate" if kind == "galera_tls_cert" else "key"]
        return value.strip() + "\n"
    if kind == "tls":
        tls = (model["services"].get(service) or {}).get("tls")
        if not tls:
            raise CommandExecutionError("service {!r} has no tls section".format(service))
        return tls["certificate"].strip() + "\n" + tls["key"].strip() + "\n"
    raise CommandExecutionError("unknown secret file kind {!r}".format(kind))


def file(name, kind, service=None, user="root", group="root", mode="0640", makedirs=False):
    """
    Ensure ``name`` holds the secret file of ``kind`` (see :func:`render`), owned by
    ``user``:``group`` with ``mode``. ``changes`` says what was done, never the content.
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    try:
        wanted = render(kind, __salt__["openstack_ha.model"](secrets=True), service)
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except (CommandExecutionError, KeyError) as exc:
        ret.update(result=False, comment="{}: {}".format(name, exc))
        return ret
    try:
        current = __utils__["openstack_ha_files.read_nofollow"](name)
    except OSError as exc:
        ret.update(result=False, comment="refusing to write {}: it is not a regular file ({})".format(name, exc))
        return ret
    want_mode = int(str(mode), 8)
    if current is not None:
        st = os.lstat(name)
        same_meta = (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (want_mode, uid, gid)
    else:
        same_meta = False
    if current == wanted and same_meta:
        ret["comment"] = "{} holds the wanted secret".format(name)
        return ret
    what = "secret written (content not shown)" if current != wanted else "owner/mode set to {}:{} {}".format(user, group, mode)
    ret["changes"] = {name: what}
    if __opts__["test"]:
        ret.update(result=None, comment="{} would be updated: {}".format(name, what))
        return ret
    directory = os.path.dirname(name)
    if makedirs and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o750)
    try:
        __utils__["openstack_ha_files.write_atomic"](name, wanted, mode=want_mode, uid=uid, gid=gid)
    except OSError as exc:
        ret.update(result=False, changes={}, comment="cannot write {}: {}".format(name, exc))
        return ret
    ret["comment"] = "{}: {}".format(name, what)
    return ret
