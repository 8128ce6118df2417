"""
Answers the master can believe: a controller's answer signed with its own Salt minion key.

:depends: ``cryptography`` (a Salt dependency); the minion's key pair in ``pki_dir``.

Why: a return read off the master's event bus is not proof of who sent it (any accepted
minion can put ``salt/job/<jid>/ret/<id>`` events there), and Salt 3008 stores a return in
its job cache under a ``resource_id`` the minion chooses. The remediation runner asks every
question through :func:`call` with a fresh random ``nonce``; the answer comes back as a JSON
body naming this minion, the nonce and the function, plus an RSA signature made with this
minion's private key. The runner checks it against the public key the master accepted for
the controller it believes answered: nothing else can produce it, and an old answer cannot
be replayed (the nonce differs each time).
"""

import base64
import json
import os
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "openstack_ha_signed"

# Only the questions and actions of the openstack_ha runner go through here.
ALLOWED = frozenset({
    "openstack_ha.controller_report",
    "openstack_ha_probe.service_view",
    "openstack_ha_probe.vips_held",
    "openstack_ha_haproxy.set_server_state",
    "openstack_ha_haproxy.set_servers_state",
    "openstack_ha_rabbitmq.report",
    "openstack_ha_rabbitmq.quick_report",
    "openstack_ha_rabbitmq.restart_app",
    "openstack_ha_rabbitmq.start",
    "openstack_ha_rabbitmq.start_unless_busy",
    "openstack_ha_galera.local_status",
    "openstack_ha_galera.recover_position",
    "openstack_ha_galera.stop",
    "openstack_ha_galera.write_grastate",
    "openstack_ha_galera.start",
    "openstack_ha_maintenance.enter",
    "openstack_ha_maintenance.leave",
    "openstack_ha_maintenance.restart",
    "openstack_ha_rabbitmq.forget_node",
})

# The minion's parsed private key, by path: (file mtime, key). Parsing it (with its checks)
# costs tens of milliseconds; Salt 3008 executes this file again for every job in the same
# module object, so the cache is taken over from the previous execution.
_KEY = globals().get("_KEY") or {}


def __virtual__():
    import importlib.util

    if importlib.util.find_spec("cryptography") is None:
        return (False, "openstack_ha_signed: the cryptography package is missing")
    return __virtualname__


def body(minion_id, nonce, fun, answer, ran=None):
    """The exact bytes that are signed: canonical JSON of who, which question, what answer
    and, with ``ran`` (``[began, ended]``, epoch seconds), when this controller ran it (the
    master splits an action's time with it: delivery, run, return).

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_signed.body <minion_id> <nonce> <fun> <answer>
    """
    data = {"id": minion_id, "nonce": nonce, "fun": fun, "answer": answer}
    if ran is not None:
        data["ran"] = [round(float(t), 4) for t in ran]
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


def _private_key():
    from cryptography.hazmat.primitives import serialization

    path = os.path.join(__opts__["pki_dir"], "minion.pem")
    mtime = os.path.getmtime(path)
    cached = _KEY.get(path)
    if cached is None or cached[0] != mtime:
        with open(path, "rb") as fh:
            cached = _KEY[path] = (mtime, serialization.load_pem_private_key(fh.read(), password=None))
    return cached[1]


def sign(data):
    """An RSA PKCS#1 v1.5 SHA-256 signature of ``data`` (bytes) with this minion's key, base64.

    CLI Example:

    .. code-block:: bash

        salt '*ctrl*' openstack_ha_signed.sign <data>
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return base64.b64encode(_private_key().sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def call(fun, args=None, kwargs=None, nonce=None):
    """
    Run ``fun`` (one of :data:`ALLOWED`) with ``args`` and ``kwargs``; return its answer
    signed: ``{"body": json text, "sig": base64}`` (see :func:`body`).

    A function that raises is answered as ``{"error": message}`` inside the signed body, so the
    master can tell "this controller answered with an error" from "no answer". The body also
    says when the function began and ended here (``ran``).

    CLI Example:

    .. code-block:: bash

        salt lab-ctrl1 openstack_ha_signed.call openstack_ha_probe.vips_held nonce=abc
    """
    if fun not in ALLOWED:
        raise CommandExecutionError("openstack_ha_signed: {!r} is not a function the runner asks".format(fun))
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
        raise CommandExecutionError("openstack_ha_signed: a nonce of 16 to 128 characters is required")
    began = time.time()
    try:
        answer = __salt__[fun](*(args or []), **(kwargs or {}))
    except CommandExecutionError as exc:
        answer = {"error": str(exc)}
    data = body(__opts__["id"], nonce, fun, answer, ran=(began, time.time()))
    return {"body": data.decode(), "sig": sign(data)}
