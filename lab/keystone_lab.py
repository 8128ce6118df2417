"""
A real Keystone on every lab controller, its database on the Galera cluster through the VIP.

Keystone comes from PyPI (``lab/keystone-requirements.txt``, installed by scripts/setup.sh
into /opt/openstack-ha/keystone) and runs under gunicorn on each controller's address at the
identity service's port, where the lab's stand-in answered before; HAProxy's ``keystone``
backend on every controller balances across the three. Fernet and credential keys are made
once and copied to every controller (any controller validates any token). The catalog is
left empty: ``salt-run state.orchestrate openstack_ha.orch.catalog`` fills it from the pillar.

Idempotent: the schema migration, the keys and the admin account are only created where
missing, and a controller whose Keystone already runs is left alone.
"""

import os
import subprocess
import time
import urllib.request

import yaml

from lab import labctl

VENV = "/opt/openstack-ha/keystone"
PIDFILE = "/run/keystone.pid"
CONF = "/etc/keystone/keystone.conf"
# Keystone parses the process's command line (oslo.config) when its app loads: under gunicorn
# that is gunicorn's own options, which it rejects (the workers exit with code 2). This entry
# point hides them first.
WSGI = "/etc/keystone/lab_wsgi.py"
WSGI_TEXT = """# Written by lab/keystone_lab.py: Keystone's WSGI app without gunicorn's command line.
import sys

sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402,F401
"""


def lab_pillar():
    """The lab site's pillar file, read as the master reads it (plain YAML): a test's copy in
    the override pillar root when there is one, else the repository's."""
    override = os.path.join(labctl.PILLAR_OVERRIDES, "openstack_ha", "sites", "lab.sls")
    path = override if os.path.exists(override) else os.path.join(labctl.REPO, "pillar", "openstack_ha", "sites", "lab.sls")
    with open(path) as fh:
        return yaml.safe_load(fh)["openstack_ha"]


def identity_port():
    """The port Keystone listens on at each controller (the keystone service's backend port)."""
    return dict(labctl.lab_services())["keystone"]


def config_text(pillar):
    """keystone.conf for every controller: the Galera cluster through its VIP, fernet tokens."""
    galera = pillar["galera"]
    db = galera["databases"]["keystone"]
    vip = bracketed(all_addresses(pillar["vips"][galera["vip"]]["address"])[0])
    return "\n".join([
        "# Written by lab/keystone_lab.py: the lab's real Keystone.",
        "[DEFAULT]",
        "log_dir = /var/log/keystone",
        "[database]",
        "connection = mysql+pymysql://{}:{}@{}:3306/keystone".format(db["user"], db["password"], vip),
        "connection_recycle_time = 60",
        "max_retries = -1",
        "[token]",
        "provider = fernet",
        "[fernet_tokens]",
        "key_repository = /etc/keystone/fernet-keys",
        "[credential]",
        "key_repository = /etc/keystone/credential-keys",
        "[cache]",
        "# Each worker caches tokens and catalog lookups in its memory (real sites use memcached):",
        "# without it every request re-reads the token's roles and project from the database.",
        "enabled = true",
        "backend = dogpile.cache.memory",
        "[catalog]",
        "# Not the catalog: a per-process cache is invalidated only in the worker that changed the",
        "# catalog, so the other workers would keep handing out the old endpoints in new tokens.",
        "# (A shared memcached does not help the repoint either: each endpoint update invalidates",
        "# the cached catalog, and the next request, validating its token, computes it again.)",
        "caching = false",
        "[identity]",
        "# bcrypt's cost: the lab's admin logs in often (tests, benchmarks); 4 is bcrypt's minimum.",
        "password_hash_rounds = 4",
        "",
    ])


def manage(name, *args, timeout=600):
    return labctl.ctrl_run(name, [os.path.join(VENV, "bin", "keystone-manage"), "--config-file", CONF] + list(args), timeout=timeout)


def copy_dir(source, targets, path):
    """Copy directory ``path`` from controller ``source`` to each of ``targets`` (own /etc each)."""
    packed = subprocess.run(labctl.in_ctrl(source, ["tar", "-C", os.path.dirname(path), "-cf", "-", os.path.basename(path)]),
                            capture_output=True, timeout=60)
    if packed.returncode != 0:
        raise labctl.LabError("reading {} on {} failed: {}".format(path, source, packed.stderr.decode(errors="replace")))
    for target in targets:
        labctl.ctrl_run(target, ["rm", "-rf", path])
        proc = subprocess.run(labctl.in_ctrl(target, ["tar", "-C", os.path.dirname(path), "-xf", "-"]),
                              input=packed.stdout, capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise labctl.LabError("copying {} to {} failed: {}".format(path, target, proc.stderr.decode(errors="replace")))


def bracketed(address):
    """``address`` as a URL's host: an IPv6 address in brackets."""
    return "[{}]".format(address) if ":" in address else address


def all_addresses(value):
    """The addresses of a pillar ``address`` value (one, or a list of one per family)."""
    return list(value) if isinstance(value, list) else [value]


def answers(address, port):
    try:
        with urllib.request.urlopen("http://{}:{}/v3".format(bracketed(address), port), timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def still_silent(addresses, port, deadline):
    """Wait until Keystone answers at every address of ``addresses`` ({label: address}) or
    ``deadline`` (monotonic) passes; return the labels of those that never answered."""
    waiting = dict(addresses)
    while waiting and time.monotonic() < deadline:
        waiting = {label: a for label, a in waiting.items() if not answers(a, port)}
        time.sleep(0.5)
    return waiting


def start(name, address, port, wait=0):
    """Start Keystone under gunicorn on controller ``name`` (stopping its stand-in first); False
    when it already runs. With ``wait`` (seconds), wait until it answers and raise LabError,
    with the end of its log, when it does not."""
    if labctl.keystone_running(name):
        return False
    standin = labctl.ctrl_run(name, ["cat", "/run/standin-keystone.pid"], check=False).stdout.strip()
    if standin.isdigit():
        labctl.kill_pids([int(standin)])
    labctl.ctrl_run(name, [os.path.join(VENV, "bin", "gunicorn"), "--daemon", "--pid", PIDFILE,
                           "--bind", "{}:{}".format(address, port), "--bind", "[{}]:{}".format(labctl.ADDRESSES6[name], port),
                           "--workers", "2", "--timeout", "60",
                           "--graceful-timeout", "5",
                           "--error-logfile", "/var/log/keystone/gunicorn.log", "--chdir", "/",
                           "--pythonpath", os.path.dirname(WSGI), "lab_wsgi:application"], timeout=60)
    if wait and still_silent({name: address}, port, time.monotonic() + wait):
        tail = labctl.ctrl_run(name, ["tail", "-n", "20", "/var/log/keystone/gunicorn.log"], check=False).stdout
        raise labctl.LabError("Keystone on {} does not answer {:.0f} s after its start; its log ends:\n{}".format(name, wait, tail))
    return True


def stop(name):
    """Stop the real Keystone on controller ``name``: its gunicorn master and every worker (a
    worker left behind, busy in a request, would keep the port and the next start would fail
    to bind); True if it ran. The pid file goes too."""
    pid = labctl.ctrl_run(name, ["cat", PIDFILE], check=False).stdout.strip()
    ran = pid.isdigit() and labctl.alive(int(pid))
    if ran:
        workers = labctl.children(int(pid))
        labctl.kill_pids([int(pid)] + workers)
    labctl.ctrl_run(name, ["rm", "-f", PIDFILE], check=False)
    return ran


def deploy():
    """Bring a real Keystone up on every lab controller (see the module docstring)."""
    if not os.path.exists(os.path.join(VENV, "bin", "keystone-manage")):
        raise labctl.LabError("no Keystone in {}: run scripts/setup.sh first".format(VENV))
    pillar, port = lab_pillar(), identity_port()
    names = [n for n, _ in labctl.CONTROLLERS]
    first = names[0]
    labctl.step("Keystone: configuration on {}".format(", ".join(names)))
    for name in names:
        labctl.ctrl_run(name, ["mkdir", "-p", "/etc/keystone", "/var/log/keystone"])
        if labctl.ctrl_run(name, ["cat", CONF], check=False).stdout != config_text(pillar):
            labctl.ctrl_run(name, ["sh", "-c", "umask 027; cat > " + CONF], input_text=config_text(pillar))
            if stop(name):
                labctl.step("Keystone on {} stopped: its configuration changed".format(name))
        labctl.ctrl_run(name, ["sh", "-c", "cat > " + WSGI], input_text=WSGI_TEXT)
    labctl.step("Keystone: schema on the Galera cluster (keystone-manage db_sync)")
    manage(first, "db_sync")
    if labctl.ctrl_run(first, ["test", "-e", "/etc/keystone/fernet-keys/0"], check=False).returncode != 0:
        manage(first, "fernet_setup", "--keystone-user", "root", "--keystone-group", "root")
        manage(first, "credential_setup", "--keystone-user", "root", "--keystone-group", "root")
    labctl.step("Keystone: the same fernet and credential keys on every controller")
    for path in ("/etc/keystone/fernet-keys", "/etc/keystone/credential-keys"):
        copy_dir(first, names[1:], path)
    labctl.step("Keystone: admin account (keystone-manage bootstrap; no endpoints: the catalog state makes them)")
    admin = labctl.KEYSTONE_ADMIN
    manage(first, "bootstrap", "--bootstrap-password", admin["password"], "--bootstrap-username", admin["username"],
           "--bootstrap-project-name", admin["project"], "--bootstrap-role-name", "admin")
    for name, address in labctl.CONTROLLERS:
        started = start(name, address, port)
        labctl.step("Keystone on {}:{} {}".format(address, port, "started" if started else "already running"))
    deadline = time.monotonic() + 90
    waiting = still_silent(dict(labctl.CONTROLLERS), port, deadline)
    if waiting:
        raise labctl.LabError("Keystone does not answer on {} (see /var/log/keystone/ there)".format(", ".join(sorted(waiting))))
    labctl.step("Keystone answers on every controller")
    # HAProxy saw the backends fail while the stand-ins made way: wait for its health checks
    # (rise count) to put them back, so a client of the VIP finds Keystone when this returns.
    vips = still_silent({a: a for v in pillar["vips"].values() for a in all_addresses(v["address"])}, port, deadline + 30)
    if vips:
        raise labctl.LabError("Keystone does not answer through HAProxy on {} (see salt-run openstack_ha.status)".format(", ".join(sorted(vips))))
    labctl.step("Keystone answers through every VIP")


def set_endpoint_mode(mode):
    """Switch the lab site's ``keystone:endpoint_mode`` on the master: ``vip`` (the pillar's own
    value) removes the override, ``active_controller`` writes a copy of the lab site file
    with that mode into the master's override pillar root (searched first). The reactor's
    runner sees it once its cached model expires (``MODEL_TTL``)."""
    target = os.path.join(labctl.PILLAR_OVERRIDES, "openstack_ha", "sites", "lab.sls")
    if mode == "vip":
        if os.path.exists(target):
            os.remove(target)
        return
    with open(os.path.join(labctl.REPO, "pillar", "openstack_ha", "sites", "lab.sls")) as fh:
        text = fh.read()
    if "endpoint_mode: vip" not in text:
        raise labctl.LabError("the lab site file no longer says 'endpoint_mode: vip'")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as fh:
        fh.write(text.replace("endpoint_mode: vip", "endpoint_mode: " + mode))


def admin_session(urls=None):
    """A Keystone admin session from the host (the lab's bridge), with the lab's account."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("openstack_ha_keystone", os.path.join(labctl.REPO, "_utils", "openstack_ha_keystone.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    urls = urls or ["http://{}:{}/v3".format(address, identity_port()) for _, address in labctl.CONTROLLERS]
    admin = labctl.KEYSTONE_ADMIN
    return module.connect(urls, admin["username"], admin["password"], admin["project"])
