"""
Writing files as root in directories another user owns, safely.

A service's own directory (``/var/lib/rabbitmq``, ``/var/lib/mysql``) belongs to that
service's user, who could plant a symlink where root is about to write (the Erlang cookie,
grastate.dat) and have root overwrite any file. These helpers never follow a link: the new
content goes to a fresh file created exclusively (``O_EXCL``, a random name), gets its owner
and mode before any byte is written (a secret is never readable by others, not even for a
moment), and is renamed over the target (a rename replaces a link, it does not follow it).
"""

import os
import tempfile


def write_atomic(path, text, mode=0o600, uid=None, gid=None):
    """
    Replace ``path`` with ``text`` atomically without following links.

    path
        the file to write; its directory must exist.
    mode, uid, gid
        applied to the new file before its content is written (uid/gid: None keeps root's).

    Returns ``path``. Raises OSError when the directory cannot take the new file.
    """
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".openstack-ha", dir=directory)
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        data = text.encode() if isinstance(text, str) else text
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def read_nofollow(path):
    """The text of ``path``, or None when it does not exist. Raises OSError (ELOOP) when
    ``path`` is a symlink: a file root writes is never read through a link either."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, errors="replace") as fh:
        return fh.read()


def remove(path):
    """Remove ``path`` (a link is removed, never followed); True when something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
