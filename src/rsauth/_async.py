"""Awaiting the broker's blocking work from asyncio: worker threads, one flight per key.

The broker's AWS calls and driver connects block, so an event loop hands
them to worker threads of :class:`Flights`. Callers asking for the same key
while a call is running join it: one thread-side flight, however many tasks
and threads wait (the login cache under it is single flight across threads
too). Each waiter awaits its own future on its own loop, so

- cancelling a waiting task cancels only its wait: the flight runs to the
  end, the others get its result, and the login it fetched is cached;
- a flight leaves the table when it ends, whatever the outcome, so the next
  call starts a new one (errors are never kept);
- any number of event loops and threads may wait on the same flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["Flights", "wait"]

T = TypeVar("T")


class Flights:
    """Blocking calls run in worker threads, awaitable from any event loop."""

    def __init__(self, *, max_workers: int | None = None) -> None:
        self._max_workers = max_workers
        # Guards the table and the executor's creation.
        self._lock = threading.Lock()
        self._flights: dict[Hashable, concurrent.futures.Future[Any]] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread; cancelling the awaiting task does not stop it."""
        return await wait(self.submit(call))

    async def join(self, key: Hashable | None, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread, or the one already running for ``key``
        (``None``: never shared)."""
        if key is None:
            return await self.run(call)
        with self._lock:
            future = self._flights.get(key)
            started = future is None
            if future is None:
                future = self._flights[key] = self._submit_locked(call)
        if started:
            # Outside the lock: a flight already over runs the callback right here.
            future.add_done_callback(functools.partial(self._land, key))
        return await wait(future)

    def in_flight(self) -> int:
        """How many keyed flights are running."""
        with self._lock:
            return len(self._flights)

    def close(self) -> None:
        """Stop taking work; running calls finish in their threads."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """``call()`` in a worker thread, for callers that must see its result even when
        nobody awaits it any more (to close what it opened)."""
        with self._lock:
            return self._submit_locked(call)

    def _submit_locked(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="rsauth"
            )
        return self._executor.submit(call)

    def _land(self, key: Hashable, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if self._flights.get(key) is future:
                del self._flights[key]


# The waiters of each running call, by event loop: one wake-up per loop when it ends, however
# many tasks wait there.
_waiting_lock = threading.Lock()
_waiting: dict[concurrent.futures.Future[Any], dict[asyncio.AbstractEventLoop, list[Any]]] = {}


def _forget_waiters_in_child() -> None:
    # The parent's threads and loops do not exist here; its lock may have been held.
    global _waiting_lock, _waiting
    _waiting_lock = threading.Lock()
    _waiting = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_waiters_in_child)


async def wait(future: concurrent.futures.Future[T]) -> T:
    """The result of ``future``, awaited through a future of the running loop alone.

    Unlike ``asyncio.wrap_future``, cancelling the wait leaves ``future`` alone
    (other waiters share it).
    """
    if future.done():
        return future.result()
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    with _waiting_lock:
        by_loop = _waiting.get(future)
        first = by_loop is None
        if by_loop is None:
            by_loop = _waiting[future] = {}
        by_loop.setdefault(loop, []).append(waiter)
    if first:
        # Outside the lock: a call already over runs the callback right here.
        future.add_done_callback(_wake)
    return await waiter


def _wake(future: concurrent.futures.Future[Any]) -> None:
    with _waiting_lock:
        by_loop = _waiting.pop(future, {})
    for loop, waiters in by_loop.items():
        # A loop closed meanwhile has no one left waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, waiters)


def _settle(done: concurrent.futures.Future[Any], waiters: list[asyncio.Future[Any]]) -> None:
    for waiter in waiters:
        if waiter.done():  # cancelled
            continue
        if done.cancelled():
            waiter.cancel()
        elif (error := done.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())
