"""The saved HAProxy server state against a new configuration (pure logic): HAProxy applies a
saved server's address and ports over the configuration's, so a server whose definition
changed must not be loaded from the old state; every other server keeps its runtime state."""

from tests.conftest import load_module

haproxy = load_module("_modules/openstack_ha_haproxy.py", "openstack_ha_haproxy")

HEADER = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
          "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
          "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
          "srv_check_addr srv_agent_addr srv_agent_port\n")


def state_line(backend, server, address, port, check_port=0, admin=0):
    return "4 {} 1 {} {} 2 {} 1 1 30 15 3 4 6 0 0 0 - {} - 0 {} - - 0".format(backend, server, address, admin, port, check_port)


CONFIG_HEALTH = """
global
    server-state-file /var/lib/haproxy/server-state

listen galera
    bind 10.0.0.101:3306
    mode tcp
    server c1 10.0.0.11:3306 check port 9200 on-marked-down shutdown-sessions
    server c2 10.0.0.12:3306 check port 9200 backup on-marked-down shutdown-sessions  # writer's backup

backend nova
    server c1 10.0.0.11:8774 check
    server c2 10.0.0.12:8774 check
"""


def test_the_configured_servers_with_their_address_port_and_check_port():
    assert haproxy.configured_servers(CONFIG_HEALTH) == {
        ("galera", "c1"): ("10.0.0.11", "3306", "9200"), ("galera", "c2"): ("10.0.0.12", "3306", "9200"),
        ("nova", "c1"): ("10.0.0.11", "8774", None), ("nova", "c2"): ("10.0.0.12", "8774", None)}


def test_an_unchanged_configuration_keeps_every_saved_state_drains_included():
    saved = HEADER + "\n".join([state_line("galera", "c1", "10.0.0.11", 3306, 9200), state_line("galera", "c2", "10.0.0.12", 3306, 9200),
                                state_line("nova", "c1", "10.0.0.11", 8774, admin=8), state_line("nova", "c2", "10.0.0.12", 8774)]) + "\n"
    text, dropped = haproxy.prune_server_state(saved, CONFIG_HEALTH)
    assert dropped == [] and text == saved


def test_a_changed_check_port_address_or_port_or_a_removed_server_is_not_loaded_from_the_old_state():
    saved = HEADER + "\n".join([
        state_line("galera", "c1", "10.0.0.11", 3306, 9200), state_line("galera", "c2", "10.0.0.12", 3306, 9200),
        state_line("nova", "c1", "10.0.0.21", 8774, admin=8),   # the address changed since
        state_line("nova", "c2", "10.0.0.12", 8775),             # the port changed since
        state_line("nova", "c3", "10.0.0.13", 8774)]) + "\n"     # no longer configured
    tcp_check = CONFIG_HEALTH.replace(" check port 9200", " check")
    text, dropped = haproxy.prune_server_state(saved, tcp_check)
    assert sorted(dropped) == ["galera/c1", "galera/c2", "nova/c1", "nova/c2", "nova/c3"]
    assert text == HEADER
    # A check port that equals the server's own port is the same check as none at all.
    same = HEADER + state_line("nova", "c1", "10.0.0.11", 8774, 8774) + "\n"
    assert haproxy.prune_server_state(same, CONFIG_HEALTH) == (same, [])


def test_server_addresses_are_read_in_every_spelling_haproxy_takes():
    """A server line's address compares with what ``show servers state`` prints: brackets,
    ``ipv6@`` and uppercase IPv6 are the same server as HAProxy's canonical spelling."""
    assert haproxy.split_address("10.0.0.11:8774") == ("10.0.0.11", "8774")
    assert haproxy.split_address("[fd00:213::11]:8774") == ("fd00:213::11", "8774")
    assert haproxy.split_address("ipv6@FD00:0213::0011:8774") == ("fd00:213::11", "8774")
    config = "backend nova\n    server c1 [fd00:213::11]:8774 check\n"
    state = "1\n# be_id be_name srv_id srv_name srv_addr ...\n" + " ".join(
        ["3", "nova", "1", "c1", "fd00:213::11"] + ["0"] * 13 + ["8774"] + ["0", "0", "-"]) + "\n"
    text, dropped = haproxy.prune_server_state(state, config)
    assert dropped == [] and "fd00:213::11" in text
