"""Small helpers the lab tests share: run salt on the lab master, look inside a controller."""

import json
import os
import subprocess
import time
import urllib.request

from lab import labctl
from tests.conftest import load_module

CTRLS = [name for name, _ in labctl.CONTROLLERS]
ADDRESS = dict(labctl.CONTROLLERS)
VIPS = dict(labctl.LAB_VIPS)  # public, public/ipv6 (the dual-stack public VIP's second address), internal
COOLDOWN = 10  # remediation:cooldown in defaults.yaml


def salt(target, *args, timeout=300, wait=60):
    """Run ``ARGS`` (a function, its arguments; ``-L`` anywhere, also before the target as on
    the command line, makes the target a list) on
    ``target`` through the lab master, as ``salt -t WAIT`` does, waiting ``wait`` seconds for
    a minion that stops answering whether it still runs the job; return (retcode, {minion:
    return}): retcode 0 when every targeted minion returned with retcode 0, else 1; a minion
    that did not return is given the CLI's "Minion did not return" text.

    In this process, not the ``salt`` command: on a busy 2-core machine each command costs
    1-2 s of CPU to start (Python, Salt's loader), and the tests poll. ``timeout`` is kept for
    the callers that bound a whole call (a first state.apply): the wait per minion is ``wait``.
    """
    import salt.client
    import salt.exceptions

    parts = [target] + list(args)
    tgt_type = "list" if "-L" in parts else "glob"
    if "-L" in parts:
        parts.remove("-L")
    target, fun, arg = parts[0], parts[1], parts[2:]
    if fun.startswith("state."):
        # A state run is awaited to its end (the whole ``timeout``): returning early left an
        # apply running on the controller, and the next test's apply was refused ("is running").
        wait = max(wait, timeout)
    client = salt.client.LocalClient(mopts=_master_opts())
    try:
        try:
            pub = client.run_job(target, fun, arg, tgt_type=tgt_type, timeout=wait, listen=True)
        except salt.exceptions.SaltClientError as exc:  # the master is not answering (restarting): as the CLI, a failure
            return 1, {"error": str(exc)}
        if not pub or not pub.get("jid"):
            raise AssertionError("the lab master did not publish {} to {}: {!r}".format(fun, target, pub))
        data, rc = {}, 0
        deadline = time.monotonic() + timeout
        for ret in client.get_cli_event_returns(pub["jid"], pub["minions"], wait, target, tgt_type):
            for minion, full in (ret or {}).items():
                if not isinstance(full, dict) or "ret" not in full:
                    continue
                data[minion] = full["ret"]
                if full.get("retcode") or (fun.startswith("state.") and failed_states({minion: full["ret"]})):
                    rc = 1
            if time.monotonic() > deadline:
                break
        for minion in pub["minions"]:
            if minion not in data:
                data[minion] = "Minion did not return. [No response]"
                rc = 1
        return rc, data
    finally:
        client.destroy()


_OPTS = {}


def _master_opts():
    """The lab master's configuration, read again whenever its files changed (a test
    re-addresses the lab or adds a second master)."""
    import salt.config

    path = os.path.join(labctl.MASTER_DIR, "etc", "master")
    confd = os.path.join(labctl.MASTER_DIR, "etc", "master.d")
    stamp = tuple(os.path.getmtime(os.path.join(d, f)) for d, fs in ((os.path.dirname(path), ["master"]),
                  (confd, sorted(os.listdir(confd)) if os.path.isdir(confd) else [])) for f in fs)
    if _OPTS.get("stamp") != stamp:
        _OPTS.update(stamp=stamp, opts=salt.config.master_config(path))
    return _OPTS["opts"]


def apply(target="lab-ctrl*", *extra):
    """``state.apply openstack_ha`` on ``target``. A first apply installs and joins Galera and
    RabbitMQ (every rabbitmqctl call an Erlang VM): 5 to 9 minutes on a busy 2-core machine, so
    the bound is generous; a converged apply takes seconds."""
    return salt(target, "state.apply", "openstack_ha", *extra, timeout=1500)


def failed_states(results):
    """A readable report, one line per state that did not succeed in a state.apply's per-minion
    results ("" when all did): ``minion state-id: comment``. An exception's comment is cut to the
    last lines of its traceback (the exception itself); a minion's non-dict answer, a render
    error, is shown whole. A string, so that pytest prints it in full in an assertion message
    (it shortens any other object's repr)."""
    lines = []
    for minion, result in (results or {}).items():
        if not isinstance(result, dict):
            lines.append("{}: {}".format(minion, result))
            continue
        for key, ret in result.items():
            if not isinstance(ret, dict) or ret.get("result") is not False:
                continue
            comment = str(ret.get("comment"))
            if "Traceback" in comment:
                comment = "exception: " + " | ".join(line.strip() for line in comment.strip().splitlines()[-6:])
            lines.append("{} {}: {}".format(minion, key.split("_|-")[1], comment))
    return "\n".join(lines)


def changed_states(result):
    """The state ids that reported changes in one minion's state.apply result."""
    return sorted(key.split("_|-")[1] for key, ret in result.items() if ret.get("changes"))


def sh(ctrl, script, check=True):
    """Run a shell script inside a controller; return its stdout."""
    return labctl.ctrl_run(ctrl, ["sh", "-c", script], check=check).stdout


def vip_holders(address):
    return [c for c in CTRLS if (" %s/" % address) in sh(c, "ip -o addr show dev eth0")]


# Every bound on waiting for a condition is multiplied by this (OHA_WAIT_SCALE, default 3): the
# bounds were set on a quick machine, and a busy 2-core one runs Salt jobs several times
# slower. A condition that holds ends the wait at once, so a generous bound costs nothing.
WAIT_SCALE = float(os.environ.get("OHA_WAIT_SCALE", "3"))


def scaled(seconds):
    """``seconds``, a bound on waiting for something to happen, for this machine (WAIT_SCALE)."""
    return seconds * WAIT_SCALE


def wait_until(predicate, timeout, what, interval=0.05):
    """Call ``predicate`` every ``interval`` seconds until it returns a true value (returned),
    at most ``scaled(timeout)`` seconds; then AssertionError naming ``what``."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after {}s waiting for {}".format(timeout, what))


def pidfile_pid(ctrl, path):
    out = sh(ctrl, "cat %s 2>/dev/null || true" % path).split()
    return int(out[0]) if out and out[0].isdigit() else None


def url_host(address):
    """``address`` as a URL's host: IPv6 in brackets."""
    return "[%s]" % address if ":" in address else address


def vip_prefix(address):
    """The prefix length a lab VIP is added with (its family's lab network)."""
    return labctl.PREFIX6 if ":" in address else labctl.PREFIX


def http_get(address, port, timeout=3):
    """GET http://address:port/ from the host (the bridge); returns the JSON body or None."""
    proc = subprocess.run(["curl", "-s", "-m", str(timeout), "http://%s:%d/" % (url_host(address), port)], capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def http_json(address, port, path="/", timeout=3, inside=None):
    """GET http://address:port/path from the host (or from inside controller ``inside``); the
    parsed JSON body, or None."""
    cmd = ["curl", "-s", "-m", str(timeout), "http://%s:%d%s" % (url_host(address), port, path)]
    proc = subprocess.run(labctl.in_ctrl(inside, cmd) if inside else cmd, capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def runner(*args):
    """Run ``salt-run ARGS --out json`` on the lab master; return the parsed result (the last
    JSON document printed: long runners print progress events before it)."""
    # A rolling restart of three Galera nodes takes minutes on a busy machine.
    proc = labctl.salt_cmd("salt-run", "--out=json", *args, timeout=scaled(300), check=False)
    decoder, text, doc = json.JSONDecoder(), proc.stdout.strip(), None
    try:
        while text:
            doc, end = decoder.raw_decode(text)
            text = text[end:].strip()
        if doc is None:
            raise ValueError("empty")
        return doc
    except ValueError:
        raise AssertionError("salt-run printed no JSON (rc {}): {}\n{}".format(proc.returncode, proc.stdout, proc.stderr))


_NS_PID = {}
# The execution module's pure reading of HAProxy's runtime API (loaded by path, as the unit tests do).
_HAPROXY = load_module("_modules/openstack_ha_haproxy.py", "openstack_ha_haproxy")


def ctrl_root(ctrl):
    """``/proc/PID/root`` of a process in controller ``ctrl``'s mount namespace: its own files
    (``/run`` is a tmpfs of its own) seen from the host. The PID is remembered while it lives."""
    inode = labctl.ns_inode(labctl.ns_files(ctrl)[0])

    def in_ns(pid):
        try:
            return pid and os.stat("/proc/%d/ns/mnt" % pid).st_ino == inode
        except OSError:
            return False
    if not in_ns(_NS_PID.get(ctrl)):
        _NS_PID[ctrl] = next((int(p) for p in os.listdir("/proc") if p.isdigit() and in_ns(int(p))), None)
    return "/proc/%d/root" % _NS_PID[ctrl] if _NS_PID[ctrl] else None


def haproxy_admin(ctrl):
    """{(backend, server): "ready" | "drain" | "maint"} in ``ctrl``'s HAProxy, read from its
    admin socket directly (no Salt job: the tests poll, and a job on every controller at each
    poll slowed the very answers the loop waits for) with openstack_ha_haproxy's own reading of
    ``show servers state``; None when HAProxy does not answer."""
    from salt.exceptions import CommandExecutionError

    root = ctrl_root(ctrl)
    if root is None:
        return None
    try:
        return _HAPROXY._admin_states(root + "/run/haproxy/admin.sock") or None
    except CommandExecutionError:
        return None


def admin_states(service, backend, ctrls=None):
    """{controller: administrative state of service/backend in that controller's HAProxy}
    for every controller (or only ``ctrls``); None for a controller whose HAProxy did not answer."""
    found = {}
    for ctrl in ctrls or CTRLS:
        states = haproxy_admin(ctrl)
        found[ctrl] = states.get((service, backend)) if states else None
    return found


def wait_out_cooldown(service=None):
    """Sleep until no backend (of ``service``) was acted on within the remediation cooldown,
    so the next failure is acted on at once rather than suppressed."""
    acted = [d["time"] for d in decisions() if (service is None or d.get("service") == service) and d["what"] in ("drain", "restore")]
    if acted:
        time.sleep(max(0.0, max(acted) + COOLDOWN + 0.5 - time.time()))


_RUNNER = {}


def decisions(recent=200):
    """The lab site's latest decisions, oldest first: ``openstack_ha.history``, run in this
    process (it only reads the master's records; the ``salt-run`` command costs seconds of CPU
    to start on a busy host, and a status asks every controller)."""
    import salt.runner

    opts = _master_opts()
    if _RUNNER.get("opts") is not opts:
        _RUNNER.update(opts=opts, client=salt.runner.RunnerClient(dict(opts, quiet=True)))
    result = _RUNNER["client"].cmd("openstack_ha.history", kwarg={"site": "lab", "recent": recent}, print_event=False, full_return=False)
    if not isinstance(result, dict) or "lab" not in result:
        raise AssertionError("openstack_ha.history answered {!r}".format(result))
    return result["lab"]


def master_cache(bank, key):
    """What the lab master's own cache (Salt's ``cache``, not the loop's shared records) keeps
    under ``bank``/``key``, or None."""
    import salt.cache

    return salt.cache.factory(_master_opts()).fetch(bank, key)


class MasterEvents:
    """Listen to the lab master's event bus from the test process (tags matched by prefix)."""

    def __init__(self):
        import salt.config
        import salt.utils.event

        opts = salt.config.master_config(labctl.os.path.join(labctl.MASTER_DIR, "etc", "master"))
        self.bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.bus.subscribe("")

    def wait(self, prefix, timeout, match=None):
        """The first event (since this listener opened) whose tag starts with ``prefix`` and,
        if given, for which ``match(event)`` is true; None after ``timeout`` seconds."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            event = self.bus.get_event(wait=max(0.05, deadline - time.monotonic()), full=True)
            if event and event["tag"].startswith(prefix) and (match is None or match(event)):
                return event
        return None

    def collect(self, prefix):
        """From now until :meth:`close`, keep every event whose tag starts with ``prefix`` in
        ``self.seen`` as ``(epoch seconds, tag, data)`` (a thread reads the bus)."""
        import threading

        self.seen, self._closing = [], threading.Event()

        def read():
            while not self._closing.is_set():
                event = self.bus.get_event(wait=0.5, full=True)
                if event and event["tag"].startswith(prefix):
                    self.seen.append((time.time(), event["tag"], event["data"]))
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def close(self):
        if getattr(self, "_reader", None) is not None:
            self._closing.set()
            self._reader.join(10)
        self.bus.destroy()


def standin_pid(ctrl, service):
    return pidfile_pid(ctrl, "/run/standin-%s.pid" % service)


def start_standins(ctrl):
    labctl.start_standins(ctrl, ADDRESS[ctrl])


def drained_everywhere(backend, service="nova"):
    return set(admin_states(service, backend).values()) == {"drain"}


def ready_everywhere(backend, service="nova"):
    return set(admin_states(service, backend).values()) == {"ready"}


def backend_story(backend, service="nova", recent=6):
    """What a test that waited in vain for ``service/backend`` should say: each HAProxy's
    administrative state of it, whether its stand-in runs and answers, and the loop's latest
    decisions about it (from the records). Never raises: it explains a failure."""
    lines = []
    try:
        lines.append("HAProxy admin states: {}".format(admin_states(service, backend)))
        pid = standin_pid(backend, service)
        port = dict(labctl.lab_services()).get(service)
        try:
            with urllib.request.urlopen("http://{}:{}/".format(ADDRESS[backend], port), timeout=2) as response:
                answer = "status {}".format(response.status)
        except (OSError, ValueError) as exc:
            answer = str(exc)
        lines.append("stand-in {} on {}: pid {} ({}), answers {}".format(
            service, backend, pid, "alive" if pid and labctl.alive(pid) else "not running", answer))
        lines.append("the loop last handled a backend event of: {}".format(last_backend_events()))
        mine = [d for d in decisions() if d.get("service") == service and d.get("backend") == backend]
        for d in mine[-recent:]:
            lines.append("decision at {}: {} ({}) by {} on {}'s report, timing {}".format(
                time.strftime("%H:%M:%S", time.localtime(d.get("time", 0))), d.get("what"), d.get("why"), d.get("decided_by"), d.get("reported_by"), d.get("timing")))
    except Exception as exc:  # noqa: BLE001 - an explanation must not hide the failure it explains
        lines.append("(could not say more: {})".format(exc))
    return "\n".join(lines)


def sample(text, name, **labels):
    """The value of the sample ``name{labels}`` in Prometheus text ``text`` (labels matched
    as a subset), or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        head, _, value = line.rpartition(" ")
        if all('{}="{}"'.format(k, v) in head for k, v in labels.items()):
            return float(value)
    return None


def last_backend_events():
    """``{controller: seconds ago}``: when the master's loop last handled a backend beacon
    event in each controller's name (its metrics), or the error that kept it from saying."""
    url = "http://{}:{}/metrics".format(labctl.BRIDGE_ADDR, labctl.LOOP_METRICS_PORT)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return str(exc)
    ago = {}
    for ctrl in CTRLS:
        when = sample(text, "openstack_ha_controller_last_event_timestamp_seconds", controller=ctrl, beacon="openstack_ha_backends")
        if when is not None:
            ago[ctrl] = round(time.time() - when, 1)
    return ago


def wait_restored(backend, timeout, service="nova"):
    """Wait (``wait_until``) until ``service/backend`` is ready on every HAProxy; on timeout the
    AssertionError says what the HAProxies, the stand-in and the loop's records show."""
    try:
        return wait_until(lambda: ready_everywhere(backend, service), timeout,
                          "{}/{} restored everywhere".format(service, backend), interval=0.5)
    except AssertionError as exc:
        raise AssertionError("{}\n{}".format(exc, backend_story(backend, service))) from None


def nothing_drained():
    """True when every controller's HAProxy answers and has every server of every service
    ready (no drain or maintenance left by the loop or an earlier test)."""
    for ctrl in CTRLS:
        states = haproxy_admin(ctrl)
        if not states or set(states.values()) != {"ready"}:
            return False
    return True


def lab_secrets():
    """Every secret of the lab site's pillar (values of password/cookie keys, TLS keys)."""
    import yaml

    with open(labctl.os.path.join(labctl.REPO, "pillar", "openstack_ha", "sites", "lab.sls")) as fh:
        pillar = yaml.safe_load(fh)["openstack_ha"]
    found = []

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and (key.endswith("password") or key in ("cookie", "key")):
            found.append(node)
    walk(pillar)
    return found


def load_while(action, address, port, rate=50):
    """Run ``action()`` while GETs go to ``address:port`` at ``rate`` a second, in 2-second
    rounds until it returns (and one more); return (its result, every request's Result, its
    ``sent`` in epoch seconds)."""
    import threading

    from lab import loadgen

    results, done = [], threading.Event()

    def load():
        while True:
            last = done.is_set()
            began = time.time()
            batch = loadgen.run(address, port, rate=rate, seconds=2, timeout=5)
            for result in batch:
                result.sent += began
            results.extend(batch)
            if last:
                return

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        return action(), results
    finally:
        done.set()
        thread.join(30)


SITE_OVERRIDE = os.path.join(labctl.PILLAR_OVERRIDES, "openstack_ha", "sites", "lab.sls")


def site_change_seen(change, timeout=150):
    """Run ``change()`` (it edits the lab site's pillar on the master), then wait until the
    master's loop acts on the changed model: its ``openstack_ha/site/changed`` event for the
    lab. The loop recompiles a site's pillar on the first event past ``MODEL_TTL`` (30 s), and
    may serve the older model a little longer while another compilation runs, so no fixed
    sleep is safe. Fails when the change did not reach the loop within ``timeout``."""
    events = MasterEvents()
    try:
        change()
        seen = events.wait("openstack_ha/site/changed", timeout, match=lambda e: e["data"].get("site") == "lab")
    finally:
        events.close()
    assert seen is not None, "the master's loop did not act on the changed lab pillar within {} s".format(timeout)
    return seen["data"]


def write_site(document):
    """Put ``document`` (the whole lab site file, a dict) in the master's override pillar root
    (searched before the repository's), atomically; None removes it."""
    import yaml

    if document is None:
        if os.path.exists(SITE_OVERRIDE):
            os.remove(SITE_OVERRIDE)
        return
    os.makedirs(os.path.dirname(SITE_OVERRIDE), exist_ok=True)
    with open(SITE_OVERRIDE + ".tmp", "w") as fh:
        yaml.safe_dump(document, fh, default_flow_style=False)
    os.replace(SITE_OVERRIDE + ".tmp", SITE_OVERRIDE)
