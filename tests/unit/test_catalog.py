"""The Keystone catalog the model asks for, and the plan that brings Keystone's in line (pure logic)."""

import pytest

from tests.conftest import build, load_module, model_lib

catalog = load_module("_utils/openstack_ha_catalog.py", "openstack_ha_catalog")


def lab(mode="vip", **keystone):
    def mutate(p):
        p["keystone"].update(endpoint_mode=mode, **keystone)
    return build("lab", mutate)


def test_vip_mode_points_every_interface_at_its_vip_fqdn():
    wanted = model_lib.catalog_endpoints(lab())
    assert len(wanted) == 7 * 3
    by_key = {(w["service"], w["interface"]): w["url"] for w in wanted}
    assert by_key[("nova", "public")] == "http://openstack.lab.example:8774/v2.1"
    assert by_key[("nova", "internal")] == "http://openstack-internal.lab.example:8774/v2.1"
    assert by_key[("nova", "admin")] == "http://openstack-internal.lab.example:8774/v2.1"
    assert by_key[("keystone", "public")] == "http://openstack.lab.example:5000/v3"
    assert {w["region"] for w in wanted} == {"lab-r"}


def test_active_controller_mode_follows_each_vips_holder():
    model = lab("active_controller")
    wanted = model_lib.catalog_endpoints(model, {"public": "lab-ctrl2", "internal": "lab-ctrl3"})
    by_key = {(w["service"], w["interface"]): w["url"] for w in wanted}
    assert by_key[("nova", "public")] == "http://10.213.0.12:8774/v2.1"
    assert by_key[("nova", "internal")] == "http://10.213.0.13:8774/v2.1"
    with pytest.raises(ValueError, match="no controller holds VIP 'internal'"):
        model_lib.catalog_endpoints(model, {"public": "lab-ctrl2"})


def test_active_controller_mode_uses_the_controllers_fqdn_and_backend_port():
    def mutate(p):
        p["keystone"]["endpoint_mode"] = "active_controller"
        p["controllers"][1]["fqdn"] = "ctrl2.lab.example"
        p["services"]["nova"]["backend_port"] = 18774
    model = build("lab", mutate)
    wanted = model_lib.catalog_endpoints(model, {"public": "lab-ctrl2", "internal": "lab-ctrl2"})
    assert {w["url"] for w in wanted if w["service"] == "nova"} == {"http://ctrl2.lab.example:18774/v2.1"}


def test_every_service_listens_on_each_vip_the_catalog_names():
    model = lab()
    assert model_lib.listen_vips(model, "nova") == ["public", "internal"]


def test_a_port_taken_on_a_catalog_vip_is_an_error():
    def mutate(p):
        p["galera"]["port"] = 5000  # the internal VIP, where keystone's internal endpoint listens
    with pytest.raises(model_lib.ModelError, match="port 5000 on VIP 'internal' is already used by service 'keystone'"):
        build("lab", mutate)


def keystone_state(wanted, url_of=lambda w: w["url"], skip=()):
    """A Keystone catalog holding ``wanted`` (URLs through ``url_of``), minus ``skip`` keys."""
    services = [{"id": "s-" + name, "name": name, "type": stype} for name, stype in sorted({(w["service"], w["type"]) for w in wanted})]
    endpoints = [{"id": "e-{}-{}".format(w["service"], w["interface"]), "service_id": "s-" + w["service"], "interface": w["interface"],
                  "region_id": w["region"], "url": url_of(w), "enabled": True}
                 for w in wanted if (w["service"], w["interface"]) not in skip]
    return [{"id": "lab-r"}], services, endpoints


def test_an_empty_keystone_gets_everything_created():
    wanted = model_lib.catalog_endpoints(lab())
    changes = catalog.plan(wanted, [], [], [])
    assert changes["regions"] == ["lab-r"]
    assert [s["name"] for s in changes["services"]] == sorted({w["service"] for w in wanted})
    assert len(changes["create"]) == 21 and not changes["update"] and not changes["delete"]
    described = catalog.describe(changes)
    assert described["nova/public"] == {"old": None, "new": "http://openstack.lab.example:8774/v2.1"}


def test_a_catalog_as_wanted_plans_nothing():
    wanted = model_lib.catalog_endpoints(lab())
    assert catalog.is_empty(catalog.plan(wanted, *keystone_state(wanted)))


def test_a_drifted_url_is_updated_in_place_and_a_missing_endpoint_created():
    wanted = model_lib.catalog_endpoints(lab())
    drifted = lambda w: "http://wrong:1/" if (w["service"], w["interface"]) == ("nova", "public") else w["url"]
    changes = catalog.plan(wanted, *keystone_state(wanted, drifted, skip={("glance", "admin")}))
    assert changes["update"] == [{"id": "e-nova-public", "service": "nova", "interface": "public", "region": "lab-r",
                                  "old": "http://wrong:1/", "new": "http://openstack.lab.example:8774/v2.1"}]
    assert [(c["service"], c["interface"], c["service_id"]) for c in changes["create"]] == [("glance", "admin", "s-glance")]
    assert not changes["services"] and not changes["delete"]


def test_duplicates_of_a_managed_endpoint_are_removed_keeping_the_right_one():
    wanted = model_lib.catalog_endpoints(lab())
    regions, services, endpoints = keystone_state(wanted)
    endpoints.insert(0, dict(endpoints[0], id="a-dup", url="http://old:1/"))
    changes = catalog.plan(wanted, regions, services, endpoints)
    assert not changes["update"]
    assert [d["id"] for d in changes["delete"]] == ["a-dup"]


def test_services_and_endpoints_the_model_does_not_name_are_left_alone():
    wanted = model_lib.catalog_endpoints(lab())
    regions, services, endpoints = keystone_state(wanted)
    services.append({"id": "s-barbican", "name": "barbican", "type": "key-manager"})
    endpoints.append({"id": "e-b", "service_id": "s-barbican", "interface": "public", "region_id": "lab-r", "url": "http://x:9311"})
    endpoints.append(dict(endpoints[0], id="other-region", region_id="elsewhere", url="http://y:1"))
    assert catalog.is_empty(catalog.plan(wanted, regions, services, endpoints))


class FakeKeystone:
    """Records calls; fails the ones named in ``fail`` (pure logic of apply's ordering)."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def _call(self, *call):
        self.calls.append(call)
        if call[0] in self.fail:
            raise RuntimeError("refused " + call[0])
        return {"id": "new-" + str(call[1])}

    def update_endpoint(self, *a): return self._call("update", *a)
    def create_region(self, *a): return self._call("region", *a)
    def create_service(self, *a): return self._call("service", *a)
    def create_endpoint(self, *a): return self._call("create", *a)
    def delete_endpoint(self, *a): return self._call("delete", *a)


def test_apply_repoints_first_and_reports_each_failure_without_stopping():
    wanted = model_lib.catalog_endpoints(lab())
    drifted = lambda w: "http://wrong:1/" if w["interface"] == "public" else w["url"]
    regions, services, endpoints = keystone_state(wanted, drifted, skip={("nova", "admin")})
    changes = catalog.plan(wanted, [], services, endpoints)
    client = FakeKeystone(fail={"region"})
    outcome = catalog.apply(client, changes)
    kinds = [c[0] for c in client.calls]
    assert kinds[:7] == ["update"] * 7 and kinds[7:] == ["region", "create"]
    assert outcome["failed"] == {"region lab-r": "refused region"}
    assert sorted(outcome["done"]) == sorted(["{}/public".format(s) for s in {w["service"] for w in wanted}] + ["nova/admin"])
