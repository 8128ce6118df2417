"""Shared test helpers: load the project's pure-Python pieces and example pillars by path."""

import copy
import importlib.util
import os
import sys
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def load_module(relpath, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_lib = load_module("_utils/openstack_ha_model.py", "openstack_ha_model")


def read_yaml(relpath):
    with open(os.path.join(REPO, relpath)) as fh:
        return yaml.safe_load(fh)


def example_pillar(site):
    """The merged pillar a controller of ``site`` receives (shared services + site file)."""
    services = read_yaml("pillar/openstack_ha/services.sls")["openstack_ha"]
    return model_lib.deep_merge(services, read_yaml("pillar/openstack_ha/sites/%s.sls" % site)["openstack_ha"])


def defaults(os_family="Debian"):
    raw = read_yaml("states/openstack_ha/defaults.yaml")
    return model_lib.layer_defaults(raw, os_family)


def ipv6_only(pillar):
    """Turn the lab site's pillar (in place) into an IPv6-only site on fd00:213::/64: the
    controllers' and VIPs' IPv6 addresses only (the lab variant where Galera and RabbitMQ
    cluster over IPv6)."""
    pillar["network"] = "fd00:213::/64"
    for index, ctrl in enumerate(pillar["controllers"], start=1):
        ctrl["address"] = "fd00:213::%d" % (10 + index)
    pillar["vips"]["public"]["address"] = "fd00:213::100"
    pillar["vips"]["internal"]["address"] = "fd00:213::101"
    return pillar


def build(site="eqiad1", mutate=None):
    """The model of example site ``site`` (``lab-ipv6``: the lab made IPv6-only), with
    ``mutate`` applied to its pillar first."""
    pillar = ipv6_only(example_pillar("lab")) if site == "lab-ipv6" else example_pillar(site)
    if mutate:
        mutate(pillar)
    return model_lib.build(defaults(), pillar)


@pytest.fixture
def eqiad1_pillar():
    return copy.deepcopy(example_pillar("eqiad1"))


# The run's deadline (epoch seconds, OHA_TEST_DEADLINE; scripts/test.sh sets it so that a whole
# CI run stays inside its time limit): a test not started by then is skipped, and says so. On a
# machine like the ones the suite was written on every test starts long before it; on a slow,
# busy one the last files of the lab suite may not. The lab's teardown test always runs.
DEADLINE = float(os.environ.get("OHA_TEST_DEADLINE") or 0)
ALWAYS_RUN = ("test_lab_down.py",)


# The order of the test files: what needs no lab (while scripts/test.sh runs the other Salt
# releases' tests beside it, until the lab's first apply: tests/integration/conftest.py), then the
# lab's most telling files first (the run's deadline cuts from the end); these rebuild or crowd
# the lab and come last: the fleet (thirty more daemons), the IPv6 site (it re-addresses the
# whole lab), the controller replacement (a fourth controller), the teardown test. A file not
# listed runs just before them.
ORDER = ("test_rendered_configs.py", "test_vip_watch.py", "test_multisite_factories.py", "test_syndic_factories.py",
         "test_foundation.py", "test_remediation.py", "test_haproxy_keepalived.py", "test_hung_backends.py", "test_galera.py",
         "test_rabbitmq.py", "test_keystone.py", "test_monitoring.py", "test_day2.py", "test_multimaster.py")
LAST = ("test_fleet.py", "test_ipv6_site.py", "test_replace_controller.py", "test_lab_down.py")


def _salt_temp_log_handler_off():
    """Salt, imported into this process with no logging set up, puts a temporary handler on the
    root logger that keeps every record (the root at its lowest level) and writes them all out
    at exit, into a stream pytest has closed by then: pages of "--- Logging error ---" at the
    end of a run. Shut it down (its records go to pytest's handlers) while the streams are open."""
    import salt._logging.impl as impl

    if impl.is_temp_handler_configured():
        impl.shutdown_temp_handler()


def pytest_sessionstart(session):
    _salt_temp_log_handler_off()


def pytest_sessionfinish(session):
    _salt_temp_log_handler_off()


def pytest_collection_modifyitems(items):
    """Unit tests first (seconds, and they must never be cut by the deadline), then the
    integration files in ORDER, any other, then LAST (see there); a file's tests keep their order."""
    def rank(item):
        name = item.fspath.basename
        if "/integration/" not in str(item.fspath):
            return (0, 0)
        if name in LAST:
            return (3, LAST.index(name))
        return (1, ORDER.index(name)) if name in ORDER else (2, 0)
    items.sort(key=rank)


def pytest_runtest_setup(item):
    if DEADLINE and time.time() > DEADLINE and item.fspath.basename not in ALWAYS_RUN:
        pytest.skip("not started: the run's deadline (OHA_TEST_DEADLINE, set by scripts/test.sh) passed "
                    "{:.0f} s ago; run it on its own: scripts/test.sh {}".format(time.time() - DEADLINE, item.nodeid))


def accepted_keys(tmp_path, monkeypatch, publish, accepted, others=()):
    """Key pairs of the minions ``accepted`` and ``others`` (see :func:`minion_keys`), of which
    the master (``publish._accepted_key`` of the loaded ``openstack_ha_publish``) accepted the
    first. Returns ``tmp_path``, each minion's ``pki_dir`` under it."""
    from cryptography.hazmat.primitives import serialization

    pems = minion_keys(tmp_path, list(accepted) + list(others))
    monkeypatch.setattr(publish, "_accepted_key", lambda ctx, minion: serialization.load_pem_public_key(pems[minion])
                        if minion in accepted else None)
    return tmp_path


def minion_keys(tmp_path, names):
    """A key pair per minion of ``names``: each private key in ``tmp_path/<name>/minion.pem``
    (as a minion's ``pki_dir`` holds it); returns ``{name: public key PEM bytes}``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pems = {}
    for name in names:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (tmp_path / name).mkdir()
        (tmp_path / name / "minion.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
        pems[name] = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pems
