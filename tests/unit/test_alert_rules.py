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
    assert "SUCCESS: 8 rules found" in proc.stdout


def test_the_rules_fire_when_they_should():
    proc = promtool("test", "rules", "openstack_ha.rules.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
