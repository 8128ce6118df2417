"""`lab down` leaves no namespace, link, mount or process behind."""

import os

from lab import labctl


def test_lab_down_removes_everything(lab):
    labctl.down()
    assert not [n for n in labctl.run(["ip", "netns", "list"]).stdout.split() if n.startswith("oha-")]
    assert not labctl.link_exists(labctl.BRIDGE)
    assert not any(labctl.link_exists(labctl.netns(n) + "-h") for n, _ in labctl.CONTROLLERS)
    assert labctl.master_pids() == []
    with open("/proc/self/mounts") as fh:
        assert labctl.STATE not in fh.read()
    assert not os.path.exists(labctl.STATE)
    labctl.down()  # idempotent
