"""
How late the VIP holder's VRRP adverts are in the lab, while anything runs (the whole suite, a
benchmark): the margin a given advert_int leaves.

Every VRRP advert is seen as it leaves its controller (a packet socket on the host ends of the
lab's veths, ``oha-*-h``, with a BPF filter for IP protocol 112 and the kernel's timestamps),
per sender, VRID, family and peer. Written to OUT as lines: every gap over 0.15 s between two
adverts of one sender, every change of sender of a VRID (a VIP that moved) and every priority-0
advert (a holder letting go); every 30 s a summary with the largest gaps. A gap over 5 s is a
sender that stopped being the holder, not a late advert. Passive: it sends nothing.

Usage: python3 bench/vrrp_gaps.py OUT [--seconds 5400]   (root; run beside the suite or a bench)
"""
import argparse
import ctypes
import json
import os
import socket
import struct
import time

SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
ETH_P_ALL = 0x0003

# ip proto 112 or ip6 proto 112 (next header, no extension headers)
BPF = [
    (0x28, 0, 0, 12),          # ldh [12]
    (0x15, 0, 2, 0x0800),      # jeq IPv4 ? next : +2
    (0x30, 0, 0, 23),          # ldb [23]
    (0x15, 3, 4, 112),         # jeq 112 ? accept : reject
    (0x15, 0, 3, 0x86dd),      # jeq IPv6 ? next : reject
    (0x30, 0, 0, 20),          # ldb [20]
    (0x15, 0, 1, 112),         # jeq 112 ? accept : reject
    (0x06, 0, 0, 0x40000),     # accept
    (0x06, 0, 0, 0),           # reject
]


def attach(sock):
    """Attach the classic BPF program ``BPF`` to ``sock`` (the kernel copies it)."""
    insns = b"".join(struct.pack("HBBI", *i) for i in BPF)
    buf = ctypes.create_string_buffer(insns)
    prog = struct.pack("HL", len(BPF), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=3 * 3600)
    args = ap.parse_args()
    try:
        os.nice(-10)
    except OSError:
        pass
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    attach(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(1.0)
    last, holder, worst, count = {}, {}, {}, 0
    limit = time.monotonic() + args.seconds
    next_summary = time.monotonic() + 30
    with open(args.out, "a", buffering=1) as out:
        out.write("%s start\n" % time.strftime("%H:%M:%S"))
        while time.monotonic() < limit:
            try:
                data, anc, _, addr = sock.recvmsg(256, 64)
            except socket.timeout:
                data = None
            if data is not None:
                ifname, _proto, pkttype = addr[0], addr[1], addr[2]
                if ifname.startswith("oha") and ifname.endswith("-h") and pkttype != 4:
                    ts = time.time()
                    for level, kind, payload in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack("qq", payload[:16])
                            ts = sec + nsec / 1e9
                    eth = struct.unpack("!H", data[12:14])[0]
                    if eth == 0x0800:
                        ihl = (data[14] & 0x0F) * 4
                        dst = socket.inet_ntop(socket.AF_INET, data[30:34])
                        vr = data[14 + ihl:14 + ihl + 3]
                        fam = 4
                    else:
                        dst = socket.inet_ntop(socket.AF_INET6, data[38:54])
                        vr = data[54:57]
                        fam = 6
                    if len(vr) == 3:
                        count += 1
                        vrid, prio = vr[1], vr[2]
                        key = (ifname, vrid, fam, dst)
                        stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + ".%03d" % int(ts % 1 * 1000)
                        if key in last:
                            gap = ts - last[key]
                            if 0.15 < gap < 5:
                                out.write("%s gap %.3f s %s vrid %d v%d to %s prio %d\n" % (stamp, gap, ifname, vrid, fam, dst, prio))
                            if gap < 5:
                                w = worst.get(key, 0)
                                if gap > w:
                                    worst[key] = gap
                        last[key] = ts
                        hkey = (vrid, fam)
                        if holder.get(hkey) != ifname:
                            out.write("%s sender of vrid %d v%d: %s -> %s (prio %d)\n" % (stamp, vrid, fam, holder.get(hkey), ifname, prio))
                            holder[hkey] = ifname
                        if prio == 0:
                            out.write("%s prio 0 from %s vrid %d v%d\n" % (stamp, ifname, vrid, fam))
            if time.monotonic() > next_summary:
                next_summary = time.monotonic() + 30
                top = sorted(((v, "%s/%d/v%d/%s" % k) for k, v in worst.items()), reverse=True)[:4]
                out.write("%s summary adverts %d worst %s\n" % (time.strftime("%H:%M:%S"), count, json.dumps([(round(v, 3), k) for v, k in top])))


if __name__ == "__main__":
    main()
