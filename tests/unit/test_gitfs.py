"""master.d/openstack_ha-gitfs.conf.example serves what the minions need and nothing else: Salt's
own fileserver (gitfs, GitPython) over this repository's committed tree."""

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

SALT_RUN = os.path.join(REPO, ".venv", "bin", "salt-run")


def committed(path):
    out = subprocess.run(["git", "-C", REPO, "ls-files", path], capture_output=True, text=True, check=True).stdout
    return sorted(line for line in out.splitlines() if line.endswith(".py"))


@pytest.fixture
def gitfs_master(tmp_path):
    if subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    branch = subprocess.run(["git", "-C", REPO, "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True, text=True).stdout.strip()
    with open(os.path.join(REPO, "master.d", "openstack_ha-gitfs.conf.example")) as fh:
        config = yaml.safe_load(fh.read().replace("https://git.example.org/openstack_ha.git", "file://" + REPO))
    config.update(fileserver_backend=["gitfs"], gitfs_base=branch, root_dir=str(tmp_path), cachedir=str(tmp_path / "cache"),
                  pki_dir=str(tmp_path / "pki"), sock_dir=str(tmp_path / "sock"), log_file=str(tmp_path / "master.log"), user="root")
    (tmp_path / "cache" / "proc").mkdir(parents=True)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "master").write_text(yaml.safe_dump(config))
    yield str(tmp_path / "conf")
    shutil.rmtree(tmp_path, ignore_errors=True)


def salt_run(confdir, *args):
    proc = subprocess.run([SALT_RUN, "-c", confdir, "--out=json"] + list(args), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    return json.loads(proc.stdout)


def test_gitfs_serves_the_states_and_the_custom_modules_and_not_the_pillar(gitfs_master):
    salt_run(gitfs_master, "fileserver.update")
    served = set(salt_run(gitfs_master, "fileserver.file_list"))
    for directory in ("_modules", "_states", "_beacons", "_utils", "_grains"):
        assert set(committed(directory)) <= served, directory
    assert "openstack_ha/init.sls" in served and "openstack_ha/defaults.yaml" in served
    assert not [f for f in served if f.startswith(("pillar", "tests", "lab", "bench", "scripts", ".venv")) or "sites/" in f]
