"""
Pure decisions for Galera: when a node may start, join or bootstrap, and which node a
full-cluster recovery starts from. No I/O: the callers gather each node's status (the
health daemon's ``/status``, or ``mariadbd --wsrep-recover``) and act on the answer.

The rule that keeps one cluster: a brand-new cluster is bootstrapped only by the first
Galera node, only when every node answered, and only when no node runs a cluster or holds
Galera history (a grastate.dat with a cluster UUID). Anything else that finds no live
cluster refuses and points at ``salt-run openstack_ha.galera_recover``.
"""

ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def has_history(status):
    """True when a node's status shows it has been part of a Galera cluster (its grastate.dat
    carries a cluster UUID), so bootstrapping a new cluster would throw its data away."""
    grastate = (status or {}).get("grastate") or {}
    return bool(grastate.get("uuid")) and grastate.get("uuid") != ZERO_UUID


def in_primary(status):
    return bool(status) and status.get("running") and status.get("cluster_status") == "Primary"


def start_plan(me, nodes, statuses):
    """
    What node ``me`` should do now.

    me
        this node's id; nodes: every Galera node id, bootstrap candidate first.
    statuses
        {node id: status dict (see the health daemon's ``/status``) or None when unreachable}.

    Returns ``(action, reason)`` with action one of: ``ok`` (in a Primary component already),
    ``join`` (a peer runs a Primary component ready to donate), ``bootstrap`` (start a new
    cluster here), ``wait`` (try again shortly) or ``refuse`` (an operator must act).
    """
    mine = statuses.get(me)
    if in_primary(mine):
        return "ok", "in the Primary component ({}, cluster size {})".format(mine.get("state"), mine.get("cluster_size"))
    if mine and mine.get("running"):
        return "wait", "running but not (yet) in a Primary component ({})".format(mine.get("cluster_status") or "no cluster")
    donors = [n for n in nodes if n != me and in_primary(statuses.get(n))]
    busy = [n for n in donors if statuses[n].get("state_code", 4) != 4]
    if busy:
        # One state transfer at a time: a donor serves one joiner, and a second joiner asking
        # at the same moment fails its transfer.
        return "wait", "a state transfer is in progress ({})".format(", ".join("{} {}".format(n, statuses[n].get("state")) for n in busy))
    joining = [n for n in nodes if n != me and n not in donors and (statuses.get(n) or {}).get("starting")]
    if donors and joining:
        # A peer's join is under way (its start marker) but not visible as a transfer yet: its
        # server is starting, or receives its state (a joiner answers no query until it has
        # it). Two joiners at once leave the second one's transfer to a donor that has only
        # just joined itself; one of the lab's first applies waited ten minutes for such a
        # joiner to become Synced. One join at a time.
        return "wait", "one join at a time: " + "; ".join("{} is joining (for {} s)".format(
            n, statuses[n]["starting"].get("age", "?")) for n in joining)
    ready = [n for n in donors if statuses[n].get("sst_ready")]
    if ready:
        return "join", "joins the running cluster (Primary on {})".format(", ".join(ready))
    if donors:
        return "wait", "the cluster on {} is not ready to donate yet (no SST user)".format(", ".join(donors))
    in_flight = [n for n in nodes if n != me and (statuses.get(n) or {}).get("starting")]
    if in_flight:
        # A peer's start (a bootstrap above all) is under way: its grastate.dat may already
        # carry the new cluster's UUID while its server does not answer yet. That is a cluster
        # being born, not one that died: wait for it.
        return "wait", "; ".join("{} is {} (for {} s)".format(
            n, "bootstrapping a new cluster" if statuses[n]["starting"].get("bootstrap") else "starting its server",
            statuses[n]["starting"].get("age", "?")) for n in in_flight) + ": waiting to join"
    starting = [n for n in nodes if n != me and (statuses.get(n) or {}).get("running")]
    if starting:
        return "wait", "{} running without a Primary component: waiting for the cluster to form".format(", ".join(starting))
    holders = [n for n in nodes if has_history(statuses.get(n))]
    if holders:
        return "refuse", ("no Galera node runs a Primary component and {} hold(s) cluster data: bootstrapping here "
                          "could split or lose it; run `salt-run openstack_ha.galera_recover`".format(", ".join(holders)))
    unknown = [n for n in nodes if n != me and statuses.get(n) is None]
    if unknown:
        return "wait", "cannot see {}: a new cluster is only bootstrapped when every node answers".format(", ".join(unknown))
    if me == nodes[0]:
        return "bootstrap", "no node has Galera data or a live cluster: bootstrapping a new cluster here"
    return "wait", "waiting for {} to bootstrap the new cluster".format(nodes[0])


def recovery_plan(nodes, positions):
    """
    The order of a full-cluster recovery.

    nodes
        every Galera node id, in controller order.
    positions
        {node id: {"uuid": str, "seqno": int}} for the nodes whose position was recovered.

    Returns ``{"bootstrap": id, "uuid": str, "seqno": int, "then": [ids], "missing": [ids]}``:
    the node with the highest seqno (the first in ``nodes`` on a tie) starts the cluster, the
    others rejoin one at a time in ``nodes`` order. Raises ValueError when the recovered
    nodes disagree on the cluster UUID or none recovered a position.
    """
    known = {n: p for n, p in positions.items() if p and p.get("uuid") and p.get("uuid") != ZERO_UUID}
    if not known:
        raise ValueError("no node recovered a cluster position")
    uuids = sorted({p["uuid"] for p in known.values()})
    if len(uuids) > 1:
        raise ValueError("the nodes hold different cluster UUIDs ({}): refusing to pick one".format(", ".join(uuids)))
    ordered = [n for n in nodes if n in known]
    best = max(ordered, key=lambda n: (int(known[n]["seqno"]), -ordered.index(n)))
    return {"bootstrap": best, "uuid": uuids[0], "seqno": int(known[best]["seqno"]),
            "then": [n for n in nodes if n != best], "missing": [n for n in nodes if n not in known]}
