"""Objects and module state that must start afresh in a forked child (locks, clients,
connections).

A lock copied into a child keeps the state it had at fork time; if another
thread of the parent held it, nothing in the child will ever release it. Every
lock rsauth holds is therefore replaced in the child: a Broker's through its
``_after_fork``, a module's through a function given to :func:`call_in_child`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations use it: a Protocol costs a tenth of a ms to define
    from typing import Protocol

    class ForkAware(Protocol):
        def _after_fork(self) -> None: ...


# Held weakly: registering never keeps an object alive.
_LIVE: weakref.WeakSet[ForkAware] = weakref.WeakSet()
# Module-level state lives as long as the process: held strongly, run first.
_MODULE_RESETS: list[Callable[[], None]] = []


def reset_in_child(obj: ForkAware) -> None:
    """Call ``obj._after_fork()`` in every child forked from now on."""
    _LIVE.add(obj)


def call_in_child(reset: Callable[[], None]) -> None:
    """Call ``reset()`` in every child forked from now on (a module's locks and caches)."""
    _MODULE_RESETS.append(reset)


def _reset_all() -> None:
    for reset in _MODULE_RESETS:
        reset()
    for obj in list(_LIVE):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all)
