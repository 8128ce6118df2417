"""
What every piece of the master's side gets handed: the master's options, Salt's utils loader
(to reach the other pieces) and the state one master process keeps between calls.

:depends: runs on the master, built by the runner (``_runners/openstack_ha.py``) for each call.

Salt's utils modules see neither ``__utils__`` nor each other, so the runner builds a
:class:`Context` and passes it as the first argument of every master-side function; a piece
calls another as ``ctx.call("records.load", site)`` (the function ``load`` of
``_utils/openstack_ha_records.py``). The state lives in the runner's ``__context__``: one
dictionary per loader, kept for as long as the loader lives (the engine's, for the master's
life; a ``salt-run`` call's, for that call).
"""

import threading

_INIT = threading.Lock()


class Context:
    """The master's options (``opts``), the utils loader (``utils``) and this process's state."""

    def __init__(self, opts, utils, state):
        self.opts = opts
        self.utils = utils
        self.state = state

    def call(self, name, *args, **kwargs):
        """Call ``openstack_ha_<name>`` (``"module.function"``) with this context first."""
        return self.utils["openstack_ha_" + name](self, *args, **kwargs)

    def util(self, name):
        """The plain util ``openstack_ha_<name>`` (one that takes no context)."""
        return self.utils["openstack_ha_" + name]

    def shared(self, name, make=dict):
        """This process's ``name`` state (made by ``make()`` the first time), shared by every
        thread of the process: a model cache, a lock, the silent controllers..."""
        found = self.state.get(name)
        if found is None:
            with _INIT:
                found = self.state.get(name)
                if found is None:
                    found = self.state[name] = make()
        return found


def new(opts, utils, context):
    """A :class:`Context` over ``opts`` and ``utils``, its state kept in ``context`` (the
    runner's ``__context__``). Pass the objects behind Salt's loader dunders, not the dunders:
    ``__utils__`` is a proxy that resolves in the loader of the function running now, and
    inside a util it would find none."""
    with _INIT:
        state = context.setdefault("openstack_ha", {})
    return Context(opts, utils, state)
