"""
The Keystone catalog as the model wants it, against the catalog Keystone holds: what to change.

:depends: nothing beyond the Python standard library (``apply`` takes any object with the
    methods of ``openstack_ha_keystone.Keystone``).

:func:`plan` is pure: wanted endpoints (from ``openstack_ha_model.catalog_endpoints``) and
Keystone's regions, services and endpoints in; the changes out. :func:`apply` carries a plan
out: URL updates first (a repoint is what clients are waiting for), in place, so an endpoint
keeps its id; then what is missing; then duplicates. Only the services the model names are
touched; any other service or endpoint in Keystone is left alone.
"""

from concurrent.futures import ThreadPoolExecutor


def _key(entry):
    return "{}/{}".format(entry["service"], entry["interface"])


def _match_service(services, name, stype):
    """The Keystone service for (``name``, ``type``): the one of that type with that name,
    else the only one of that type (a catalog made by other tools may name it differently)."""
    of_type = [s for s in services if s.get("type") == stype]
    named = [s for s in of_type if s.get("name") == name]
    if named:
        return named[0]
    return of_type[0] if len(of_type) == 1 else None


def plan(wanted, regions, services, endpoints):
    """
    Compare the wanted catalog with Keystone's.

    wanted
        ``[{service, type, interface, region, url}]``.
    regions, services, endpoints
        Keystone's lists (``GET /v3/regions``, ``/services``, ``/endpoints``).

    Returns ``{"regions": [ids], "services": [{name, type}], "update": [...], "create":
    [...], "delete": [...]}``: ``update`` entries ``{id, service, interface, region, old,
    new}``; ``create`` entries the wanted ones; ``delete`` the surplus endpoints of a managed
    (service, interface, region) ``{id, service, interface, region, old}``. Empty lists
    everywhere mean the catalog is as wanted.
    """
    have_regions = {r["id"] for r in regions}
    result = {"regions": [], "services": [], "update": [], "create": [], "delete": []}
    for region in sorted({w["region"] for w in wanted} - have_regions):
        result["regions"].append(region)
    new_services = {}
    for entry in wanted:
        service = _match_service(services, entry["service"], entry["type"])
        if service is None:
            new_services.setdefault(entry["service"], {"name": entry["service"], "type": entry["type"]})
            result["create"].append(entry)
            continue
        found = sorted((e for e in endpoints if e.get("service_id") == service["id"] and e.get("interface") == entry["interface"]
                        and (e.get("region_id") or e.get("region")) == entry["region"]),
                       key=lambda e: (e.get("url") != entry["url"], e["id"]))
        if not found:
            result["create"].append(dict(entry, service_id=service["id"]))
            continue
        keep, surplus = found[0], found[1:]
        if keep.get("url") != entry["url"] or keep.get("enabled") is False:
            result["update"].append({"id": keep["id"], "service": entry["service"], "interface": entry["interface"],
                                     "region": entry["region"], "old": keep.get("url"), "new": entry["url"]})
        for extra in surplus:
            result["delete"].append({"id": extra["id"], "service": entry["service"], "interface": entry["interface"],
                                     "region": entry["region"], "old": extra.get("url")})
    result["services"] = [new_services[n] for n in sorted(new_services)]
    return result


def is_empty(changes):
    """True when a :func:`plan` has nothing to do."""
    return not any(changes.values())


def describe(changes):
    """A plan as Salt ``changes``: ``{"nova/public": {"old": url, "new": url}, ...}``
    (``old`` None for a creation, ``new`` None for a deletion), plus ``region <id>`` and
    ``service <name>`` entries."""
    out = {}
    for region in changes["regions"]:
        out["region " + region] = {"old": None, "new": region}
    for service in changes["services"]:
        out["service " + service["name"]] = {"old": None, "new": service["type"]}
    for entry in changes["update"]:
        out[_key(entry)] = {"old": entry["old"], "new": entry["new"]}
    for entry in changes["create"]:
        out[_key(entry)] = {"old": None, "new": entry["url"]}
    for entry in changes["delete"]:
        out["{} duplicate {}".format(_key(entry), entry["id"])] = {"old": entry["old"], "new": None}
    return out


def apply(client, changes, workers=24):
    """
    Carry out a :func:`plan` with ``client`` (an ``openstack_ha_keystone.Keystone``).

    URL updates run in parallel (``workers`` at a time: by default a whole site's at once;
    Keystone queues what its workers cannot take yet) and first; then regions, services,
    new endpoints and the removal of duplicates. Returns ``{"done": [keys of what was
    changed], "failed": {key: message}}``; a failure of one change never stops the others
    (the next run finds what is still missing).
    """
    done, failed = [], {}

    def attempt(key, call, *args):
        try:
            call(*args)
            return key, None
        except Exception as exc:  # KeystoneError from the client; any other is reported too
            return key, str(exc)

    def record(results):
        for key, error in results:
            if error is None:
                done.append(key)
            else:
                failed[key] = error

    updates = changes["update"]
    if updates:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(updates)))) as pool:
            record(pool.map(lambda e: attempt(_key(e), client.update_endpoint, e["id"], e["new"]), updates))
    for region in changes["regions"]:
        record([attempt("region " + region, client.create_region, region)])
    service_ids = {}
    for service in changes["services"]:
        try:
            service_ids[service["name"]] = client.create_service(service["name"], service["type"])["id"]
            done.append("service " + service["name"])
        except Exception as exc:
            failed["service " + service["name"]] = str(exc)
    for entry in changes["create"]:
        service_id = entry.get("service_id") or service_ids.get(entry["service"])
        if service_id is None:
            failed[_key(entry)] = "its service {} could not be created".format(entry["service"])
            continue
        record([attempt(_key(entry), client.create_endpoint, service_id, entry["interface"], entry["region"], entry["url"])])
    for entry in changes["delete"]:
        record([attempt("{} duplicate {}".format(_key(entry), entry["id"]), client.delete_endpoint, entry["id"])])
    return {"done": done, "failed": failed}
