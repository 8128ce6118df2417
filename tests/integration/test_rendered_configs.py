"""The HAProxy and keepalived configs rendered for every example site pass the real checkers."""

import os
import re
import signal
import socket
import subprocess
import time

import jinja2
import pytest

from tests.conftest import REPO, build, load_module, model_lib

secret_state = load_module("_states/openstack_ha_secret.py", "openstack_ha_secret")

FILES = os.path.join(REPO, "states", "openstack_ha", "files")
SITES = ["eqiad1", "codfw1dev", "lab", "lab-ipv6"]  # lab: dual-stack; lab-ipv6: IPv6 only


# The execution-module functions the templates call through ``salt[...]`` (each one a thin
# wrapper of the model util, called here directly).
SALT = {"openstack_ha.listen_vips": model_lib.listen_vips}


def render(template, **context):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(FILES), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # as Salt renders
    return env.get_template(template).render(salt=SALT, **context)


def controllers(site):
    model = build(site)
    return [(model, dict(ctrl, index=i)) for i, ctrl in enumerate(model["controllers"])]


@pytest.mark.parametrize("site", SITES)
def test_haproxy_config_passes_haproxy_c(site, tmp_path):
    for model, me in controllers(site):
        cfg = tmp_path / ("haproxy-%s.cfg" % me["id"])
        # The states render from the redacted model; the secrets file from the real one.
        cfg.write_text(render("haproxy.cfg.jinja", oha=model_lib.redact(model), me=me))
        secrets = tmp_path / "secrets.cfg"
        secrets.write_text(secret_state.render("haproxy_stats", model))
        proc = subprocess.run(["haproxy", "-c", "-f", str(secrets), "-f", str(cfg)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        text = cfg.read_text()
        assert "**********" not in text and model["haproxy"]["stats"].get("password", "-" * 20) not in text
        for name, svc in model["services"].items():
            assert "frontend %s\n    bind %s:%d transparent" % (name, model_lib.url_host(model["vips"][svc["vip"]]["address"]), svc["port"]) in text
            # and on every address of every VIP a catalog interface names (the vip mode's
            # internal/admin endpoints), an IPv6 one in brackets
            for vip in model_lib.listen_vips(model, name):
                for address in model["vips"][vip]["addresses"].values():
                    # transparent: a moved VIP's old holder still answers what it took
                    assert "    bind %s:%d transparent" % (model_lib.url_host(address), svc["port"]) in text.split("frontend %s\n" % name)[1].split("\nbackend ")[0]
            for ctrl in model["controllers"]:
                assert "    server %s %s:%d check" % (ctrl["id"], ctrl["host"], svc["backend_port"]) in text
        assert "option redispatch" in text and "timeout check" in text
        assert text.count(" backup on-marked-down shutdown-sessions") == 2  # Galera: one writer
        # Hung backends: GET/HEAD replayed elsewhere after the response timeout; nothing else
        # that reached a backend is replayed; glance (slow uploads) opts out of L7 retries.
        nova, glance = (text.split("\nbackend %s\n" % name)[1].split("\nbackend ")[0] for name in ("nova", "glance"))
        assert "retry-on conn-failure empty-response response-timeout" in nova
        assert "http-request disable-l7-retry unless METH_GET" in nova
        assert "http-request set-timeout server 1500ms if METH_GET" in nova
        assert "retry-on conn-failure\n" in glance and "set-timeout" not in glance and "empty-response" not in glance
        assert "option redispatch 1\n" in text


@pytest.fixture
def netns_with_interfaces():
    """A throwaway network namespace holding (veth) links named like a site's VIP interfaces
    (keepalived -t checks that they exist). Removed afterwards, also on failure."""
    name = "oha-t-render"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)

    def add(interfaces):
        for iface in interfaces:
            subprocess.run(["ip", "-n", name, "link", "add", iface, "type", "veth", "peer", "name", iface[:10] + "-p"], check=True)
        return ["ip", "netns", "exec", name]

    try:
        yield add
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.mark.parametrize("site", SITES)
def test_keepalived_config_passes_keepalived_t(site, tmp_path, netns_with_interfaces):
    # keepalived -t checks the track script is there and safe: a root-only copy of the real one.
    scripts = tmp_path / "scripts"
    scripts.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o700)
    priorities = []
    in_netns = netns_with_interfaces({vip["interface"] for vip in build(site)["vips"].values()})
    for model, me in controllers(site):
        model["paths"]["keepalived_scripts"] = str(scripts)
        (scripts / "haproxy_serving").write_text(render("haproxy_serving.jinja", oha=model, timeout=0.5))
        os.chmod(scripts / "haproxy_serving", 0o700)
        cfg = tmp_path / ("keepalived-%s.conf" % me["id"])
        cfg.write_text(render("keepalived.conf.jinja", oha=model, me=me))
        proc = subprocess.run(in_netns + ["keepalived", "-l", "-t", "-f", str(cfg)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        text = cfg.read_text()
        assert "vrrp_version 3" in text and "unicast_peer" in text
        assert me["address"] not in text.split("unicast_peer")[1].split("}")[0]
        # one VRRP instance per VIP address, each speaking its own family; IPv6 VIPs deprecated
        for inst in model["vip_instances"]:
            block = text.split("vrrp_instance %s {" % inst["key"])[1].split("\n}")[0]
            assert "unicast_src_ip %s\n" % me["addresses"][inst["family"]] in block
            assert "%s/%d dev %s%s\n" % (inst["address"], inst["prefix"], inst["interface"],
                                          " preferred_lft 0" if inst["family"] == "ipv6" else "") in block
        priorities.append(int(re.search(r"^\s+priority (\d+)$", text, re.M).group(1)))
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == 3


@pytest.mark.parametrize("realtime_allowed", [True, False])
def test_keepalived_runs_real_time_only_where_it_can_keep_its_limit(realtime_allowed, tmp_path, netns_with_interfaces):
    """Real-time VRRP scheduling only on a host that grants CAP_SYS_RESOURCE (keepalived 2.2
    kills its own VRRP process at every reload without it); elsewhere the highest ordinary
    priority. `advert_int: auto` follows: 0.1 s adverts real-time, 0.2 s otherwise. Either way
    keepalived -t accepts the result."""
    scripts = tmp_path / "scripts"
    scripts.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o700)
    model, me = controllers("lab")[0]
    model["paths"]["keepalived_scripts"] = str(scripts)
    (scripts / "haproxy_serving").write_text(render("haproxy_serving.jinja", oha=model, timeout=0.5))
    os.chmod(scripts / "haproxy_serving", 0o700)
    cfg = tmp_path / "keepalived.conf"
    cfg.write_text(render("keepalived.conf.jinja", oha=model, me=me, realtime_allowed=realtime_allowed))
    in_netns = netns_with_interfaces({vip["interface"] for vip in model["vips"].values()})
    proc = subprocess.run(in_netns + ["keepalived", "-l", "-t", "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = cfg.read_text()
    assert ("vrrp_rt_priority 50\n" in text) is realtime_allowed
    assert ("vrrp_priority -20\n" in text) is not realtime_allowed
    assert "vrrp_no_swap\n" in text
    assert model["keepalived"]["advert_int"] == "auto"
    adverts = {line.split()[1] for line in text.splitlines() if line.strip().startswith("advert_int ")}
    assert adverts == ({"0.1"} if realtime_allowed else {"0.2"}), adverts
    # a number in the pillar is taken as it is
    model["keepalived"]["advert_int"] = 0.5
    text = render("keepalived.conf.jinja", oha=model, me=me, realtime_allowed=realtime_allowed)
    assert {line.split()[1] for line in text.splitlines() if line.strip().startswith("advert_int ")} == {"0.5"}


def test_the_track_script_passes_only_a_haproxy_that_answers(tmp_path):
    """The rendered keepalived track script against a real HAProxy's admin socket: 0 while it
    answers; 1 when nothing listens, when the socket accepts and never answers (a hung
    process), and when HAProxy is stopped (SIGSTOP), each within a few seconds."""
    model = build("lab")
    sock = tmp_path / "admin.sock"
    model["haproxy"]["socket"] = str(sock)
    script = tmp_path / "haproxy_serving"
    script.write_text(render("haproxy_serving.jinja", oha=model, timeout=0.5))
    os.chmod(script, 0o700)

    def verdict():
        started = time.monotonic()
        rc = subprocess.run([str(script)], timeout=30).returncode
        assert time.monotonic() - started < 10
        return rc
    assert verdict() == 1  # nothing listens
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(sock))
        silent.listen(4)
        assert verdict() == 1  # accepts, never answers
    os.unlink(sock)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n    stats socket {} mode 600 level admin\ndefaults\n    mode http\n    timeout connect 1s\n"
                   "    timeout client 1s\n    timeout server 1s\nfrontend fe\n    bind unix@{}\n".format(sock, tmp_path / "fe.sock"))
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while verdict() != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "HAProxy did not come up on " + str(sock)
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGSTOP)
        assert verdict() == 1  # hung
        os.kill(proc.pid, signal.SIGCONT)
        assert verdict() == 0
    finally:
        proc.kill()
        proc.wait()


def test_keepalived_t_rejects_a_broken_config(tmp_path):
    cfg = tmp_path / "bad.conf"
    cfg.write_text("vrrp_instance x {\n    virtual_router_id 999\n}\n")
    assert subprocess.run(["keepalived", "-l", "-t", "-f", str(cfg)], capture_output=True).returncode != 0


def test_a_stats_password_with_hash_and_space_is_kept_whole(tmp_path):
    """HAProxy cuts an unquoted word at '#' or a space (`abc#def` would be `abc`): the
    secrets file quotes it, and HAProxy accepts the result."""
    model = build("lab")
    model["haproxy"]["stats"].update(enabled=True, password="abc#def ghi")
    me = dict(model["controllers"][0], index=0)
    secrets = tmp_path / "secrets.cfg"
    secrets.write_text(secret_state.render("haproxy_stats", model))
    assert 'insecure-password "abc#def ghi"' in secrets.read_text()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render("haproxy.cfg.jinja", oha=model_lib.redact(model), me=me))
    proc = subprocess.run(["haproxy", "-c", "-f", str(secrets), "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_wsrep_configuration_holds_no_secret():
    model = build("lab")
    me = dict(model["controllers"][0], index=0)
    text = render("galera.cnf.jinja", oha=model_lib.redact(model), me=me)
    assert model["galera"]["sst_password"] not in text and "wsrep_sst_auth" not in text
    assert "wsrep_sst_auth = sst:" + model["galera"]["sst_password"] in secret_state.render("galera_sst", model)


def test_galera_tls_encrypts_replication_and_state_transfers():
    model = build("lab")
    me = dict(model["controllers"][1], index=1)
    text = render("galera.cnf.jinja", oha=model_lib.redact(model), me=me)
    tls_dir = model["paths"]["galera_tls_dir"]
    assert "socket.ssl_ca={0}/ca.pem; socket.ssl_cert={0}/node.pem; socket.ssl_key={0}/node.key".format(tls_dir) in text
    assert "\nencrypt = 3\ntca = {0}/ca.pem\ntcert = {0}/node.pem\ntkey = {0}/node.key\nssl-mode = VERIFY_CA".format(tls_dir) in text
    assert "PRIVATE KEY" not in text
    model["local"] = me
    key = secret_state.render("galera_tls_key", model)
    assert key == model["galera"]["tls"]["nodes"]["lab-ctrl2"]["key"].strip() + "\n"
    assert "PRIVATE KEY" not in repr(model_lib.redact(model))


def test_the_galera_health_unit_is_one_systemd_accepts(tmp_path):
    """Where systemd is PID 1 (not here: the lab runs the init script) the health daemon is
    a unit that systemd restarts when it dies; systemd-analyze checks the rendered file."""
    unit = tmp_path / "openstack-ha-galera-health.service"
    unit.write_text(render("galera-health.service.jinja", args="/usr/local/sbin/openstack-ha-galera-health --node c1 --port 9200"))
    text = unit.read_text()
    assert "Restart=always" in text and "User=mysql" in text
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if str(unit) in line]
    assert proc.returncode == 0 and problems == [], proc.stdout + proc.stderr


def test_an_ipv6_site_writes_galera_rabbitmq_and_grants_for_ipv6():
    """Brackets wherever a port may follow an IPv6 address, the SST streamer on IPv6, Erlang
    distribution over IPv6, the health daemon on the node's address, grants per controller."""
    model = build("lab-ipv6")
    me = dict(model["controllers"][1], index=1)
    text = render("galera.cnf.jinja", oha=model_lib.redact(model), me=me)
    assert "wsrep_cluster_address = gcomm://[fd00:213::11],[fd00:213::12],[fd00:213::13]\n" in text
    assert "wsrep_node_address = [fd00:213::12]\n" in text and "wsrep_sst_receive_address = [fd00:213::12]\n" in text
    assert "gmcast.listen_addr=tcp://[fd00:213::12]:4567; ist.recv_addr=[fd00:213::12]" in text
    assert "bind-address = fd00:213::12\n" in text and 'sockopt = ",pf=ip6"' in text
    env = render("rabbitmq-env.conf.jinja", me=me, family=model["family"])
    assert 'SERVER_ADDITIONAL_ERL_ARGS="-proto_dist inet6_tcp"' in env and 'CTL_ERL_ARGS="-proto_dist inet6_tcp"' in env
    assert "proto_dist" not in render("rabbitmq-env.conf.jinja", me=me, family=build("lab")["family"])
    conf = render("rabbitmq.conf.jinja", oha=model_lib.redact(model), me=me, nodes=model["controllers"])
    assert "listeners.tcp.1 = fd00:213::12:5672\n" in conf
