"""
A Galera cluster brought back after every node went down: the most advanced node found,
bootstrapped, the others joined one at a time.

:depends: runs on the master; the controllers' ``openstack_ha_galera`` module. Takes the
    :class:`openstack_ha_context.Context` first. The plan itself is
    ``_utils/openstack_ha_galera_plan.py`` (pure, unit-tested).
"""

import time

from salt.exceptions import SaltInvocationError


def recover(ctx, site, confirm, timeout, progress):
    """
    The work of ``salt-run openstack_ha.galera_recover`` (see there). ``progress(message)``
    shows a step. Returns the plan and what was done, or ``{"refused": why, ...}`` when it
    must not go on. Raises SaltInvocationError for an unknown site or one without Galera.
    """

    site, _, model = ctx.call("sites.resolve_site", site)
    nodes = [n["id"] for n in ctx.util("model.galera_nodes")(model)]
    if not nodes:
        raise SaltInvocationError("Galera is not enabled in site {}".format(site))
    wait = float(timeout or model["galera"]["startup_timeout"]) + 30
    quorum = ctx.util("model.majority")(len(nodes))
    publish = ctx.utils["openstack_ha_publish.publish"]
    statuses = publish(ctx, nodes, "openstack_ha_galera.local_status", timeout=15)
    primary = sorted(n for n, s in statuses.items() if isinstance(s, dict) and s.get("running") and s.get("cluster_status") == "Primary")
    if primary:
        return {"refused": "the cluster is running (Primary on {}): nothing to recover; a stopped node rejoins with "
                           "`salt {} state.apply openstack_ha`".format(", ".join(primary), "<node>")}
    progress("recovering the last committed position of {}".format(", ".join(nodes)))
    positions = {n: p for n, p in publish(ctx, nodes, "openstack_ha_galera.recover_position", timeout=300).items() if isinstance(p, dict)}
    if len(positions) < quorum:
        return {"refused": "only {} of {} Galera nodes answered ({}); a recovery needs {}: the missing ones may hold "
                           "newer commits".format(len(positions), len(nodes), ", ".join(sorted(positions)) or "none", quorum)}
    try:
        plan = ctx.util("galera_plan.recovery_plan")(nodes, positions)
    except ValueError as exc:
        return {"refused": str(exc), "positions": positions}
    steps = ["write grastate.dat on {bootstrap} (uuid {uuid}, seqno {seqno}, safe_to_bootstrap 1)".format(**plan),
             "bootstrap the cluster on {}".format(plan["bootstrap"])]
    steps += ["start {} and wait until Synced".format(n) for n in plan["then"]]
    result = {"site": site, "positions": positions, "plan": steps, "missing": plan["missing"]}
    if plan["missing"]:
        result["warning"] = "{} did not answer and may hold newer commits".format(", ".join(plan["missing"]))
    if not confirm:
        result["confirm"] = "nothing changed: run again with confirm=True to carry out this plan"
        return result
    done = []
    with ctx.call("records.lock", site):
        stopped = publish(ctx, nodes, "openstack_ha_galera.stop", timeout=180)
        done.append("stopped leftover servers: {}".format(", ".join(n for n, was in stopped.items() if was is True) or "none"))
        answer = publish(ctx, [plan["bootstrap"]], "openstack_ha_galera.write_grastate", (plan["uuid"], plan["seqno"], True), timeout=30)
        if not isinstance(answer.get(plan["bootstrap"]), dict):
            return dict(result, failed="grastate.dat not written on {}: {}".format(plan["bootstrap"], answer.get(plan["bootstrap"])), done=done)
        done.append(steps[0])
        for node, bootstrap in [(plan["bootstrap"], True)] + [(n, False) for n in plan["then"]]:
            progress("{} {}".format("bootstrapping on" if bootstrap else "starting", node))
            answer = publish(ctx, [node], "openstack_ha_galera.start", kwargs={"bootstrap": bool(bootstrap)}, timeout=wait).get(node)
            if not isinstance(answer, dict) or answer.get("state_code") != 4:
                return dict(result, failed="{} did not become Synced: {}".format(node, answer), done=done)
            done.append("{} {}: {} (cluster size {}, UUID {})".format(
                "bootstrapped" if bootstrap else "started", node, answer.get("state"), answer.get("cluster_size"), answer.get("cluster_uuid")))
            progress(done[-1])
    entry = {"what": "galera_recover", "why": "full-cluster recovery from {} (seqno {})".format(plan["bootstrap"], plan["seqno"]),
             "evidence": positions, "decided_by": "operator (salt-run openstack_ha.galera_recover)", "time": time.time()}
    ctx.call("records.record", site, [(entry, "openstack_ha/galera/recovered")])
    return dict(result, done=done)
