"""`lab down` leaves no namespace, link, mount or process behind."""

import os

from lab import labctl


def test_lab_down_removes_everything(lab):
    labctl.down()
    assert not [n for n in labctl.run(["ip", "netns", "list"]).stdout.split() if n.startswith("oha-")]
    assert not labctl.link_exists(labctl.BRIDGE)
    assert not any(labctl.link_exists(labctl.netns(n) + "-h") for n, _ in labctl.CONTROLLERS)
    assert labctl.master_pids() == []
    # Nor any process still holding one of the lab's files (deleted ones too): a daemon that
    # outlived its killed parent keeps its log open.
    holders = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
               and labctl.alive(int(p)) and labctl.holds_file_under(int(p), labctl.STATE)]
    assert holders == [], [(pid, labctl.run(["ps", "-o", "pid,sid,args", "-p", str(pid)], check=False).stdout) for pid in holders]
    with open("/proc/self/mounts") as fh:
        assert labctl.STATE not in fh.read()
    assert not os.path.exists(labctl.STATE)
    labctl.down()  # idempotent
