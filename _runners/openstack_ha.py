"""
Operator commands for openstack_ha, run on the master.

:depends: the ``openstack_ha`` execution module synced to the controllers; the master's pillar
    (``pillar/top.sls``) naming each controller's site.

.. code-block:: bash

    salt-run openstack_ha.status               # one table per site
    salt-run openstack_ha.status --out json    # the same, machine-readable
"""

import logging

import salt.client
import salt.key
import salt.pillar
import salt.utils.minions

log = logging.getLogger(__name__)

__virtualname__ = "openstack_ha"


def __virtual__():
    return __virtualname__


def _sites():
    """Map site name to its sorted controller ids, from the pillar the master compiles."""
    sites = {}
    accepted = salt.key.get_key(__opts__).list_status("accepted").get("minions", [])
    for minion in accepted:
        _, grains, _ = salt.utils.minions.get_minion_data(minion, __opts__)
        pillar = salt.pillar.get_pillar(__opts__, grains or {}, minion, saltenv="base").compile_pillar()
        model = pillar.get("openstack_ha") or {}
        ids = [c.get("id") for c in model.get("controllers") or [] if isinstance(c, dict)]
        if minion in ids and model.get("site"):
            sites.setdefault(model["site"], ids)
    return sites


def _collect(site, controllers, timeout):
    client = salt.client.LocalClient(mopts=__opts__)
    returns = client.cmd(controllers, "openstack_ha.controller_report", tgt_type="list", timeout=timeout)
    views = {}
    for ctrl in controllers:
        answer = returns.get(ctrl)
        views[ctrl] = answer if isinstance(answer, dict) and answer.get("site") == site else {"error": str(answer or "no answer")}
    return views


def _summarise(site, controllers, views):
    backends, vips = {}, {}
    for ctrl, view in views.items():
        for backend, servers in (view.get("haproxy") or {}).get("servers", {}).items():
            for server, info in servers.items():
                cell = info["status"] if info["admin"] == "ready" else info["admin"].upper()
                backends.setdefault(backend, {}).setdefault(server, {})[ctrl] = cell
        for vip in view.get("vips") or []:
            vips.setdefault(vip, []).append(ctrl)
    problems = []
    for ctrl, view in views.items():
        if "error" in view:
            problems.append("{} did not answer: {}".format(ctrl, view["error"]))
            continue
        if not view["haproxy"]["serving"]:
            problems.append("HAProxy is not serving on {}".format(ctrl))
        if not view["keepalived"]["running"]:
            problems.append("keepalived is not running on {}".format(ctrl))
    for vip, holders in vips.items():
        if len(holders) > 1:
            problems.append("split brain: VIP {} held by {}".format(vip, ", ".join(holders)))
    for backend, servers in backends.items():
        if not any(c == "UP" for cells in servers.values() for c in cells.values()):
            problems.append("backend {} has no UP server on any HAProxy".format(backend))
    return {"site": site, "controllers": controllers, "vip_holders": vips, "backends": backends,
            "healthy": not problems, "problems": problems}


def _table(summary):
    ctrls = summary["controllers"]
    width = max([len(c) for c in ctrls] + [12])
    lines = ["site {}: {}".format(summary["site"], "HEALTHY" if summary["healthy"] else "DEGRADED"), ""]
    lines.append("{:<24}".format("BACKEND / SERVER") + "".join(" {:<{w}}".format("@" + c, w=width) for c in ctrls))
    for backend in sorted(summary["backends"]):
        for server in sorted(summary["backends"][backend]):
            cells = summary["backends"][backend][server]
            lines.append("{:<24}".format("{}/{}".format(backend, server)[:24])
                         + "".join(" {:<{w}}".format(cells.get(c, "-"), w=width) for c in ctrls))
    lines.append("")
    for vip in sorted(summary["vip_holders"]) or ["(none)"]:
        lines.append("VIP {:<10} held by {}".format(vip, ", ".join(summary["vip_holders"].get(vip, [])) or "NOBODY"))
    for problem in summary["problems"]:
        lines.append("PROBLEM: " + problem)
    return "\n".join(lines)


def status(site=None, timeout=10):
    """
    Is the control plane healthy? One table per site: every backend as each controller's
    HAProxy sees it (UP, DOWN, DRAIN, MAINT), who holds each VIP, and any problem found.

    site
        only this site (default: every site the master's pillar defines).

    Returns the table as text, or the data itself with ``--out json``/``--out yaml``.
    """
    sites = _sites()
    if site is not None:
        sites = {site: sites[site]} if site in sites else {}
    summaries = [_summarise(name, ctrls, _collect(name, ctrls, timeout)) for name, ctrls in sorted(sites.items())]
    if __opts__.get("output") in ("json", "yaml", "pprint", "raw"):
        return {s["site"]: s for s in summaries}
    if not summaries:
        return "no openstack_ha site has an accepted controller{}".format("" if site is None else " named " + site)
    return "\n\n".join(_table(s) for s in summaries)
