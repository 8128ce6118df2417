"""
The status table of ``salt-run openstack_ha.status``: one table per site, drawn from the data
the runner returns (``--out json`` or salt-api callers get that data itself).

:depends: ``outputter_dirs`` in the master's configuration (``master.d/openstack_ha.conf``).

.. code-block:: bash

    salt-run openstack_ha.status
"""

import os
import time

__virtualname__ = "openstack_ha_status"


def __virtual__():
    return __virtualname__


def output(data, **kwargs):  # pylint: disable=unused-argument
    """The table for ``data`` (``{site: summary}``), or the refusal/text it holds."""
    if isinstance(data, dict) and "refused" in data:
        return "refused: " + str(data["refused"])
    if not isinstance(data, dict) or not all(isinstance(s, dict) and "site" in s for s in data.values()):
        return str(data)
    if not data:
        return "no openstack_ha site has an accepted controller"
    return "\n\n".join(table(data[name]) for name in sorted(data))


def table(summary):
    """One site's table, as text."""
    ctrls = summary["controllers"]
    width = max([len(c) for c in ctrls] + [12])
    lines = ["site {}: {}".format(summary["site"], "HEALTHY" if summary["healthy"] else "DEGRADED")]
    if summary.get("bad_pillar"):
        lines.append("PILLAR INVALID: {} ({})".format(summary["bad_pillar"]["error"], summary["bad_pillar"]["acting_on"]))
    if summary.get("ignored"):
        lines.append("IGNORED (not believed): " + "; ".join("{} x{} from {}".format(e["why"], e["count"], e["who"]) for e in summary["ignored"][:5]))
    lines.append("")
    lines.append("{:<24}".format("BACKEND / SERVER") + "".join(" {:<{w}}".format("@" + c, w=width) for c in ctrls))
    for backend in sorted(summary["backends"]):
        for server in sorted(summary["backends"][backend]):
            cells = summary["backends"][backend][server]
            lines.append("{:<24}".format("{}/{}".format(backend, server)[:24])
                         + "".join(" {:<{w}}".format(cells.get(c, "-"), w=width) for c in ctrls))
    lines.append("")
    if summary.get("galera"):
        sizes = sorted({g.get("cluster_size") for g in summary["galera"].values() if g.get("running")})
        uuids = sorted({g.get("cluster_uuid") for g in summary["galera"].values() if g.get("running")})
        lines.append("GALERA  cluster size {}  state UUID {}".format("/".join(str(x) for x in sizes) or "-", ", ".join(uuids) or "-"))
        for ctrl in ctrls:
            g = summary["galera"].get(ctrl)
            if g is not None:
                state = (g.get("state") or "") + ("" if g.get("cluster_status") in (None, "Primary") else " " + g["cluster_status"])
                lines.append("  {:<{w}} {:<22} {}".format(ctrl, state.strip() if g.get("running") else "DOWN", g.get("reason") or "", w=width))
        lines.append("")
    if summary.get("rabbitmq"):
        members = sorted({m for r in summary["rabbitmq"].values() for m in r.get("members") or []})
        lines.append("RABBITMQ  members {}".format(", ".join(members) or "-"))
        for ctrl in ctrls:
            r = summary["rabbitmq"].get(ctrl)
            if r is not None:
                state = "running" if r.get("app_running") else ("paused" if r.get("running") else "DOWN")
                extra = []
                if any((r.get("partitions") or {}).values()):
                    extra.append("partitions {}".format(r["partitions"]))
                if r.get("alarms"):
                    extra.append("alarms " + "; ".join(r["alarms"]))
                lines.append("  {:<{w}} {:<9} sees {} running  {}".format(ctrl, state, len(r.get("running_nodes") or []), " ".join(extra), w=width))
        lines.append("")
    catalog = summary.get("catalog")
    if catalog is not None:
        if catalog.get("problem"):
            lines.append("KEYSTONE CATALOG ({} mode)  UNREACHABLE: {}".format(catalog["mode"], catalog["problem"]))
        else:
            lines.append("KEYSTONE CATALOG ({} mode)  {}".format(catalog["mode"], "as wanted" if catalog["ok"] else "DRIFT"))
            hosts = sorted({url.split("/")[2].rsplit(":", 1)[0] for url in catalog["endpoints"].values()})
            lines.append("  {} endpoints, pointing at {}".format(len(catalog["endpoints"]), ", ".join(hosts)))
            for key, change in sorted(catalog["drift"].items()):
                lines.append("  {:<24} is {}  wanted {}".format(key, change["old"] or "MISSING", change["new"] or "(removed)"))
        lines.append("")
    for vip in sorted(summary["vip_holders"]) or ["(none)"]:
        lines.append("VIP {:<10} held by {}".format(vip, ", ".join(summary["vip_holders"].get(vip, [])) or "NOBODY"))
    for problem in summary["problems"]:
        lines.append("PROBLEM: " + problem)
    if summary.get("maintenance"):
        lines.append("planned maintenance: " + ", ".join(summary["maintenance"]))
    for host in summary.get("hosts_in_maintenance") or []:
        lines.append("HOST IN MAINTENANCE: {} (its VIPs and the Galera writer role are elsewhere)".format(host))
    for ctrl, components in sorted((summary.get("pending_restart") or {}).items()):
        for component, files in sorted(components.items()):
            lines.append("PENDING RESTART: {} on {} (changed since it started: {})".format(
                component, ctrl, ", ".join(os.path.basename(f) for f in files)))
    if summary.get("recent"):
        lines += ["", "RECENT DECISIONS"]
        for d in summary["recent"]:
            what = d.get("alert") and "alert " + d["alert"] or d["what"]
            target = ("{}/{}".format(d["service"], d["backend"]) if d.get("backend") else d["service"]) if d.get("service") else d.get("vip", "")
            lines.append("{}  {:<20} {:<24} {}".format(time.strftime("%H:%M:%S", time.localtime(d["time"])), what, target, d.get("why", "")))
    return "\n".join(lines)
