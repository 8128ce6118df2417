"""The lab's syslog: a /dev/log socket whose lines go to one file, each stamped with the
controller that sent it.

The lab's controllers share the host's /dev (only /etc, /var/lib, /var/log and /run are their
own), and this machine runs no syslog daemon, so keepalived's state changes ("Entering MASTER
STATE", "Script ... failed") were lost: a VIP that moved during a test left no reason behind.
The catcher binds /dev/log only where nothing else does (a host's own syslog is never
replaced), reads the sender's PID from the kernel's credentials on each datagram
(``SO_PASSCRED``), and names the controller by that process's hostname (its UTS namespace's
``/etc/hostname``, read through ``/proc/PID/root``).

``python -m lab.syslog_catcher LOGFILE PIDFILE [--seconds N]``: runs until SIGTERM, until the
directory of LOGFILE is gone (the lab was taken down), or N seconds (a bound, default 12 h).
"""

import argparse
import os
import signal
import socket
import stat
import struct
import sys
import time

DEV_LOG = "/dev/log"
_CRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


def sender_name(pid, cache):
    """The hostname of process ``pid`` (the lab controller it runs in), "host" for the host's
    own, "pid N" when the process is gone; cached per PID."""
    if pid in cache:
        return cache[pid]
    try:
        with open("/proc/%d/root/etc/hostname" % pid) as fh:
            name = fh.read().strip() or "pid %d" % pid
    except OSError:
        return "pid %d" % pid
    if not name.startswith("lab-"):
        name = "host"
    cache[pid] = name
    return name


def message_text(data):
    """A syslog datagram without its ``<priority>`` prefix and timestamp, as text."""
    text = data.decode("utf-8", errors="replace").rstrip("\n\0")
    if text.startswith("<") and ">" in text[:5]:
        text = text[text.index(">") + 1:]
    # "Dec  6 03:40:01 " (RFC 3164 timestamp, 16 characters) when the sender wrote one
    if len(text) > 16 and text[3] == " " and text[6] == " " and text[9] == ":" and text[12] == ":":
        text = text[16:]
    return text


def stamp(when):
    """``when`` (epoch seconds) as HH:MM:SS.mmm, local time."""
    return time.strftime("%H:%M:%S", time.localtime(when)) + ".%03d" % int((when % 1) * 1000)


def catch(log_path, seconds):
    """Bind /dev/log and write every datagram to ``log_path`` until told to stop. Returns 0, or
    1 (with a message) when /dev/log already exists."""
    if os.path.lexists(DEV_LOG):
        print("syslog_catcher: {} exists (a syslog runs here); not caught".format(DEV_LOG), file=sys.stderr)
        return 1
    directory = os.path.dirname(os.path.abspath(log_path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(DEV_LOG)
    os.chmod(DEV_LOG, 0o666)
    ours = os.stat(DEV_LOG).st_ino
    sock.settimeout(1.0)
    try:
        os.nice(-5)  # drained before the senders' queue fills
    except OSError:
        pass
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    names, limit = {}, time.monotonic() + seconds
    try:
        with open(log_path, "a", buffering=1) as out:
            while not stop and time.monotonic() < limit and os.path.isdir(directory):
                try:
                    data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(_CRED.size))
                except socket.timeout:
                    continue
                except InterruptedError:
                    continue
                pid = 0
                for level, kind, payload in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _CRED.size:
                        pid = _CRED.unpack(payload[:_CRED.size])[0]
                text = message_text(data)
                if text.startswith("haproxy[") and '"' in text:
                    continue  # a request's log line (option httplog); HAProxy's events have no quotes
                name = sender_name(pid, names) if pid else "?"
                out.write("{} {} {}\n".format(stamp(time.time()), name, text))
                if len(names) > 4096:
                    names.clear()
    finally:
        sock.close()
        try:
            st = os.lstat(DEV_LOG)
            if st.st_ino == ours and stat.S_ISSOCK(st.st_mode):
                os.unlink(DEV_LOG)
        except OSError:
            pass
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("pidfile")
    parser.add_argument("--seconds", type=float, default=12 * 3600)
    args = parser.parse_args(argv)
    with open(args.pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    return catch(args.log, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
