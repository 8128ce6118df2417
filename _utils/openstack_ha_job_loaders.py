"""
The loop's questions and drains run on the minion's loaders instead of a fresh set per job.

A minion whose jobs run as threads (``multiprocessing: False``, as the controllers' must)
rebuilds every loader it has (execution modules, utils, states, renderers, returners,
executors...) at the start of each job: ``Minion._thread_return`` calls ``gen_modules()``
(saltstack/salt#69756, open). Measured here at about 80 ms of CPU a job with this project's
modules on an idle machine, much more on a loaded one. Every verification and every drain the
loop publishes pays it on every controller it reaches, on the critical path of a drain, and
at fleet size those rebuilds are most of what the controllers' minions spend on the loop.

The rebuild gives a job nothing the minion's current loaders lack: a refresh of modules
(``saltutil.sync_*``, ``saltutil.refresh_modules``) or of the pillar rebuilds or updates the
minion's own loaders in its main thread, and a threaded job runs on whatever
``minion.functions`` holds at its start either way. What it does give is a private
``__context__`` per job, which some of Salt's modules cache in (``pkg.list_pkgs`` and the
like). So :func:`install` skips the rebuild only for the signed calls of :data:`REUSED`:
the loop's read-only questions and its HAProxy runtime changes, which use no ``__context__``
and call nothing of Salt's that caches in it. Every other job (``state.apply``, the loop's
Galera and RabbitMQ actions, anything an operator runs) still gets its fresh loaders.

The minion installs it from the ``openstack_ha`` grains module, at its start. On a minion
that forks a process per job nothing changes (each job has its own copy anyway).
"""

import threading

# The functions behind openstack_ha_signed.call whose jobs run on the minion's loaders:
# questions that read, and HAProxy runtime state set through its admin socket.
REUSED = frozenset({
    "openstack_ha.controller_report",
    "openstack_ha_probe.service_view",
    "openstack_ha_probe.vips_held",
    "openstack_ha_haproxy.set_server_state",
    "openstack_ha_haproxy.set_servers_state",
    "openstack_ha_rabbitmq.quick_report",
    "openstack_ha_galera.local_status",
})

_lock = threading.Lock()
_MARK = "_openstack_ha_job_loaders"


def reusable(data, opts):
    """True when the job ``data`` (a minion's job payload: ``fun``, ``arg``) may run on the
    minion's current loaders: a minion of threaded jobs (``opts["multiprocessing"]`` False)
    and a signed call (``openstack_ha_signed.call``) of one of :data:`REUSED`."""
    if (opts or {}).get("multiprocessing", True) or not isinstance(data, dict):
        return False
    if data.get("fun") != "openstack_ha_signed.call":
        return False
    args = data.get("arg")
    if not isinstance(args, (list, tuple)) or not args:
        return False
    inner = args[0]
    if isinstance(inner, dict) and inner.get("__kwarg__"):  # called as fun=...
        inner = inner.get("fun")
    return isinstance(inner, str) and inner in REUSED


def stats(cls=None):
    """{"reused": jobs that ran on the minion's loaders, "rebuilt": jobs that rebuilt them}
    since :func:`install` patched ``cls`` (Salt's ``Minion`` by default) in this process;
    None when it is not installed there."""
    counts = getattr(_minion_class(cls).gen_modules, _MARK, None)
    return None if counts is None else dict(counts)


def installed(cls=None):
    """True when ``cls`` (Salt's ``Minion`` by default) has the loader-reusing ``gen_modules``."""
    return getattr(_minion_class(cls).gen_modules, _MARK, None) is not None


def _minion_class(cls):
    """``cls``, or Salt's ``Minion`` when it is None."""
    if cls is None:
        import salt.minion

        cls = salt.minion.Minion
    return cls


def _current_of(context_class):
    """``() -> the job payload`` read from Salt 3006's ``RequestContext`` (its ``current``)."""
    if not hasattr(context_class, "current"):
        raise AttributeError("RequestContext.current")
    return lambda: context_class.current


def install(cls=None):
    """Wrap ``cls.gen_modules`` (Salt's ``Minion`` by default): called without arguments from a
    job of :func:`reusable` (the job's payload is Salt's request context, set around each job)
    on a minion whose loaders exist, it returns at once. Idempotent, safe from any thread.
    Returns True when the wrapper is in place, False when this Salt lacks what it needs (then
    nothing is changed)."""
    try:
        import salt.utils.ctx

        cls = _minion_class(cls)
        if hasattr(salt.utils.ctx, "get_request_context"):  # Salt 3007 and later
            get_request = salt.utils.ctx.get_request_context
        else:  # Salt 3006: a thread's RequestContext
            get_request = _current_of(salt.utils.ctx.RequestContext)
    except (ImportError, AttributeError):
        return False
    with _lock:
        if installed(cls):
            return True
        rebuild = cls.gen_modules
        counts = {"reused": 0, "rebuilt": 0}

        def gen_modules(self, *args, **kwargs):
            request = get_request()
            if request:  # a job's (the minion's own start and refreshes run outside any job, uncounted)
                if (not args and not kwargs and getattr(self, "functions", None) is not None
                        and reusable(request.get("data"), getattr(self, "opts", None))):
                    counts["reused"] += 1
                    return None
                counts["rebuilt"] += 1
            return rebuild(self, *args, **kwargs)

        gen_modules.__doc__ = rebuild.__doc__
        setattr(gen_modules, _MARK, counts)
        cls.gen_modules = gen_modules
    return True
