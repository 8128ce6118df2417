"""The HAProxy and keepalived configs rendered for every example site pass the real checkers."""

import os
import re
import subprocess

import jinja2
import pytest

from tests.conftest import REPO, build, model_lib

FILES = os.path.join(REPO, "states", "openstack_ha", "files")
SITES = ["eqiad1", "codfw1dev", "lab"]


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
        cfg.write_text(render("haproxy.cfg.jinja", oha=model, me=me))
        proc = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        text = cfg.read_text()
        for name, svc in model["services"].items():
            assert "frontend %s\n    bind %s:%d" % (name, model["vips"][svc["vip"]]["address"], svc["port"]) in text
            # and on every VIP a catalog interface names (the vip mode's internal/admin endpoints)
            for vip in model_lib.listen_vips(model, name):
                assert "    bind %s:%d\n" % (model["vips"][vip]["address"], svc["port"]) in text.split("frontend %s\n" % name)[1].split("\nbackend ")[0]
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
        priorities.append(int(re.search(r"^\s+priority (\d+)$", text, re.M).group(1)))
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == 3


def test_keepalived_t_rejects_a_broken_config(tmp_path):
    cfg = tmp_path / "bad.conf"
    cfg.write_text("vrrp_instance x {\n    virtual_router_id 999\n}\n")
    assert subprocess.run(["keepalived", "-l", "-t", "-f", str(cfg)], capture_output=True).returncode != 0
