"""Objects that must start afresh in a forked child (locks, clients, connections)."""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


# Held weakly: registering never keeps an object alive.
_LIVE: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def reset_in_child(obj: ForkAware) -> None:
    """Call ``obj._after_fork()`` in every child forked from now on."""
    _LIVE.add(obj)


def _reset_all() -> None:
    for obj in list(_LIVE):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all)
