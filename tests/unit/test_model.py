"""The pillar validator: every kind of mistake gets its own message naming the key path."""

import pytest

from tests.conftest import build, defaults, model_lib

ModelError = model_lib.ModelError


@pytest.mark.parametrize("site", ["eqiad1", "codfw1dev", "lab"])
def test_example_sites_are_valid(site):
    model = build(site)
    assert len(model["controllers"]) == 3
    assert set(model["services"]) == {"keystone", "glance", "designate", "neutron", "nova", "placement", "proxy"}


def test_two_example_sites_have_different_controllers_and_vips():
    a, b = build("eqiad1"), build("codfw1dev")
    assert {c["id"] for c in a["controllers"]}.isdisjoint({c["id"] for c in b["controllers"]})
    assert {v["address"] for v in a["vips"].values()}.isdisjoint({v["address"] for v in b["vips"].values()})


def test_services_use_their_real_ports():
    ports = {name: svc["port"] for name, svc in build()["services"].items()}
    assert ports == {"keystone": 5000, "glance": 9292, "designate": 9001, "neutron": 9696,
                     "nova": 8774, "placement": 8778, "proxy": 5668}


def test_a_service_check_timeout_reaches_its_probe_targets_only():
    targets = model_lib.probe_targets(build())
    assert {t["timeout"] for t in targets if t["service"] == "keystone"} == {1}
    assert not any("timeout" in t for t in targets if t["service"] != "keystone")


def test_pillar_overrides_defaults_and_defaults_fill_gaps():
    model = build(mutate=lambda p: p.setdefault("keepalived", {}).update(advert_int=1))
    assert model["keepalived"]["advert_int"] == 1
    assert build()["keepalived"]["advert_int"] == "auto"  # the default: 0.1 or 0.2 by the host (keepalived.conf.jinja)
    assert model["keepalived"]["garp_master_repeat"] == defaults()["keepalived"]["garp_master_repeat"]
    assert model["paths"]["haproxy_config"] == "/etc/haproxy/haproxy.cfg"


def problems(mutate, site="eqiad1"):
    with pytest.raises(ModelError) as info:
        build(site, mutate)
    return info.value.problems


def set_path(pillar, path, value):
    node = pillar
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def delete_path(pillar, path):
    node = pillar
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


CASES = [
    # (what to break, expected message)
    (lambda p: set_path(p, ["services", "nova", "port"], "http"),
     "openstack_ha:services:nova:port: expected an integer 1-65535, got 'http'"),
    (lambda p: set_path(p, ["services", "nova", "port"], 70000),
     "openstack_ha:services:nova:port: expected an integer 1-65535, got 70000 (int)"),
    (lambda p: set_path(p, ["services", "nova", "port"], True),
     "openstack_ha:services:nova:port: expected an integer 1-65535, got True (bool)"),
    (lambda p: delete_path(p, ["services", "glance", "check"]),
     "openstack_ha:services:glance:check: missing (required)"),
    (lambda p: delete_path(p, ["site"]),
     "openstack_ha:site: missing (required)"),
    (lambda p: set_path(p, ["services", "neutron", "port"], 5000),
     "openstack_ha:services:neutron:port: port 5000 on VIP 'public' is already used by service 'keystone'"),
    (lambda p: set_path(p, ["vips", "public", "address"], "10.99.0.100"),
     "openstack_ha:vips:public:address: 10.99.0.100 is outside the site's IPv4 network 10.64.20.0/24"),
    (lambda p: set_path(p, ["services", "nova", "vip"], "external"),
     "openstack_ha:services:nova:vip: unknown VIP 'external' (known: internal, public)"),
    (lambda p: set_path(p, ["galera", "nodes"], ["cloudcontrol1005.wikimedia.org", "cloudcontrol1006.wikimedia.org"]),
     "openstack_ha:galera:nodes: expected at least 3 nodes for a cluster that survives one loss, got 2"),
    (lambda p: set_path(p, ["galera", "nodes"], ["cloudcontrol1005.wikimedia.org", "cloudcontrol1006.wikimedia.org", "cloudcontrol9999.wikimedia.org"]),
     "openstack_ha:galera:nodes:2: unknown controller 'cloudcontrol9999.wikimedia.org'"),
    (lambda p: p["controllers"].append(dict(p["controllers"][0], address="10.64.20.9")),
     "openstack_ha:controllers:3:id: controller 'cloudcontrol1005.wikimedia.org' is listed twice (also at index 0)"),
    (lambda p: set_path(p, ["controllers", 1, "address"], "10.64.20.5"),
     "openstack_ha:controllers:1:address: address 10.64.20.5 is already used by controller at index 0"),
    (lambda p: set_path(p, ["controllers", 2, "address"], "not-an-ip"),
     "openstack_ha:controllers:2:address: expected an IP address, got 'not-an-ip'"),
    (lambda p: set_path(p, ["controllers"], {"a": 1}),
     "openstack_ha:controllers: expected a non-empty list of controllers, got {'a': 1} (dict)"),
    (lambda p: set_path(p, ["vips", "internal", "vrid"], 51),
     "openstack_ha:vips:internal:vrid: VRID 51 is also used by VIP 'public'"),
    (lambda p: set_path(p, ["vips", "public", "address"], "10.64.20.5"),
     "openstack_ha:vips:public:address: VIP 10.64.20.5 is a controller's own address"),
    (lambda p: set_path(p, ["network"], "10.64.20.0"),
     "openstack_ha:network: expected a network in CIDR form like 10.0.0.0/24 or fd00:10::/64, got '10.64.20.0'"),
    (lambda p: set_path(p, ["services", "keystone", "check", "path"], "v3"),
     "openstack_ha:services:keystone:check:path: expected an absolute URL path without spaces, got 'v3'"),
    (lambda p: set_path(p, ["services", "keystone", "check", "status"], 99),
     "openstack_ha:services:keystone:check:status: expected an integer 100-599, got 99 (int)"),
    (lambda p: set_path(p, ["galera", "sst_method"], "xtrabackup"),
     "openstack_ha:galera:sst_method: expected one of mariabackup, rsync, mysqldump, got 'xtrabackup'"),
    (lambda p: delete_path(p, ["galera", "sst_password"]),
     "openstack_ha:galera:sst_password: missing (required secret)"),
    (lambda p: set_path(p, ["rabbitmq", "cookie"], "short"),
     "openstack_ha:rabbitmq:cookie: too short: expected at least 20 characters, got 5"),
    (lambda p: set_path(p, ["rabbitmq", "policies", "notifications-ha", "definition"], {"ha-mode": "most"}),
     "openstack_ha:rabbitmq:policies:notifications-ha:definition:ha-mode: expected one of all, exactly, nodes, got 'most'"),
    (lambda p: set_path(p, ["keystone", "endpoint_mode"], "dns"),
     "openstack_ha:keystone:endpoint_mode: expected one of vip, active_controller, got 'dns'"),
    (lambda p: set_path(p, ["keystone", "interfaces"], {"public": "public", "private": "internal"}),
     "openstack_ha:keystone:interfaces:private: expected one of public, internal, admin"),
    (lambda p: set_path(p, ["remediation"], {"quorum": 5}),
     "openstack_ha:remediation:quorum: quorum 5 is more than the 3 controllers"),
    (lambda p: set_path(p, ["services", "nova", "extra_options"], ["backend evil"]),
     "openstack_ha:services:nova:extra_options:0: may not open a new section ('backend')"),
    (lambda p: set_path(p, ["services", "nova", "extra_options"], ["option httplog\nlisten x"]),
     "openstack_ha:services:nova:extra_options:0: expected one non-empty line, got 'option httplog\\nlisten x'"),
    (lambda p: set_path(p, ["keepalived"], {"advert_int": 0}),
     "openstack_ha:keepalived:advert_int: expected a number 0.01-255, got 0 (int)"),
    (lambda p: set_path(p, ["keepalived"], {"advert_int": "fast"}),
     "openstack_ha:keepalived:advert_int: expected a number 0.01-255 or 'auto', got 'fast'"),
    (lambda p: set_path(p, ["keepalived"], {"rt_priority": 100}),
     "openstack_ha:keepalived:rt_priority: expected an integer 0-99, got 100 (int)"),
    (lambda p: set_path(p, ["haproxy", "stats", "password"], "abc"),
     "openstack_ha:haproxy:stats:password: too short: expected at least 8 characters, got 3"),
    (lambda p: set_path(p, ["services", "nova", "timeouts"], {"respone": 2}),
     "openstack_ha:services:nova:timeouts:respone: unknown timeout (known: client, connect, queue, response, server)"),
    (lambda p: set_path(p, ["services", "nova", "timeouts"], {"response": 0}),
     "openstack_ha:services:nova:timeouts:response: expected a number 0.1-3600, got 0 (int)"),
    (lambda p: set_path(p, ["galera", "health_port"], 3306),
     "openstack_ha:galera:health_port: must differ from the database port 3306"),
    (lambda p: set_path(p, ["galera", "provider_options"], {"evs.suspect_timeout": "PT1S; pc.bootstrap=YES"}),
     "openstack_ha:galera:provider_options:evs.suspect_timeout: expected a plain value (no spaces, ';', '#', quotes or backslashes), got 'PT1S; pc.bootstrap=YES'"),
    (lambda p: set_path(p, ["galera", "sizes"], {"innodb_buffer_pool": "1G"}),
     "openstack_ha:galera:sizes:innodb_buffer_pool: unknown size (known: gcache_size, innodb_buffer_pool_size, max_connections)"),
    (lambda p: set_path(p, ["galera", "databases"], {"nova-api": {"user": "nova", "password": "x" * 16}}),
     "openstack_ha:galera:databases:nova-api: database names are letters, digits and '_'"),
    (lambda p: delete_path(p, ["rabbitmq", "cookie"]),
     "openstack_ha:rabbitmq:cookie: missing (required secret)"),
    (lambda p: set_path(p, ["rabbitmq", "management"], {"enabled": True, "port": 15692}),
     "openstack_ha:rabbitmq:management:port: must differ from the prometheus port 15692"),
    (lambda p: set_path(p, ["rabbitmq", "users", "openstack-ha-monitor"], {"password": "x" * 16}),
     "openstack_ha:rabbitmq:users:openstack-ha-monitor: reserved: openstack_ha's own monitoring account"),
    (lambda p: p["rabbitmq"].update(release="4.1"),
     "openstack_ha:rabbitmq:policies:notifications-ha:definition:ha-mode: classic queue mirroring was removed in RabbitMQ 4.0 (release 4.1): use quorum queues for this vhost instead"),
    (lambda p: p["rabbitmq"].update(release="latest"),
     "openstack_ha:rabbitmq:release: expected a RabbitMQ release like \"3.10\", got 'latest'"),
    (lambda p: set_path(p, ["services", "keystone", "check", "timeout"], 3),
     "openstack_ha:services:keystone:check:timeout: expected a number 0.05-1.5, got 3 (int)"),
    (lambda p: set_path(p, ["galera", "haproxy_check"], {"inter": 0.5, "fal": 2}),
     "openstack_ha:galera:haproxy_check:fal: unknown check setting (known: fall, fastinter, inter, rise, timeout)"),
    (lambda p: set_path(p, ["galera", "haproxy_check"], {"fastinter": 0}),
     "openstack_ha:galera:haproxy_check:fastinter: expected a number 0.1-60, got 0 (int)"),
    (lambda p: p.setdefault("remediation", {}).update(probe={"keepalive": "yes"}),
     "openstack_ha:remediation:probe:keepalive: expected true or false, got 'yes'"),
    (lambda p: p.setdefault("remediation", {}).update(haproxy_check={"fall": 0}),
     "openstack_ha:remediation:haproxy_check:fall: expected an integer 1-20, got 0 (int)"),
    (lambda p: p.setdefault("haproxy", {}).update(retries="3"),
     "openstack_ha:haproxy:retries: expected an integer 0-10, got '3'"),
    (lambda p: p.setdefault("haproxy", {}).setdefault("timeouts", {}).update(connect="1s"),
     "openstack_ha:haproxy:timeouts:connect: expected a number 0.1-60, got '1s'"),
    # IPv6 and dual stack: the family of each address, its network, one spelling, no scope.
    (lambda p: set_path(p, ["vips", "public", "address"], "fd00:10::100"),
     "openstack_ha:vips:public:address: fd00:10::100 is an IPv6 address but the site has no IPv6 network (network: 10.64.20.0/24)"),
    (lambda p: (set_path(p, ["network"], ["10.64.20.0/24", "fd00:10::/64"]), set_path(p, ["vips", "public", "address"], "fd00:99::100")),
     "openstack_ha:vips:public:address: fd00:99::100 is outside the site's IPv6 network fd00:10::/64"),
    (lambda p: set_path(p, ["network"], ["10.64.20.0/24", "10.65.0.0/24"]),
     "openstack_ha:network:1: a second IPv4 network: the site has one network per address family"),
    (lambda p: (set_path(p, ["network"], ["10.64.20.0/24", "fd00:10::/64"]),
                [set_path(p, ["controllers", i, "address"], ["10.64.20.%d" % (5 + i), "fd00:10::%d" % (5 + i)]) for i in range(3)],
                set_path(p, ["vips", "public", "address"], ["10.64.20.100", "fd00:10:0::0:6"])),
     "openstack_ha:vips:public:address: VIP fd00:10::6 is a controller's own address"),
    (lambda p: (set_path(p, ["network"], ["10.64.20.0/24", "fd00:10::/64"]),
                [set_path(p, ["controllers", i, "address"], ["10.64.20.%d" % (5 + i), "fd00:10::%d" % (5 + i)]) for i in range(3)],
                set_path(p, ["controllers", 2, "address"], ["10.64.20.7", "FD00:0010::5"])),
     "openstack_ha:controllers:2:address: address fd00:10::5 is already used by controller at index 0 (written 'fd00:10::5' there)"),
    (lambda p: (set_path(p, ["network"], ["10.64.20.0/24", "fd00:10::/64"]), set_path(p, ["vips", "public", "address"], ["10.64.20.100", "fd00:10::100"])),
     "openstack_ha:vips:public:address: VIP fd00:10::100 is IPv6 but controllers cloudcontrol1005.wikimedia.org, "
     "cloudcontrol1006.wikimedia.org, cloudcontrol1007.wikimedia.org have no IPv6 address (keepalived's IPv6 VRRP instance "
     "speaks to each controller's own address of that family)"),
    (lambda p: (set_path(p, ["network"], ["10.64.20.0/24", "fd00:10::/64"]), set_path(p, ["vips", "public", "address"], "fd00:10::100%eth0")),
     "openstack_ha:vips:public:address: 'fd00:10::100%eth0' has a scope suffix: write the address without '%...'"),
    (lambda p: (set_path(p, ["network"], ["10.64.20.0/24", "fd00:10::/64"]), set_path(p, ["vips", "public", "address"], ["10.64.20.100", "10.64.20.101"])),
     "openstack_ha:vips:public:address:1: a second IPv4 address (10.64.20.100 and 10.64.20.101): one address per family"),
    (lambda p: (set_path(p, ["network"], ["fd00:10::/64", "10.64.20.0/24"])),
     "openstack_ha:controllers:0:address: no IPv6 address: every controller needs one in the site's first network fd00:10::/64 "
     "(Galera, RabbitMQ and HAProxy's backends use that family)"),
    (lambda p: set_path(p, ["vips", "public", "address"], "::ffff:10.64.20.100"),
     "openstack_ha:vips:public:address: ::ffff:10.64.20.100 is an IPv4-mapped IPv6 address: write the IPv4 address 10.64.20.100"),
]


@pytest.mark.parametrize("mutate,message", CASES, ids=[m.split(": ")[0] + ":" + m.split(": ")[1][:24] for _, m in CASES])
def test_each_mistake_has_its_own_clear_message(mutate, message):
    assert message in problems(mutate)


def test_all_problems_are_reported_at_once():
    def break_two(p):
        p["services"]["nova"]["port"] = "http"
        p["vips"]["public"]["vrid"] = 300
    found = problems(break_two)
    assert len(found) == 2
    assert str(ModelError(found)).startswith("invalid openstack_ha pillar (2 problems):")


def test_secrets_are_never_echoed_in_errors():
    found = problems(lambda p: p["galera"].update(root_password="short'pw"))
    assert found == ["openstack_ha:galera:root_password: too short: expected at least 12 characters, got 8"]
    assert "short'pw" not in str(ModelError(found))


def test_missing_pillar_is_explained():
    with pytest.raises(ModelError, match="this minion has no openstack_ha pillar"):
        model_lib.build(defaults(), None)


def test_quorum_size():
    assert model_lib.quorum_size(build()) == 2
    assert model_lib.quorum_size(build(mutate=lambda p: p.setdefault("remediation", {}).update(quorum=3))) == 3


HARDENING = [
    (lambda p: p.update(remediaton={"enabled": False}), "openstack_ha:remediaton: unknown key (did you mean 'remediation'?)"),
    (lambda p: p.update(keepalive={"advert_int": 1}), "openstack_ha:keepalive: unknown key (did you mean 'keepalived'?)"),
    (lambda p: set_path(p, ["services", "nova", "vip"], ["public"]), "openstack_ha:services:nova:vip: expected the name of a VIP, got ['public'] (list)"),
    (lambda p: set_path(p, ["galera", "vip"], ["internal"]), "openstack_ha:galera:vip: expected the name of a VIP, got ['internal'] (list)"),
    (lambda p: set_path(p, ["keystone", "interfaces"], {"public": ["public"]}), "openstack_ha:keystone:interfaces:public: expected the name of a VIP, got ['public'] (list)"),
    (lambda p: set_path(p, ["galera", "nodes"], [{"id": "x"}, "b", "c"]), "openstack_ha:galera:nodes:0: expected a controller id, got {'id': 'x'} (dict)"),
    (lambda p: set_path(p, ["rabbitmq", "nodes"], [["a"], "b", "c"]), "openstack_ha:rabbitmq:nodes:0: expected a controller id, got ['a'] (list)"),
    (lambda p: set_path(p, ["keepalived"], {"track_interval": 0}), "openstack_ha:keepalived:track_interval: expected an integer 1-3600, got 0 (int)"),
    (lambda p: set_path(p, ["keepalived"], {"track_interval": 0.5}), "openstack_ha:keepalived:track_interval: expected an integer 1-3600, got 0.5 (float)"),
    (lambda p: set_path(p, ["keepalived"], {"garp_master_delay": "1; x"}), "openstack_ha:keepalived:garp_master_delay: expected an integer 0-86400, got '1; x'"),
    (lambda p: set_path(p, ["remediation"], {"quorum": 1}), "openstack_ha:remediation:quorum: quorum 1 is not a majority of the 3 controllers (at least 2)"),
    (lambda p: set_path(p, ["services", "nova", "extra_options"], ["program evil"]), "openstack_ha:services:nova:extra_options:0: may not open a new section ('program')"),
    (lambda p: set_path(p, ["haproxy", "extra_defaults"], ["userlist x"]), "openstack_ha:haproxy:extra_defaults:0: may not open a new section ('userlist')"),
    (lambda p: set_path(p, ["services", "nova", "extra_options"], ["external-check command /bin/sh"]),
     "openstack_ha:services:nova:extra_options:0: may not make HAProxy run a program ('external-check command /bin/sh')"),
    (lambda p: p.update(paths={"galera_health": "/usr/local/sbin/x; rm -rf /"}),
     "openstack_ha:paths:galera_health: expected an absolute path of letters, digits and ./_-+{}, got '/usr/local/sbin/x; rm -rf /'"),
    (lambda p: set_path(p, ["rabbitmq", "memory_high_watermark"], 2), "openstack_ha:rabbitmq:memory_high_watermark: expected a number 0.05-0.95, got 2 (int)"),
]


@pytest.mark.parametrize("mutate,message", HARDENING, ids=[m.split(": ")[0] for _, m in HARDENING])
def test_hostile_or_mistyped_pillars_are_refused_by_key_path(mutate, message):
    assert message in problems(mutate)


def test_more_than_25_controllers_are_refused():
    def many(p):
        p["network"] = "10.9.0.0/16"
        p["controllers"] = [{"id": "c%d" % i, "address": "10.9.0.%d" % (i + 10)} for i in range(26)]
        for vip in p["vips"].values():
            vip["address"] = "10.9.1.%d" % vip["vrid"]
    assert any("at most 25 controllers" in m for m in problems(many))


def test_galera_tls_needs_a_certificate_for_every_node_and_never_echoes_a_key():
    def no_ctrl3(p):
        pem = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----"
        p["galera"]["tls"] = {"ca": pem, "nodes": {c["id"]: {"certificate": pem, "key": "not a key"} for c in p["controllers"][:2]}}
    found = problems(no_ctrl3)
    ctrl3 = build()["controllers"][2]["id"]
    assert "openstack_ha:galera:tls:nodes:{}: missing: every Galera node needs its certificate and key".format(ctrl3) in found
    assert any(m.endswith(":key: expected a PEM private key (not shown)") for m in found)
    assert not any("not a key" in m for m in found)


def test_an_unsupported_salt_release_gets_one_clear_reason():
    assert model_lib.salt_release_problem((3008, 3, 0)) is None
    assert model_lib.salt_release_problem((3006, 0)) is None
    assert model_lib.salt_release_problem((3005, 1, 0)) == "openstack_ha needs Salt 3006.0 or newer; this is 3005.1.0"


def dual_stack(p, v6_first=False):
    """Make the eqiad1 example dual-stack: every controller and the public VIP on both families."""
    nets = ["10.64.20.0/24", "fd00:10::/64"]
    p["network"] = nets[::-1] if v6_first else nets
    for i, ctrl in enumerate(p["controllers"]):
        ctrl["address"] = [ctrl["address"], "FD00:10:0:0::%X" % (0x11 + i)]
    p["vips"]["public"]["address"] = ["fd00:0010::100", p["vips"]["public"]["address"]]


def test_a_dual_stack_site_is_normalised_once():
    model = build(mutate=dual_stack)
    assert model["networks"] == {"ipv4": "10.64.20.0/24", "ipv6": "fd00:10::/64"} and model["family"] == "ipv4"
    first = model["controllers"][0]
    assert first["address"] == "10.64.20.5" and first["host"] == "10.64.20.5"
    assert first["addresses"] == {"ipv4": "10.64.20.5", "ipv6": "fd00:10::11"}
    public = model["vips"]["public"]
    assert public["addresses"] == {"ipv4": public["address"], "ipv6": "fd00:10::100"}
    keys = [(i["key"], i["family"], i["address"], i["prefix"]) for i in model["vip_instances"]]
    assert ("public/ipv6", "ipv6", "fd00:10::100", 64) in keys and ("public", "ipv4", public["address"], 24) in keys
    assert model_lib.vip_addresses(model)["public/ipv6"] == "fd00:10::100"
    assert model_lib.url_host("fd00:10::100") == "[fd00:10::100]" and model_lib.url_host("10.0.0.1") == "10.0.0.1"


def test_an_ipv6_first_site_runs_its_clusters_on_ipv6():
    model = build(mutate=lambda p: dual_stack(p, v6_first=True))
    assert model["family"] == "ipv6" and model["network"] == "fd00:10::/64"
    assert model["controllers"][1]["address"] == "fd00:10::12" and model["controllers"][1]["host"] == "[fd00:10::12]"
    assert [t["address"] for t in model_lib.probe_targets(model, "nova")] == ["fd00:10::11", "fd00:10::12", "fd00:10::13"]


def test_active_controller_urls_of_an_ipv6_site_are_bracketed():
    def mutate(p):
        dual_stack(p, v6_first=True)
        p["keystone"]["endpoint_mode"] = "active_controller"
        for ctrl in p["controllers"]:
            ctrl.pop("fqdn", None)
    model = build(mutate=mutate)
    holder = model["controllers"][0]["id"]
    urls = {e["url"] for e in model_lib.catalog_endpoints(model, {name: holder for name in model["vips"]})}
    assert "https://[fd00:10::11]:8774/v2.1" in urls and all(u.startswith("https://[fd00:10::11]:") for u in urls)
