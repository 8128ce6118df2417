"""VIP detection compares addresses parsed: a pillar may spell an address any way it likes."""

from tests.conftest import load_module

probe = load_module("_modules/openstack_ha_probe.py", "openstack_ha_probe")

IP_OUTPUT = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.213.0.11/24 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.213.0.100/24 scope global secondary eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet6 fd00:213::100/64 scope global deprecated \\       valid_lft forever preferred_lft 0sec
2: eth0    inet6 fd00:213::101/64 scope global dadfailed tentative \\       valid_lft forever preferred_lft 0sec
2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever
"""


def test_addresses_are_found_in_any_spelling_and_a_failed_duplicate_is_not_held():
    held = probe.addresses_in(IP_OUTPUT)
    ips = {str(ip) for ip in held}
    assert {"10.213.0.100", "fd00:213::100", "10.213.0.11"} <= ips
    assert "fd00:213::101" not in ips  # duplicate address detection failed: someone else has it
    wanted = {"public": "10.213.0.100", "public/ipv6": "FD00:0213:0000::0100", "internal": "10.213.0.101"}
    assert sorted(k for k, a in wanted.items() if probe._ip(a) in held) == ["public", "public/ipv6"]


def test_the_netlink_dump_lists_what_ip_lists():
    # The VIP beacon asks every second: one rtnetlink dump, not an `ip` process. Both read this
    # host's real interfaces here.
    import subprocess

    listed = probe.addresses_in(subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout)
    assert probe.netlink_addresses() == listed
    assert probe._ip("127.0.0.1") in listed
