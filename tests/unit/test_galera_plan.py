"""The pure Galera decisions: who may bootstrap, who joins, who waits, what recovery picks."""

import pytest

from tests.conftest import load_module

plan = load_module("_utils/openstack_ha_galera_plan.py", "openstack_ha_galera_plan")
NODES = ["n1", "n2", "n3"]
UUID = "5f1c9a3e-1111-11ef-8000-0123456789ab"


def down(history=False):
    return {"running": False, "grastate": {"uuid": UUID, "seqno": 7, "safe_to_bootstrap": False} if history else None}


def primary(sst=True, state="Synced"):
    return {"running": True, "cluster_status": "Primary", "state": state, "cluster_size": 1, "sst_ready": sst,
            "grastate": {"uuid": UUID, "seqno": -1, "safe_to_bootstrap": False}}


def test_only_the_first_node_bootstraps_a_brand_new_cluster():
    fresh = {n: down() for n in NODES}
    assert plan.start_plan("n1", NODES, fresh)[0] == "bootstrap"
    assert plan.start_plan("n2", NODES, fresh) == ("wait", "waiting for n1 to bootstrap the new cluster")


def test_nobody_bootstraps_while_a_node_cannot_be_seen():
    action, reason = plan.start_plan("n1", NODES, {"n1": down(), "n2": down(), "n3": None})
    assert action == "wait" and "cannot see n3" in reason


def test_data_anywhere_without_a_live_cluster_means_recovery_not_bootstrap():
    for me in NODES:
        action, reason = plan.start_plan(me, NODES, {"n1": down(), "n2": down(history=True), "n3": down()})
        assert action == "refuse" and "galera_recover" in reason and "n2" in reason


def test_a_node_joins_a_running_cluster_once_it_can_donate():
    assert plan.start_plan("n3", NODES, {"n1": primary(), "n2": down(), "n3": down(history=True)})[0] == "join"
    assert plan.start_plan("n3", NODES, {"n1": primary(sst=False), "n2": down(), "n3": down()})[0] == "wait"


def test_a_rebooted_first_node_rejoins_instead_of_bootstrapping():
    assert plan.start_plan("n1", NODES, {"n1": down(history=True), "n2": primary(), "n3": primary()})[0] == "join"
    # even with no data of its own and the others unreachable but one
    assert plan.start_plan("n1", NODES, {"n1": down(), "n2": primary(), "n3": None})[0] == "join"


def test_a_running_member_does_nothing():
    assert plan.start_plan("n2", NODES, {"n1": primary(), "n2": primary(), "n3": primary()})[0] == "ok"


def test_a_node_running_outside_a_primary_component_waits():
    non_primary = dict(primary(), cluster_status="non-Primary")
    assert plan.start_plan("n2", NODES, {"n1": down(), "n2": non_primary, "n3": down()})[0] == "wait"
    assert plan.start_plan("n1", NODES, {"n1": down(), "n2": non_primary, "n3": down()})[0] == "wait"


def test_recovery_starts_from_the_highest_seqno_first_node_on_a_tie():
    positions = {"n1": {"uuid": UUID, "seqno": 40}, "n2": {"uuid": UUID, "seqno": 42}, "n3": {"uuid": UUID, "seqno": 42}}
    chosen = plan.recovery_plan(NODES, positions)
    assert chosen == {"bootstrap": "n2", "uuid": UUID, "seqno": 42, "then": ["n1", "n3"], "missing": []}
    assert plan.recovery_plan(NODES, {"n1": {"uuid": UUID, "seqno": 5}, "n3": {"uuid": UUID, "seqno": 4}})["missing"] == ["n2"]


def test_recovery_refuses_two_histories():
    other = "0a0a0a0a-2222-11ef-8000-0123456789ab"
    with pytest.raises(ValueError, match="different cluster UUIDs"):
        plan.recovery_plan(NODES, {"n1": {"uuid": UUID, "seqno": 5}, "n2": {"uuid": other, "seqno": 9}})
    with pytest.raises(ValueError, match="no node recovered"):
        plan.recovery_plan(NODES, {})


def test_one_state_transfer_at_a_time():
    donor = dict(primary(), state="Donor/Desynced", state_code=2)
    action, reason = plan.start_plan("n3", NODES, {"n1": donor, "n2": down(), "n3": down()})
    assert action == "wait" and "state transfer is in progress" in reason


def test_one_join_at_a_time_even_before_the_peers_transfer_shows():
    # n2's start is under way (its marker) while its server does not answer yet: n3 waits
    # rather than ask for a transfer beside it.
    joining = dict(down(), starting={"bootstrap": False, "age": 3.2})
    action, reason = plan.start_plan("n3", NODES, {"n1": primary(), "n2": joining, "n3": down()})
    assert (action, reason) == ("wait", "one join at a time: n2 is joining (for 3.2 s)")
    # once n2 is in the Primary component and Synced, n3 joins
    assert plan.start_plan("n3", NODES, {"n1": primary(), "n2": primary(), "n3": down()})[0] == "join"
    # a node's own marker does not hold it back, nor a marker while no cluster runs (a bootstrap)
    assert plan.start_plan("n3", NODES, {"n1": primary(), "n2": down(), "n3": joining})[0] == "join"
    assert plan.start_plan("n3", NODES, {"n1": dict(down(), starting={"bootstrap": True, "age": 1}), "n2": down(),
                                         "n3": down()})[0] == "wait"
