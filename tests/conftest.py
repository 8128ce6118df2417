"""Shared test helpers: load the project's pure-Python pieces and example pillars by path."""

import copy
import importlib.util
import os
import sys

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
