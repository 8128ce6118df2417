"""Foundation in the lab: three controllers answer, a bad pillar stops the run and writes nothing."""


from tests.integration import labtools
from tests.integration.labtools import CTRLS, sh

MANAGED = ["/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf", "/etc/sysctl.d/60-openstack-ha.conf"]


def fingerprint(ctrl):
    """Each managed file's checksum and mtime on ``ctrl`` ('-' when absent)."""
    out = {}
    for path in MANAGED:
        line = sh(ctrl, "[ -e {p} ] && stat -c %Y.%Z {p} && sha256sum {p} | cut -c1-64 || echo -".format(p=path))
        out[path] = line.split()
    return out


def test_three_controllers_answer_with_their_own_hostname(lab):
    rc, result = labtools.salt("*ctrl*", "grains.get", "host")
    assert rc == 0
    assert result == {c: c for c in CTRLS}
    rc, result = labtools.salt("*ctrl*", "openstack_ha.validate")
    assert all("site 'lab' is valid: 3 controllers, 2 VIPs, 7 services" in result[c] for c in CTRLS), result
    # Each minion runs its jobs as threads: the guard against the import-cache race (Salt issue
    # 61734) is in its process from the grains it loaded (_grains/openstack_ha.py).
    rc, result = labtools.salt("*ctrl*", "grains.get", "openstack_ha_import_guard")
    assert rc == 0 and result == {c: True for c in CTRLS}, result
    # ... and so is the wrapper that lets the loop's jobs skip Salt's per-job loader rebuild.
    rc, result = labtools.salt("*ctrl*", "grains.get", "openstack_ha_job_loaders")
    assert rc == 0 and result == {c: True for c in CTRLS}, result


def test_controllers_have_their_own_etc_and_run(lab):
    sh("lab-ctrl1", "echo only-here > /etc/oha-test-marker")
    try:
        assert sh("lab-ctrl2", "cat /etc/oha-test-marker 2>/dev/null || echo absent").strip() == "absent"
        assert sh("lab-ctrl1", "cat /run/salt-minion.pid") != sh("lab-ctrl2", "cat /run/salt-minion.pid")
    finally:
        sh("lab-ctrl1", "rm -f /etc/oha-test-marker")


def test_bad_pillar_fails_fast_with_the_validators_message_and_writes_nothing(lab):
    # This file runs before any good apply, so on a fresh lab the managed files do not exist yet.
    before = {c: fingerprint(c) for c in CTRLS}
    rc, result = labtools.apply("*ctrl*", 'pillar={"openstack_ha": {"services": {"nova": {"port": "http"}}}}')
    assert rc != 0
    for ctrl in CTRLS:
        text = "\n".join(result[ctrl]) if isinstance(result[ctrl], list) else str(result[ctrl])
        assert "openstack_ha:services:nova:port: expected an integer 1-65535, got 'http'" in text
    assert {c: fingerprint(c) for c in CTRLS} == before
