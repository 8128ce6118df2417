"""The shipped Prometheus alert rules, checked and unit-tested by Prometheus's own promtool."""

import os
import subprocess

from tests.conftest import REPO

RULES = os.path.join(REPO, "monitoring")


def promtool(*args):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=RULES, timeout=120)


def test_the_rules_are_valid():
    proc = promtool("check", "rules", "openstack_ha.rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 17 rules found" in proc.stdout


def test_the_rules_fire_when_they_should():
    proc = promtool("test", "rules", "openstack_ha.rules.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_example_prometheus_configuration_is_valid(tmp_path):
    with open(os.path.join(RULES, "prometheus.yml.example")) as fh:
        text = fh.read().replace("/srv/openstack_ha", REPO)
    (tmp_path / "prometheus.yml").write_text(text)
    proc = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
