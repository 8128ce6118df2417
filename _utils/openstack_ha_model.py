"""
The ``openstack_ha`` pillar model: defaults layering and validation, in one place.

:depends: nothing beyond the Python standard library.

Every rendering (HAProxy, keepalived, Galera, RabbitMQ, beacons) and every runner decision
reads the model returned by :func:`build`. Validation collects every problem it finds and
names each by its key path (``openstack_ha:services:nova:port``) and what was expected, so an
operator fixes a pillar in one pass.

This file is plain Python so it can be loaded three ways: as a Salt utils module
(``__utils__['openstack_ha_model.build']``), by the runner on the master, and directly by the
unit tests.
"""

import copy
import ipaddress
import re

ROOT = "openstack_ha"
ENDPOINT_MODES = ("vip", "active_controller")
SST_METHODS = ("mariabackup", "rsync", "mysqldump")
INTERFACES = ("public", "internal", "admin")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MINION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
FQDN_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# A raw HAProxy line from pillar may not open a new section or smuggle a second line in.
# Every section keyword of HAProxy 2.6 (``program`` makes HAProxy's master run a command).
SECTION_WORDS = ("global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "program", "userlist",
                 "mailers", "http-errors", "ring", "log-forward", "cache", "fcgi-app", "crt-store", "traces")
# Raw-line words that would make HAProxy run a program.
FORBIDDEN_WORDS = ("external-check",)
PATH_RE = re.compile(r"^/[A-Za-z0-9_./{}+-]*$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,63}$")
SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}
FAMILY_KEYS = {4: "ipv4", 6: "ipv6"}
# RabbitMQ's account for openstack_ha's own reads of the management API (tag monitoring, no
# vhost): its password is derived from the Erlang cookie (openstack_ha_rabbitmq._monitor_password: private, no CLI).
RABBIT_MONITOR_USER = "openstack-ha-monitor"
MAX_CONTROLLERS = 25  # keepalived priorities 250, 240, ... 10: the 26th would get 0

# Every key the model knows, for the "unknown key" check. A dict is a section whose keys are
# listed; "*" stands for names the operator chooses (a service, a VIP, a database); ANY is a
# value checked elsewhere (or free-form, like a policy definition); a one-element list is a
# list whose items follow that schema.
ANY = object()
_CHECK = {"inter": ANY, "fastinter": ANY, "timeout": ANY, "fall": ANY, "rise": ANY}
_TIMEOUTS = {"connect": ANY, "server": ANY, "client": ANY, "queue": ANY, "response": ANY}
SCHEMA = {
    "site": ANY, "network": ANY, "paths": ANY, "packages": ANY, "local": ANY,
    "controllers": [{"id": ANY, "address": ANY, "interface": ANY, "fqdn": ANY}],
    "vips": {"*": {"address": ANY, "interface": ANY, "vrid": ANY, "fqdn": ANY}},
    "services": {"*": {"port": ANY, "backend_port": ANY, "vip": ANY, "check": {"path": ANY, "status": ANY, "timeout": ANY},
                       "catalog": {"type": ANY, "path": ANY}, "retry_idempotent": ANY, "timeouts": _TIMEOUTS,
                       "tls": {"certificate": ANY, "key": ANY}, "extra_options": ANY}},
    "haproxy": {"socket": ANY, "state_file": ANY, "maxconn": ANY, "stats": {"enabled": ANY, "port": ANY, "user": ANY, "password": ANY},
                "metrics": {"enabled": ANY, "port": ANY},
                "retries": ANY, "redispatch": ANY, "timeouts": _TIMEOUTS, "extra_defaults": ANY},
    "keepalived": {"advert_int": ANY, "nopreempt": ANY, "garp_master_delay": ANY, "garp_master_repeat": ANY,
                   "garp_master_refresh": ANY, "track_interval": ANY, "rt_priority": ANY},
    "galera": {"enabled": ANY, "nodes": ANY, "port": ANY, "vip": ANY, "sst_method": ANY, "cluster_name": ANY, "sst_user": ANY,
               "monitor_user": ANY, "sst_password": ANY, "monitor_password": ANY, "root_password": ANY, "check": ANY,
               "health_port": ANY, "evict_dead_peers": ANY, "exporter": {"enabled": ANY, "port": ANY}, "haproxy_check": _CHECK, "startup_timeout": ANY, "max_connect_errors": ANY, "sizes": ANY,
               "provider_options": ANY, "databases": {"*": {"user": ANY, "password": ANY}},
               "tls": {"ca": ANY, "nodes": {"*": {"certificate": ANY, "key": ANY}}}},
    "rabbitmq": {"enabled": ANY, "nodes": ANY, "release": ANY, "port": ANY, "cookie": ANY, "partition_handling": ANY,
                 "net_ticktime": ANY, "prometheus": {"enabled": ANY, "port": ANY},
                 "management": {"enabled": ANY, "port": ANY}, "heal_partitions": ANY, "memory_high_watermark": ANY, "disk_free_limit": ANY,
                 "users": {"*": {"password": ANY, "vhost": ANY, "tags": ANY}},
                 "policies": {"*": {"vhost": ANY, "pattern": ANY, "definition": ANY, "apply-to": ANY, "priority": ANY}}},
    "keystone": {"region": ANY, "endpoint_mode": ANY, "scheme": ANY, "timeout": ANY,
                 "interfaces": {"public": ANY, "internal": ANY, "admin": ANY}},
    "remediation": {"enabled": ANY, "quorum": ANY, "cooldown": ANY, "heartbeat": ANY,
                    "probe": {"interval": ANY, "timeout": ANY, "fall": ANY, "rise": ANY, "watch": ANY, "keepalive": ANY}, "haproxy_check": _CHECK},
}


# The oldest Salt release this project supports (3006 is the LTS line); CI tests 3008.3.
MIN_SALT = (3006, 0)


def salt_release_problem(info=None):
    """None when the running Salt (or ``info``, a version tuple) is supported, else the reason,
    naming the minimum: what every ``__virtual__`` of the project says instead of failing on an
    import deep inside."""
    if info is None:
        import salt.version

        info = salt.version.__saltstack_version__.info
    if tuple(info[:2]) < MIN_SALT:
        return "openstack_ha needs Salt {}.{} or newer; this is {}".format(MIN_SALT[0], MIN_SALT[1], ".".join(str(x) for x in info[:3]))
    return None


def json_schema():
    """A JSON Schema (draft 2020-12) of the ``openstack_ha`` pillar's keys, from ``SCHEMA``:
    for editors, which then complete key names and flag unknown ones. Values are checked by
    :func:`validate` (the schema leaves them open); ``docs/openstack_ha.schema.json`` is this,
    written by ``scripts/json_schema.py``."""

    def node(schema):
        if isinstance(schema, list):
            return {"type": "array", "items": node(schema[0])}
        if not isinstance(schema, dict):
            return {}
        if set(schema) == {"*"}:
            return {"type": "object", "additionalProperties": node(schema["*"])}
        return {"type": "object", "additionalProperties": False,
                "properties": {key: node(sub) for key, sub in sorted(schema.items())}}

    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "openstack_ha pillar",
            "type": "object", "properties": {"openstack_ha": node(SCHEMA)}}


class ModelError(Exception):
    """Raised with every problem found in a pillar model, one per line."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(
            "invalid openstack_ha pillar ({} problem{}):\n  {}".format(
                len(self.problems),
                "" if len(self.problems) == 1 else "s",
                "\n  ".join(self.problems),
            )
        )


def deep_merge(base, override):
    """
    Return a new dict: ``base`` with ``override`` merged over it, recursively for dicts.

    Lists and scalars in ``override`` replace those in ``base``. Neither input is modified.
    """
    result = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _describe(value):
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing"
    return "{!r} ({})".format(value, type(value).__name__)


class _Checker:
    """Collects problems while walking the model; each helper returns the value if it is valid."""

    def __init__(self):
        self.problems = []

    def fail(self, path, message):
        self.problems.append("{}: {}".format(":".join(str(p) for p in path), message))

    def require(self, mapping, key, path):
        if not isinstance(mapping, dict) or key not in mapping or mapping[key] is None:
            self.fail(path + [key], "missing (required)")
            return None
        return mapping[key]

    def mapping(self, value, path, required=True):
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "expected a mapping, got {}".format(_describe(value)))
            return None
        return value

    def integer(self, value, path, low, high):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(path, "expected an integer {}-{}, got {}".format(low, high, _describe(value)))
            return None
        return value

    def number(self, value, path, low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            self.fail(path, "expected a number {}-{}, got {}".format(low, high, _describe(value)))
            return None
        return value

    def boolean(self, value, path):
        if not isinstance(value, bool):
            self.fail(path, "expected true or false, got {}".format(_describe(value)))
            return None
        return value

    def string(self, value, path, pattern=None, what="a string", min_len=1):
        if not isinstance(value, str) or len(value) < min_len:
            self.fail(path, "expected {}, got {}".format(what, _describe(value)))
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(path, "expected {}, got {}".format(what, _describe(value)))
            return None
        return value

    def secret(self, value, path, min_len):
        """Check a secret without ever echoing it back."""
        if not isinstance(value, str) or not value:
            self.fail(path, "missing (required secret)")
            return None
        if len(value) < min_len:
            self.fail(path, "too short: expected at least {} characters, got {}".format(min_len, len(value)))
            return None
        if any(c in value for c in "\n\r\"'\\"):
            self.fail(path, "must not contain quotes, backslashes or line breaks")
            return None
        return value

    def choice(self, value, path, choices):
        if value not in choices:
            self.fail(path, "expected one of {}, got {}".format(", ".join(choices), _describe(value)))
            return None
        return value

    def address(self, value, path, networks=None):
        """One IP address (any spelling) as an ``ipaddress`` object; with ``networks``
        ({family: network}) it must lie in its family's network. No scope suffix (``%eth0``):
        a VIP or a controller address is global to the site."""
        if isinstance(value, str) and "%" in value:
            self.fail(path, "{!r} has a scope suffix: write the address without '%...'".format(value))
            return None
        try:
            ip = ipaddress.ip_address(value) if isinstance(value, str) else None
        except ValueError:
            ip = None
        if ip is None:
            self.fail(path, "expected an IP address, got {}".format(_describe(value)))
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            self.fail(path, "{} is an IPv4-mapped IPv6 address: write the IPv4 address {}".format(value, ip.ipv4_mapped))
            return None
        if networks is not None:
            net = networks.get(ip.version)
            if net is None:
                self.fail(path, "{} is an {} address but the site has no {} network (network: {})".format(
                    value, FAMILY_NAMES[ip.version], FAMILY_NAMES[ip.version], ", ".join(str(n) for n in networks.values()) or "none"))
                return None
            if ip not in net:
                self.fail(path, "{} is outside the site's {} network {}".format(value, FAMILY_NAMES[ip.version], net))
                return None
        return ip

    def addresses(self, value, path, networks):
        """An address or a list of up to one address per family: ``{family: ip}`` in the
        order written, or None when any is wrong."""
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not 1 <= len(value) <= 2:
            self.fail(path, "expected an address, or a list of two (an IPv4 and an IPv6 one), got {} entries".format(len(value)))
            return None
        found, ok = {}, True
        for index, item in enumerate(items):
            here = path + [index] if isinstance(value, list) else path
            ip = self.address(item, here, networks)
            if ip is None:
                ok = False
            elif ip.version in found:
                self.fail(here, "a second {} address ({} and {}): one address per family".format(FAMILY_NAMES[ip.version], found[ip.version], ip))
                ok = False
            else:
                found[ip.version] = ip
        return found if ok else None

    def extra_lines(self, value, path):
        """Raw HAProxy lines: a list of single-line strings that do not open a section."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "expected a list of HAProxy lines, got {}".format(_describe(value)))
            return []
        for index, line in enumerate(value):
            if not isinstance(line, str) or not line.strip() or "\n" in line or "\r" in line:
                self.fail(path + [index], "expected one non-empty line, got {}".format(_describe(line)))
            elif line.split()[0] in SECTION_WORDS:
                self.fail(path + [index], "may not open a new section ({!r})".format(line.split()[0]))
            elif any(word in FORBIDDEN_WORDS for word in line.split()):
                self.fail(path + [index], "may not make HAProxy run a program ({!r})".format(line))
        return value

    def name(self, value, path, known, what):
        """A reference to one of ``known`` names (a VIP, a controller): a string, never a list."""
        if not isinstance(value, str):
            self.fail(path, "expected the name of a {}, got {}".format(what, _describe(value)))
            return None
        if value not in known:
            self.fail(path, "unknown {} {!r} (known: {})".format(what, value, ", ".join(sorted(known)) or "none"))
            return None
        return value


def check_unknown_keys(c, value, schema, path):
    """Report every key of ``value`` that ``schema`` does not know, by key path, with the
    closest known key as a suggestion (a ``remediaton:`` typo must not leave the safety
    switch at its default in silence)."""
    import difflib

    if schema is ANY:
        return
    if isinstance(schema, list):
        if isinstance(value, list):
            for index, item in enumerate(value):
                check_unknown_keys(c, item, schema[0], path + [index])
        return
    if not isinstance(value, dict):
        return
    for key, sub in value.items():
        if "*" in schema:
            check_unknown_keys(c, sub, schema["*"], path + [key])
        elif key not in schema:
            known = sorted(k for k in schema if k != "local")
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            c.fail(path + [key], "unknown key{}".format(" (did you mean {!r}?)".format(close[0]) if close else
                                                         " (known: {})".format(", ".join(known))))
        else:
            check_unknown_keys(c, sub, schema[key], path + [key])


def _check_controllers(c, model, networks):
    """Check ``controllers``; returns (ids, {normalised address: where}) so VIPs can be
    checked against the controllers' own addresses in any spelling."""
    path = [ROOT, "controllers"]
    controllers = c.require(model, "controllers", [ROOT])
    if controllers is None:
        return [], {}
    if not isinstance(controllers, list) or not controllers:
        c.fail(path, "expected a non-empty list of controllers, got {}".format(_describe(controllers)))
        return [], {}
    if len(controllers) > MAX_CONTROLLERS:
        c.fail(path, "at most {} controllers (keepalived priorities step down by 10 from 250), got {}".format(MAX_CONTROLLERS, len(controllers)))
    primary = next(iter(networks), None)
    seen_ids, seen_addresses, ids = {}, {}, []
    for index, ctrl in enumerate(controllers):
        here = path + [index]
        if c.mapping(ctrl, here) is None:
            continue
        cid = c.string(c.require(ctrl, "id", here), here + ["id"], MINION_ID_RE, "a Salt minion id")
        address = c.require(ctrl, "address", here)
        found = c.addresses(address, here + ["address"], networks) if address is not None else {}
        if "interface" in ctrl:
            c.string(ctrl["interface"], here + ["interface"], IFACE_RE, "an interface name")
        if "fqdn" in ctrl:
            c.string(ctrl["fqdn"], here + ["fqdn"], FQDN_RE, "a DNS name")
        if cid is not None:
            if cid in seen_ids:
                c.fail(here + ["id"], "controller {!r} is listed twice (also at index {})".format(cid, seen_ids[cid]))
            else:
                seen_ids[cid] = index
                ids.append(cid)
        if found and primary is not None and primary not in found:
            c.fail(here + ["address"], "no {} address: every controller needs one in the site's first network {} "
                   "(Galera, RabbitMQ and HAProxy's backends use that family)".format(FAMILY_NAMES[primary], networks[primary]))
        written = dict(zip((found or {}).values(), address if isinstance(address, list) else [address]))
        for ip in (found or {}).values():
            if ip in seen_addresses:
                there = seen_addresses[ip][1]
                c.fail(here + ["address"], "address {} is already used by controller at index {}{}".format(
                    ip, seen_addresses[ip][0], "" if written[ip] == there else " (written {!r} there)".format(there)))
            seen_addresses.setdefault(ip, (index, written[ip]))
    return ids, seen_addresses


def _check_vips(c, model, networks, controller_addresses):
    path = [ROOT, "vips"]
    vips = c.mapping(c.require(model, "vips", [ROOT]), path)
    if not vips:
        if vips is not None:
            c.fail(path, "expected at least one VIP")
        return {}
    controllers = [ctrl for ctrl in model.get("controllers") or [] if isinstance(ctrl, dict)]
    seen_vrid, seen_addr = {}, {}
    for name, vip in vips.items():
        here = path + [name]
        if not isinstance(name, str) or not NAME_RE.match(name):
            c.fail(here, "VIP names must be short lowercase words")
        if c.mapping(vip, here) is None:
            continue
        address = c.require(vip, "address", here)
        found = c.addresses(address, here + ["address"], networks) if address is not None else {}
        for family, ip in (found or {}).items():
            if ip in controller_addresses:
                c.fail(here + ["address"], "VIP {} is a controller's own address".format(ip))
            if ip in seen_addr:
                c.fail(here + ["address"], "VIP {} is also VIP {!r}".format(ip, seen_addr[ip]))
            seen_addr.setdefault(ip, name)
            lacking = [str(ctrl.get("id")) for ctrl in controllers if family not in _families_of(ctrl.get("address"))]
            if lacking and family != next(iter(networks), None):
                c.fail(here + ["address"], "VIP {} is {} but controller{} {} {} no {} address (keepalived's {} VRRP "
                       "instance speaks to each controller's own address of that family)".format(
                           ip, FAMILY_NAMES[family], "s" if len(lacking) > 1 else "", ", ".join(lacking),
                           "have" if len(lacking) > 1 else "has", FAMILY_NAMES[family], FAMILY_NAMES[family]))
        c.string(c.require(vip, "interface", here), here + ["interface"], IFACE_RE, "an interface name")
        vrid = c.integer(c.require(vip, "vrid", here), here + ["vrid"], 1, 255)
        if vrid is not None:
            if vrid in seen_vrid:
                c.fail(here + ["vrid"], "VRID {} is also used by VIP {!r}".format(vrid, seen_vrid[vrid]))
            seen_vrid.setdefault(vrid, name)
        c.string(c.require(vip, "fqdn", here), here + ["fqdn"], FQDN_RE, "a DNS name")
    return vips


def _check_listener_port(c, ports, vip, port, path, owner):
    """Record a (VIP, port) listener; two listeners on the same pair is a duplicate."""
    if vip is None or port is None:
        return
    key = (vip, port)
    if key in ports:
        c.fail(path, "port {} on VIP {!r} is already used by {}".format(port, vip, ports[key]))
    else:
        ports[key] = owner


def _check_timing(c, section, path, keys, closed=False):
    """Check the numbers (seconds) of ``section`` against ``keys`` {key: (low, high)}; with
    ``closed`` an unknown key (a typo that would silently change nothing) is an error too."""
    for key, (low, high) in keys.items():
        if key in section:
            c.number(section[key], path + [key], low, high)
    if closed:
        for key in section:
            if key not in keys:
                c.fail(path + [key], "unknown timeout (known: {})".format(", ".join(sorted(keys))))


# HAProxy timeouts in seconds: `response` is how long a GET/HEAD waits for a backend's first
# byte before HAProxy retries it on another backend (see the README's "Hung backends").
HAPROXY_TIMEOUTS = {"connect": (0.1, 60), "server": (1, 86400), "client": (1, 86400), "queue": (0.1, 60),
                    "response": (0.1, 3600)}


def _published_vips(model, own_vip, vips):
    """The VIPs a service listens on: its own ``vip`` first, then those the Keystone catalog's
    interfaces point at (unknown names skipped; the keystone check reports them)."""
    found = [own_vip] if own_vip is not None else []
    interfaces = ((model.get("keystone") or {}).get("interfaces") or {}) if isinstance(model.get("keystone"), dict) else {}
    if isinstance(interfaces, dict):
        for iface in INTERFACES:
            name = interfaces.get(iface)
            if isinstance(name, str) and name in vips and name not in found:
                found.append(name)
    return found


def _check_services(c, model, vips, ports):
    path = [ROOT, "services"]
    services = c.mapping(c.require(model, "services", [ROOT]), path)
    if not services:
        if services is not None:
            c.fail(path, "expected at least one service")
        return {}
    for name, svc in services.items():
        here = path + [name]
        if not isinstance(name, str) or not NAME_RE.match(name):
            c.fail(here, "service names must be short lowercase words")
        if c.mapping(svc, here) is None:
            continue
        port = c.integer(c.require(svc, "port", here), here + ["port"], 1, 65535)
        if "backend_port" in svc:
            c.integer(svc["backend_port"], here + ["backend_port"], 1, 65535)
        vip = c.require(svc, "vip", here)
        if vip is not None:
            vip = c.name(vip, here + ["vip"], vips, "VIP")
        # The service listens on its own VIP and on every VIP its catalog endpoints name.
        for listen_vip in _published_vips(model, vip, vips):
            _check_listener_port(c, ports, listen_vip, port, here + ["port"], "service {!r}".format(name))
        check = c.mapping(c.require(svc, "check", here), here + ["check"])
        if check:
            path_value = c.require(check, "path", here + ["check"])
            if path_value is not None and (not isinstance(path_value, str) or not path_value.startswith("/") or any(ch.isspace() for ch in path_value)):
                c.fail(here + ["check", "path"], "expected an absolute URL path without spaces, got {}".format(_describe(path_value)))
            c.integer(c.require(check, "status", here + ["check"]), here + ["check", "status"], 100, 599)
            if "timeout" in check:
                # The runner's verification waits 2 s for every controller's fresh probes.
                c.number(check["timeout"], here + ["check", "timeout"], 0.05, 1.5)
        catalog = c.mapping(c.require(svc, "catalog", here), here + ["catalog"])
        if catalog:
            c.string(c.require(catalog, "type", here + ["catalog"]), here + ["catalog", "type"], NAME_RE, "a catalog service type")
            cpath = catalog.get("path", "")
            if not isinstance(cpath, str) or (cpath and not cpath.startswith("/")):
                c.fail(here + ["catalog", "path"], "expected a URL path starting with '/', got {}".format(_describe(cpath)))
        if "retry_idempotent" in svc:
            c.boolean(svc["retry_idempotent"], here + ["retry_idempotent"])
        timeouts = c.mapping(svc.get("timeouts"), here + ["timeouts"], required=False)
        if timeouts:
            _check_timing(c, timeouts, here + ["timeouts"], HAPROXY_TIMEOUTS, closed=True)
        tls = c.mapping(svc.get("tls"), here + ["tls"], required=False)
        if tls:
            c.string(c.require(tls, "certificate", here + ["tls"]), here + ["tls", "certificate"], what="a PEM certificate")
            c.string(c.require(tls, "key", here + ["tls"]), here + ["tls", "key"], what="a PEM private key")
        c.extra_lines(svc.get("extra_options"), here + ["extra_options"])
    return services


def _check_cluster_nodes(c, section, path, controller_ids, minimum):
    nodes = section.get("nodes")
    if nodes is None:
        nodes = list(controller_ids)
    elif not isinstance(nodes, list):
        c.fail(path + ["nodes"], "expected a list of controller ids, got {}".format(_describe(nodes)))
        return []
    seen = set()
    for index, node in enumerate(nodes):
        if not isinstance(node, str):
            c.fail(path + ["nodes", index], "expected a controller id, got {}".format(_describe(node)))
        elif node not in controller_ids:
            c.fail(path + ["nodes", index], "unknown controller {!r}".format(node))
        elif node in seen:
            c.fail(path + ["nodes", index], "controller {!r} is listed twice".format(node))
        if isinstance(node, str):
            seen.add(node)
    if len(nodes) < minimum:
        c.fail(path + ["nodes"], "expected at least {} nodes for a cluster that survives one loss, got {}".format(minimum, len(nodes)))
    return nodes


def _check_galera(c, model, vips, ports, controller_ids):
    path = [ROOT, "galera"]
    galera = c.mapping(c.require(model, "galera", [ROOT]), path)
    if not galera or not c.boolean(galera.get("enabled", True), path + ["enabled"]):
        return
    _check_cluster_nodes(c, galera, path, controller_ids, 3)
    c.string(c.require(galera, "cluster_name", path), path + ["cluster_name"], re.compile(r"^[A-Za-z0-9_-]{1,32}$"), "a cluster name of letters, digits, '-' and '_'")
    port = c.integer(c.require(galera, "port", path), path + ["port"], 1, 65535)
    vip = c.require(galera, "vip", path)
    if vip is not None:
        vip = c.name(vip, path + ["vip"], vips, "VIP")
    _check_listener_port(c, ports, vip, port, path + ["port"], "galera")
    c.choice(galera.get("sst_method"), path + ["sst_method"], SST_METHODS)
    for secret in ("sst_password", "monitor_password", "root_password"):
        c.secret(galera.get(secret), path + [secret], 12)
    for user in ("sst_user", "monitor_user"):
        c.string(c.require(galera, user, path), path + [user], re.compile(r"^[A-Za-z0-9_]{1,32}$"), "a database user name")
    c.number(c.require(galera, "startup_timeout", path), path + ["startup_timeout"], 10, 86400)
    c.choice(galera.get("check", "health"), path + ["check"], ("health", "tcp"))
    c.integer(c.require(galera, "max_connect_errors", path), path + ["max_connect_errors"], 1, 2 ** 32 - 1)
    health = c.integer(c.require(galera, "health_port", path), path + ["health_port"], 1, 65535)
    c.boolean(galera.get("evict_dead_peers", True), path + ["evict_dead_peers"])
    _check_haproxy_check(c, galera, path)
    if health is not None and health == port:
        c.fail(path + ["health_port"], "must differ from the database port {}".format(port))
    exporter = c.mapping(galera.get("exporter"), path + ["exporter"], required=False)
    if exporter:
        c.boolean(exporter.get("enabled"), path + ["exporter", "enabled"])
        if exporter.get("enabled"):
            eport = c.integer(exporter.get("port"), path + ["exporter", "port"], 1, 65535)
            if eport is not None and eport in (port, health):
                c.fail(path + ["exporter", "port"], "must differ from the database port {} and the health port {}".format(port, health))
    sizes = c.mapping(galera.get("sizes"), path + ["sizes"], required=False)
    for key, value in (sizes or {}).items():
        if key == "max_connections":
            c.integer(value, path + ["sizes", key], 10, 100000)
        elif key in ("innodb_buffer_pool_size", "gcache_size"):
            c.string(value, path + ["sizes", key], re.compile(r"^[0-9]+[KMG]?$"), "a size like 256M")
        else:
            c.fail(path + ["sizes", key], "unknown size (known: gcache_size, innodb_buffer_pool_size, max_connections)")
    options = c.mapping(galera.get("provider_options"), path + ["provider_options"], required=False)
    for key, value in (options or {}).items():
        if not isinstance(key, str) or not re.match(r"^[a-z_]+(\.[a-z_]+)+$", key):
            c.fail(path + ["provider_options", key], "expected a Galera provider option like evs.suspect_timeout")
        elif (isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip()
              or any(ch in str(value) for ch in ";\"'#\\") or any(ch.isspace() for ch in str(value))):
            c.fail(path + ["provider_options", key], "expected a plain value (no spaces, ';', '#', quotes or backslashes), got {}".format(_describe(value)))
    _check_galera_tls(c, galera, path, galera.get("nodes") if isinstance(galera.get("nodes"), list) else controller_ids)
    dbs = c.mapping(galera.get("databases"), path + ["databases"], required=False)
    for dbname, db in (dbs or {}).items():
        if not isinstance(dbname, str) or not re.match(r"^[A-Za-z0-9_]{1,64}$", dbname):
            c.fail(path + ["databases", dbname], "database names are letters, digits and '_'")
            continue
        here = path + ["databases", dbname]
        if c.mapping(db, here) is not None:
            c.string(c.require(db, "user", here), here + ["user"], re.compile(r"^[A-Za-z0-9_]{1,32}$"), "a database user name")
            c.secret(db.get("password"), here + ["password"], 12)


PEM_CERT_RE = re.compile(r"^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?$")
PEM_KEY_RE = re.compile(r"^-----BEGIN ((RSA|EC) )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END ((RSA|EC) )?PRIVATE KEY-----\n?$")


def _check_galera_tls(c, galera, path, nodes):
    """``galera:tls``: the CA and, for every Galera node, its certificate and key (PEM).
    Replication, IST and SST are then encrypted and only nodes with a certificate from that CA
    can join."""
    tls = c.mapping(galera.get("tls"), path + ["tls"], required=False)
    if not tls:
        return
    here = path + ["tls"]
    ca = c.require(tls, "ca", here)
    if ca is not None and (not isinstance(ca, str) or not PEM_CERT_RE.match(ca.strip() + "\n")):
        c.fail(here + ["ca"], "expected a PEM certificate")
    per_node = c.mapping(c.require(tls, "nodes", here), here + ["nodes"])
    if per_node is None:
        return
    for node in nodes:
        if isinstance(node, str) and node not in per_node:
            c.fail(here + ["nodes", node], "missing: every Galera node needs its certificate and key")
    for node, entry in per_node.items():
        where = here + ["nodes", node]
        if node not in nodes:
            c.fail(where, "unknown Galera node {!r}".format(node))
        if c.mapping(entry, where) is None:
            continue
        cert, key = c.require(entry, "certificate", where), c.require(entry, "key", where)
        if cert is not None and (not isinstance(cert, str) or not PEM_CERT_RE.match(cert.strip() + "\n")):
            c.fail(where + ["certificate"], "expected a PEM certificate")
        if key is not None and (not isinstance(key, str) or not PEM_KEY_RE.match(key.strip() + "\n")):
            c.fail(where + ["key"], "expected a PEM private key (not shown)")


def _check_rabbitmq(c, model, vips, ports, controller_ids):
    path = [ROOT, "rabbitmq"]
    rabbit = c.mapping(c.require(model, "rabbitmq", [ROOT]), path)
    if not rabbit or not c.boolean(rabbit.get("enabled", True), path + ["enabled"]):
        return
    _check_cluster_nodes(c, rabbit, path, controller_ids, 3)
    c.integer(c.require(rabbit, "port", path), path + ["port"], 1, 65535)
    cookie = c.secret(rabbit.get("cookie"), path + ["cookie"], 20)
    if cookie is not None and not re.match(r"^[A-Za-z0-9]+$", cookie):
        c.fail(path + ["cookie"], "expected only letters and digits")
    c.choice(rabbit.get("partition_handling"), path + ["partition_handling"], ("pause_minority", "autoheal", "ignore"))
    users = c.mapping(rabbit.get("users"), path + ["users"], required=False)
    for uname, user in (users or {}).items():
        here = path + ["users", uname]
        if c.mapping(user, here) is not None:
            c.secret(user.get("password"), here + ["password"], 12)
            c.string(user.get("vhost", "/"), here + ["vhost"], re.compile(r"^/?[A-Za-z0-9_.-]*$"), what="a vhost name like /openstack")
            tags = user.get("tags", [])
            if not isinstance(tags, list) or not all(isinstance(t, str) and re.match(r"^[a-z_]{1,32}$", t) for t in tags):
                c.fail(here + ["tags"], "expected a list of tags like [administrator], got {}".format(_describe(tags)))
    release = None
    match = re.match(r"^(\d+)\.(\d+)", str(rabbit.get("release", "")))
    if match:
        release = (int(match.group(1)), int(match.group(2)))
    else:
        c.fail(path + ["release"], "expected a RabbitMQ release like \"3.10\", got {}".format(_describe(rabbit.get("release"))))
    c.boolean(rabbit.get("heal_partitions", True), path + ["heal_partitions"])
    c.integer(rabbit.get("net_ticktime", 60), path + ["net_ticktime"], 5, 600)
    prometheus = c.mapping(rabbit.get("prometheus"), path + ["prometheus"], required=False)
    if prometheus:
        c.boolean(prometheus.get("enabled"), path + ["prometheus", "enabled"])
        if prometheus.get("enabled"):
            pport = c.integer(prometheus.get("port"), path + ["prometheus", "port"], 1, 65535)
            if pport is not None and pport == rabbit.get("port"):
                c.fail(path + ["prometheus", "port"], "must differ from the AMQP port {}".format(rabbit.get("port")))
    management = c.mapping(rabbit.get("management"), path + ["management"], required=False)
    if management:
        c.boolean(management.get("enabled"), path + ["management", "enabled"])
        if management.get("enabled"):
            mport = c.integer(management.get("port"), path + ["management", "port"], 1, 65535)
            taken = {rabbit.get("port"): "the AMQP port"}
            if (prometheus or {}).get("enabled"):
                taken[prometheus.get("port")] = "the prometheus port"
            if mport is not None and mport in taken:
                c.fail(path + ["management", "port"], "must differ from {} {}".format(taken[mport], mport))
    if RABBIT_MONITOR_USER in (users or {}):
        c.fail(path + ["users", RABBIT_MONITOR_USER], "reserved: openstack_ha's own monitoring account")
    c.number(rabbit.get("memory_high_watermark", 0.4), path + ["memory_high_watermark"], 0.05, 0.95)
    c.string(rabbit.get("disk_free_limit", "50MB"), path + ["disk_free_limit"], re.compile(r"^[0-9]+(kB|MB|GB|KiB|MiB|GiB)?$"),
             "a size like 50MB")
    policies = c.mapping(rabbit.get("policies"), path + ["policies"], required=False)
    for pname, policy in (policies or {}).items():
        here = path + ["policies", pname]
        if c.mapping(policy, here) is None:
            continue
        c.string(c.require(policy, "pattern", here), here + ["pattern"], what="a queue name regex")
        definition = c.mapping(c.require(policy, "definition", here), here + ["definition"])
        if definition is not None and not definition:
            c.fail(here + ["definition"], "expected at least one key")
        if definition and "ha-mode" in definition:
            if release is not None and release >= (4, 0):
                c.fail(here + ["definition", "ha-mode"], "classic queue mirroring was removed in RabbitMQ 4.0 (release {}): "
                       "use quorum queues for this vhost instead".format(rabbit.get("release")))
            else:
                c.choice(definition["ha-mode"], here + ["definition", "ha-mode"], ("all", "exactly", "nodes"))
        if definition and "queue-type" in definition:
            c.choice(definition["queue-type"], here + ["definition", "queue-type"], ("quorum", "classic", "stream"))


def _check_keystone(c, model, vips):
    path = [ROOT, "keystone"]
    ks = c.mapping(c.require(model, "keystone", [ROOT]), path)
    if not ks:
        return
    c.string(c.require(ks, "region", path), path + ["region"], re.compile(r"^[A-Za-z0-9_.-]{1,64}$"), "a region name")
    c.choice(ks.get("endpoint_mode"), path + ["endpoint_mode"], ENDPOINT_MODES)
    c.choice(ks.get("scheme"), path + ["scheme"], ("http", "https"))
    interfaces = c.mapping(c.require(ks, "interfaces", path), path + ["interfaces"])
    for iface, vip in (interfaces or {}).items():
        if iface not in INTERFACES:
            c.fail(path + ["interfaces", iface], "expected one of {}".format(", ".join(INTERFACES)))
        else:
            c.name(vip, path + ["interfaces", iface], vips, "VIP")
    if interfaces is not None and not interfaces:
        c.fail(path + ["interfaces"], "expected at least one of {}".format(", ".join(INTERFACES)))
    c.number(ks.get("timeout"), path + ["timeout"], 0.1, 120)


def _check_policy(c, model, controller_count):
    path = [ROOT, "remediation"]
    policy = c.mapping(c.require(model, "remediation", [ROOT]), path)
    if not policy:
        return
    c.boolean(policy.get("enabled"), path + ["enabled"])
    quorum = policy.get("quorum")
    if quorum != "majority":
        if c.integer(quorum, path + ["quorum"], 1, 255) is not None and quorum > controller_count:
            c.fail(path + ["quorum"], "quorum {} is more than the {} controllers".format(quorum, controller_count))
        elif isinstance(quorum, int) and controller_count and quorum <= controller_count // 2:
            # Below a majority, one "down" vote could outweigh every "up".
            c.fail(path + ["quorum"], "quorum {} is not a majority of the {} controllers (at least {})".format(
                quorum, controller_count, majority(controller_count)))
    _check_timing(c, policy, path, {"cooldown": (0, 86400), "heartbeat": (5, 86400)})
    probe = c.mapping(policy.get("probe"), path + ["probe"])
    if probe:
        _check_timing(c, probe, path + ["probe"], {"interval": (1, 60), "timeout": (0.05, 30)})
        for key in ("fall", "rise"):
            c.integer(probe.get(key), path + ["probe", key], 1, 20)
        c.boolean(probe.get("keepalive", True), path + ["probe", "keepalive"])
        watch = probe.get("watch", 0)
        if watch:
            c.number(watch, path + ["probe", "watch"], 0.05, 60)
            if isinstance(watch, (int, float)) and isinstance(probe.get("interval"), (int, float)) and watch >= probe["interval"]:
                c.fail(path + ["probe", "watch"], "must be shorter than the beacon interval {} (or 0: no watcher)".format(probe["interval"]))
    _check_haproxy_check(c, policy, path)


def _check_haproxy_check(c, section, path):
    """``section``'s ``haproxy_check`` (HAProxy's own health checks): inter, fastinter and
    timeout in seconds, fall and rise in checks; an unknown key is an error."""
    checks = c.mapping(section.get("haproxy_check"), path + ["haproxy_check"])
    if not checks:
        return
    here = path + ["haproxy_check"]
    _check_timing(c, checks, here, {"inter": (0.1, 60), "fastinter": (0.1, 60), "timeout": (0.05, 60)})
    for key in ("fall", "rise"):
        if key in checks:
            c.integer(checks[key], here + [key], 1, 20)
    for key in checks:
        if key not in ("inter", "fastinter", "timeout", "fall", "rise"):
            c.fail(here + [key], "unknown check setting (known: fall, fastinter, inter, rise, timeout)")


def _families_of(value):
    """The address families (4, 6) among ``value``'s valid addresses (one, or a list)."""
    found = set()
    for item in value if isinstance(value, list) else [value]:
        try:
            found.add(ipaddress.ip_address(item).version)
        except (TypeError, ValueError):
            pass
    return found


def url_host(address):
    """``address`` as the host part of a URL or an ``address:port`` pair: an IPv6 address in
    brackets (``[fd00::11]``), anything else unchanged."""
    return "[{}]".format(address) if ":" in str(address) else str(address)


def _normalise_addresses(model, networks):
    """Write every address of a valid model once, canonically (``ipaddress``'s spelling), with
    the derived keys the renderings read:

    - ``network``: the first network (the cluster's family); ``networks``: ``{ipv4|ipv6: cidr}``;
      ``family``: the cluster's family (``ipv4`` or ``ipv6``);
    - each controller: ``address`` (its cluster-family address), ``addresses``
      (``{family: address}``, cluster family first), ``host`` (``address`` for a URL);
    - each VIP: ``addresses`` (``{family: address}``), ``address`` (the first of them),
      ``hosts`` (each address as HAProxy's ``bind`` and a URL write it);
    - ``vip_instances``: :func:`vip_instances`.
    """
    order = list(networks)
    model["network"] = str(networks[order[0]])
    model["networks"] = {FAMILY_KEYS[f]: str(networks[f]) for f in order}
    model["family"] = FAMILY_KEYS[order[0]]

    def by_family(value):
        ips = sorted((ipaddress.ip_address(v) for v in (value.values() if isinstance(value, dict) else
                                                        value if isinstance(value, list) else [value])),
                     key=lambda ip: order.index(ip.version))
        return {FAMILY_KEYS[ip.version]: str(ip) for ip in ips}

    for ctrl in model["controllers"]:
        ctrl["addresses"] = by_family(ctrl.get("addresses") or ctrl["address"])
        ctrl["address"] = ctrl["addresses"][model["family"]]
        ctrl["host"] = url_host(ctrl["address"])
    for vip in model["vips"].values():
        vip["addresses"] = by_family(vip.get("addresses") or vip["address"])
        vip["address"] = next(iter(vip["addresses"].values()))
        vip["hosts"] = [url_host(a) for a in vip["addresses"].values()]
    model["vip_instances"] = vip_instances(model)


def vip_instances(model):
    """Every VIP address as keepalived and the VIP beacon see it: one VRRP instance per VIP and
    address family, ``[{key, vip, family, address, host, interface, vrid, prefix}]`` sorted by
    VIP. ``key`` is the VIP's name for its first address and ``<name>/<family>`` for a second
    (a dual-stack VIP's IPv6 address: ``public/ipv6``); the two instances share the VRID, which
    VRRP keeps apart per family. ``prefix`` is the length of the family's site network."""
    found = []
    for name, vip in sorted(model["vips"].items()):
        for index, (family, address) in enumerate(vip["addresses"].items()):
            found.append({"key": name if index == 0 else "{}/{}".format(name, family), "vip": name, "family": family,
                          "address": address, "host": url_host(address), "interface": vip["interface"],
                          "vrid": vip["vrid"], "prefix": int(model["networks"][family].split("/")[1])})
    return found


def vip_addresses(model):
    """``{instance key: address}`` of every VIP address (see :func:`vip_instances`): what a
    controller is asked whether it holds."""
    return {inst["key"]: inst["address"] for inst in vip_instances(model)}


def _check_network(c, model):
    """The site's networks, ``{family: network}`` with the first one written first (the
    cluster's family). ``network`` is one CIDR or a list of two, one per address family."""
    value = c.require(model, "network", [ROOT])
    if value is None:
        return {}
    items, path = (value, [ROOT, "network"]) if isinstance(value, list) else ([value], None)
    if isinstance(value, list) and not 1 <= len(value) <= 2:
        c.fail([ROOT, "network"], "expected one network, or a list of two (an IPv4 and an IPv6 one), got {} entries".format(len(value)))
        return {}
    found = {}
    for index, item in enumerate(items):
        here = path + [index] if path else [ROOT, "network"]
        net = None
        if isinstance(item, str) and "/" in item and "%" not in item:
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError:
                pass
        if net is None:
            c.fail(here, "expected a network in CIDR form like 10.0.0.0/24 or fd00:10::/64, got {}".format(_describe(item)))
        elif net.version in found:
            c.fail(here, "a second {} network: the site has one network per address family".format(FAMILY_NAMES[net.version]))
        else:
            found[net.version] = net
    return found


def validate(model):
    """
    Check a merged ``openstack_ha`` model.

    model
        the dict under the ``openstack_ha`` pillar key, defaults already merged in.

    Returns the model unchanged when it is valid; raises :class:`ModelError` listing every
    problem (key path and what was expected) otherwise.
    """
    c = _Checker()
    if not isinstance(model, dict):
        raise ModelError(["{}: expected a mapping, got {}".format(ROOT, _describe(model))])
    c.string(c.require(model, "site", [ROOT]), [ROOT, "site"], re.compile(r"^[A-Za-z0-9_-]{1,32}$"), "a site name")
    networks = _check_network(c, model)
    controller_ids, addresses = _check_controllers(c, model, networks)
    if controller_ids and len(controller_ids) < 2:
        c.fail([ROOT, "controllers"], "expected at least 2 controllers for high availability, got {}".format(len(controller_ids)))
    vips = _check_vips(c, model, networks, addresses)
    ports = {}
    _check_services(c, model, vips, ports)
    _check_galera(c, model, vips, ports, controller_ids)
    _check_rabbitmq(c, model, vips, ports, controller_ids)
    _check_keystone(c, model, vips)
    _check_policy(c, model, len(controller_ids))
    haproxy = c.mapping(model.get("haproxy"), [ROOT, "haproxy"])
    if haproxy:
        stats = c.mapping(haproxy.get("stats"), [ROOT, "haproxy", "stats"], required=False)
        if stats and stats.get("enabled"):
            c.integer(stats.get("port"), [ROOT, "haproxy", "stats", "port"], 1, 65535)
            c.string(stats.get("user"), [ROOT, "haproxy", "stats", "user"], re.compile(r"^[A-Za-z0-9_]+$"), "a user name")
            c.secret(stats.get("password"), [ROOT, "haproxy", "stats", "password"], 8)
        metrics = c.mapping(haproxy.get("metrics"), [ROOT, "haproxy", "metrics"], required=False)
        if metrics:
            c.boolean(metrics.get("enabled"), [ROOT, "haproxy", "metrics", "enabled"])
            if metrics.get("enabled"):
                c.integer(metrics.get("port"), [ROOT, "haproxy", "metrics", "port"], 1, 65535)
        c.extra_lines(haproxy.get("extra_defaults"), [ROOT, "haproxy", "extra_defaults"])
        timeouts = c.mapping(haproxy.get("timeouts"), [ROOT, "haproxy", "timeouts"])
        if timeouts:
            for key in HAPROXY_TIMEOUTS:
                c.require(timeouts, key, [ROOT, "haproxy", "timeouts"])
            _check_timing(c, timeouts, [ROOT, "haproxy", "timeouts"], HAPROXY_TIMEOUTS, closed=True)
        c.integer(haproxy.get("retries"), [ROOT, "haproxy", "retries"], 0, 10)
        c.integer(haproxy.get("maxconn"), [ROOT, "haproxy", "maxconn"], 1, 10000000)
        for key in ("socket", "state_file"):
            c.string(haproxy.get(key), [ROOT, "haproxy", key], PATH_RE, "an absolute path")
        c.integer(haproxy.get("redispatch"), [ROOT, "haproxy", "redispatch"], -10, 10)
    keepalived = c.mapping(model.get("keepalived"), [ROOT, "keepalived"])
    if keepalived:
        advert = keepalived.get("advert_int")
        if isinstance(advert, str) and advert != "auto":
            c.fail([ROOT, "keepalived", "advert_int"], "expected a number 0.01-255 or 'auto', got {}".format(_describe(advert)))
        elif advert != "auto":
            c.number(advert, [ROOT, "keepalived", "advert_int"], 0.01, 255)
        c.boolean(keepalived.get("nopreempt"), [ROOT, "keepalived", "nopreempt"])
        c.integer(keepalived.get("garp_master_repeat"), [ROOT, "keepalived", "garp_master_repeat"], 1, 255)
        # keepalived 2.2 reads these three as whole seconds: "0.5" is logged and ignored.
        c.integer(keepalived.get("garp_master_refresh"), [ROOT, "keepalived", "garp_master_refresh"], 0, 86400)
        c.integer(keepalived.get("garp_master_delay"), [ROOT, "keepalived", "garp_master_delay"], 0, 86400)
        c.integer(keepalived.get("track_interval"), [ROOT, "keepalived", "track_interval"], 1, 3600)
        c.integer(keepalived.get("rt_priority"), [ROOT, "keepalived", "rt_priority"], 0, 99)
    _check_local_paths(c, model)
    check_unknown_keys(c, model, SCHEMA, [ROOT])
    if c.problems:
        raise ModelError(c.problems)
    _normalise_addresses(model, networks)
    for svc in model["services"].values():
        # One place for this default: the API's own port on the controller is the VIP's port
        # unless the pillar says otherwise. Everything after this reads svc["backend_port"].
        svc.setdefault("backend_port", svc["port"])
    return model


def _check_local_paths(c, model):
    """``paths`` and ``packages`` reach init scripts, command lines and file names: absolute
    paths of plain characters, package names as Debian spells them."""
    paths = c.mapping(model.get("paths"), [ROOT, "paths"], required=False)
    for key, value in (paths or {}).items():
        if str(key).endswith("_service"):
            c.string(value, [ROOT, "paths", key], SERVICE_NAME_RE, "a service name")
        else:
            c.string(value, [ROOT, "paths", key], PATH_RE, "an absolute path of letters, digits and ./_-+{}")
    packages = c.mapping(model.get("packages"), [ROOT, "packages"], required=False)
    for key, value in (packages or {}).items():
        for name in (value if isinstance(value, list) else [value]):
            c.string(name, [ROOT, "packages", key], PACKAGE_RE, "a package name")


def build(defaults, pillar):
    """
    Merge the pillar over the defaults and validate the result.

    defaults
        the ``openstack_ha`` mapping from ``defaults.yaml`` (OS layer already merged).
    pillar
        the ``openstack_ha`` mapping from the minion's pillar, or ``None``.

    Returns the merged, validated model. Raises :class:`ModelError` on any problem.
    """
    if pillar is None:
        raise ModelError(["{}: missing: this minion has no openstack_ha pillar (map it in your pillar top file: see pillar/top.sls.example)".format(ROOT)])
    if not isinstance(pillar, dict):
        raise ModelError(["{}: expected a mapping, got {}".format(ROOT, _describe(pillar))])
    return validate(deep_merge(defaults, pillar))


def controller(model, minion_id):
    """Return the controller entry of ``minion_id`` in ``model``, or ``None``."""
    for ctrl in model["controllers"]:
        if ctrl["id"] == minion_id:
            return ctrl
    return None


def majority(count):
    """The smallest number of ``count`` members that is more than half of them."""
    return count // 2 + 1


def quorum_size(model):
    """The number of controller views that must agree before the runner acts."""
    quorum = model["remediation"]["quorum"]
    if quorum == "majority":
        return majority(len(model["controllers"]))
    return int(quorum)


def layer_defaults(raw, os_family):
    """The project's defaults for ``os_family``: ``defaults.yaml``'s ``openstack_ha`` mapping
    with that family's layer merged over it. Raises ValueError for a family it has no layer for."""
    per_os = (raw.get("os_family") or {}).get(os_family)
    if per_os is None:
        raise ValueError("no defaults for os_family {!r} in defaults.yaml (known: {})".format(
            os_family, ", ".join(sorted(raw.get("os_family") or {})) or "none"))
    return deep_merge(raw["openstack_ha"], per_os)


def cluster_nodes(model, section):
    """The controllers (entries, in controller order) that are nodes of the ``section``
    cluster (``galera`` or ``rabbitmq``): its ``nodes`` list, or every controller; [] when
    the section is not enabled."""
    cluster = model.get(section) or {}
    if not cluster.get("enabled"):
        return []
    wanted = cluster.get("nodes") or [c["id"] for c in model["controllers"]]
    return [c for c in model["controllers"] if c["id"] in wanted]


def galera_nodes(model):
    """The controllers (entries, in controller order) that are Galera nodes; [] when disabled."""
    return cluster_nodes(model, "galera")


def backend_services(model):
    """Every HAProxy backend the remediation loop watches: ``{name: {port, path, status,
    servers}}`` with ``servers`` the controller entries behind it. The OpenStack APIs, plus
    ``galera`` (its health endpoint, which answers 200 only on a Synced, writable node) when
    Galera is enabled."""
    found = {}
    for name, svc in model["services"].items():
        found[name] = {"port": svc["backend_port"], "path": svc["check"]["path"],
                       "status": svc["check"]["status"], "servers": list(model["controllers"])}
        if "timeout" in svc["check"]:
            found[name]["timeout"] = svc["check"]["timeout"]
    nodes = galera_nodes(model)
    if nodes:
        found["galera"] = {"port": model["galera"]["health_port"], "path": "/", "status": 200, "servers": nodes}
    return found


def probe_targets(model, service=None):
    """The health-probe targets of every backend (of ``service``, or of all services):
    ``[{service, backend, address, port, path, status}]`` (plus ``timeout`` where the service's
    check sets its own), services sorted, controllers in order."""
    found = []
    for name, svc in sorted(backend_services(model).items()):
        if service is not None and name != service:
            continue
        for ctrl in svc["servers"]:
            found.append({
                "service": name,
                "backend": ctrl["id"],
                "address": ctrl["address"],
                "port": svc["port"],
                "path": svc["path"],
                "status": svc["status"],
            })
            if "timeout" in svc:
                found[-1]["timeout"] = svc["timeout"]
    return found


def listen_vips(model, service):
    """The VIP names HAProxy binds ``service`` on: its own ``vip`` and every VIP a catalog
    interface points at, so each endpoint URL of the ``vip`` mode reaches the service."""
    return _published_vips(model, model["services"][service]["vip"], model["vips"])


def endpoint_host(model, interface, holders):
    """The host part of ``interface``'s endpoint URLs: the VIP's FQDN in ``vip`` mode; in
    ``active_controller`` mode the FQDN (or address) of the controller that holds that VIP
    now, from ``holders`` ({vip name: controller id}). None when no controller holds it."""
    keystone = model["keystone"]
    vip = keystone["interfaces"][interface]
    if keystone["endpoint_mode"] == "vip":
        return model["vips"][vip]["fqdn"]
    ctrl = controller(model, holders.get(vip)) if holders.get(vip) else None
    if ctrl is None:
        return None
    return ctrl.get("fqdn") or ctrl["address"]


def catalog_endpoints(model, holders=None):
    """The Keystone catalog the model asks for: ``[{service, type, interface, region, url}]``,
    services sorted, interfaces in public/internal/admin order.

    holders
        {vip name: controller id}: who holds each VIP now (``active_controller`` mode only).

    In ``vip`` mode the URL port is the service's HAProxy port; in ``active_controller``
    mode it is the API's own port on the controller (``backend_port``). Raises ValueError
    when an interface's VIP has no holder in ``active_controller`` mode.
    """
    keystone = model["keystone"]
    holders = holders or {}
    found = []
    for name, svc in sorted(model["services"].items()):
        for interface in INTERFACES:
            if interface not in keystone["interfaces"]:
                continue
            host = endpoint_host(model, interface, holders)
            if host is None:
                raise ValueError("no controller holds VIP {!r} (interface {}): no endpoint can point at it".format(
                    keystone["interfaces"][interface], interface))
            port = svc["port"] if keystone["endpoint_mode"] == "vip" else svc["backend_port"]
            if ":" in host:
                host = "[{}]".format(host)
            found.append({"service": name, "type": svc["catalog"]["type"], "interface": interface,
                          "region": keystone["region"],
                          "url": "{}://{}:{}{}".format(keystone["scheme"], host, port, svc["catalog"].get("path") or "")})
    return found


REDACTED = "**********"
_SECRET_KEY = re.compile(r"(^|_)password$|^cookie$")


def redact(model, _path=()):
    """A copy of ``model`` with every secret replaced by ``**********``: values of keys named
    ``password``/``*_password``/``cookie``, and the ``key`` of a ``tls`` section."""
    if isinstance(model, dict):
        out = {}
        for key, value in model.items():
            secret = isinstance(key, str) and (_SECRET_KEY.search(key) or (key == "key" and "tls" in _path))
            out[key] = REDACTED if secret and value is not None and not isinstance(value, (dict, list)) else redact(value, _path + (key,))
        return out
    if isinstance(model, list):
        return [redact(v, _path) for v in model]
    return model
