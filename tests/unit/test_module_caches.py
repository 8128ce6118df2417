"""What a controller's modules keep between jobs: Salt 3008 loads the modules afresh for every
job, executing each file again in the module object it left in ``sys.modules``. The parsed
``defaults.yaml`` (``openstack_ha.model``) and the minion's parsed key (``openstack_ha_signed``)
survive that, so a job neither asks the fileserver nor parses the key again."""

import importlib.util
import os

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import REPO, minion_keys

DEFAULTS = os.path.join(REPO, "states", "openstack_ha", "defaults.yaml")


def load_again(module, relpath):
    """Execute ``relpath`` in ``module`` again, as Salt's loader does for the next job."""
    spec = importlib.util.spec_from_file_location(module.__name__, os.path.join(REPO, relpath))
    spec.loader.exec_module(module)
    return module


def fresh(relpath, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counting_fileserver(calls):
    with open(DEFAULTS) as fh:
        text = fh.read()

    def get_file_str(url):
        calls.append(url)
        return text
    return {"cp.get_file_str": get_file_str}


def test_the_defaults_are_read_once_per_ttl_and_survive_the_next_jobs_load(monkeypatch):
    module = fresh("_modules/openstack_ha.py", "salt.loaded.ext.module.openstack_ha_cache_test")
    calls = []
    module.__salt__ = counting_fileserver(calls)
    first = module._load_defaults()
    first["added_by_a_caller"] = True
    load_again(module, "_modules/openstack_ha.py")
    module.__salt__ = counting_fileserver(calls)
    second = module._load_defaults()
    assert calls == [module.DEFAULTS_URL], "the next job asked the fileserver again"
    assert "added_by_a_caller" not in second, "a caller's change leaked into the cache"
    clock = [module.time.monotonic()]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    clock[0] += module.DEFAULTS_TTL + 1
    module._load_defaults()
    assert len(calls) == 2, "an expired copy was not read again"


def test_a_missing_defaults_file_is_an_error_that_names_it_and_is_not_cached():
    module = fresh("_modules/openstack_ha.py", "salt.loaded.ext.module.openstack_ha_cache_missing")
    module.__salt__ = {"cp.get_file_str": lambda url: ""}
    with pytest.raises(CommandExecutionError, match="defaults.yaml"):
        module._load_defaults()
    calls = []
    module.__salt__ = counting_fileserver(calls)
    assert module._load_defaults() and calls


def test_the_minions_key_is_parsed_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    module = fresh("_modules/openstack_ha_signed.py", "salt.loaded.ext.module.openstack_ha_signed_cache_test")
    minion_keys(tmp_path, ["c1"])
    pki = tmp_path / "c1"
    module.__opts__ = {"pki_dir": str(pki)}
    key = module._private_key()
    load_again(module, "_modules/openstack_ha_signed.py")
    module.__opts__ = {"pki_dir": str(pki)}
    assert module._private_key() is key, "the next job parsed the key again"
    os.utime(pki / "minion.pem", (1, 1))
    assert module._private_key() is not key, "a changed key file was not read again"
