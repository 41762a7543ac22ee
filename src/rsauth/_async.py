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

The event loop's share of the work is kept small, since every microsecond of
it is multiplied by the tasks of a burst: joining a flight is one lock, one
dict lookup and one future (the settings are read in the worker, once per
flight); and when a flight ends its waiters are woken ``WAKE_BATCH`` per turn
of the loop, so a thousand tasks resuming at once do not hold it for one long
turn. The worker shares the GIL with the loop: while both want it, each may
wait up to ``sys.getswitchinterval()`` (5 ms by default) for the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from rsauth._errors import ConfigurationError

__all__ = ["WAKE_BATCH", "Flights", "wait"]

T = TypeVar("T")

# Waiters woken per turn of an event loop when a flight ends: each resumes a task (its
# frames, its done callbacks) in the turn after, so this bounds how long one turn runs.
WAKE_BATCH = 64

_Waiting = dict[asyncio.AbstractEventLoop, list["asyncio.Future[Any]"]]


class _Flight:
    """A keyed call and the futures awaiting it, by event loop (guarded by the table's
    lock; ``None`` once the call has ended and its waiters were handed their wake-ups)."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: _Waiting | None = {}


class Flights:
    """Blocking calls run in worker threads, awaitable from any event loop."""

    def __init__(self, *, max_workers: int | None = None) -> None:
        self._max_workers = max_workers
        # Guards the table, every flight's waiters and the executor's creation.
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread; cancelling the awaiting task does not stop it."""
        return await wait(self.submit(call))

    async def join(self, key: Hashable | None, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread, or the one already running for ``key``
        (``None``: never shared)."""
        if key is None:
            return await self.run(call)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        with self._lock:
            flight = self._flights.get(key)
            started = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            waiting = flight.waiting
            assert waiting is not None  # an ended flight has left the table
            waiters = waiting.get(loop)
            if waiters is None:
                waiting[loop] = [waiter]
            else:
                waiters.append(waiter)
        if not started:
            return await waiter
        try:
            future = self.submit(call)
        except BaseException as exc:  # closed: the flight ends before it began
            future = concurrent.futures.Future()
            future.set_exception(exc)
        # Outside the lock: a call already over runs the callback right here.
        future.add_done_callback(functools.partial(self._land, key, flight))
        return await waiter

    def in_flight(self) -> int:
        """How many keyed flights are running."""
        with self._lock:
            return len(self._flights)

    def close(self) -> None:
        """Stop taking work; running calls finish in their threads."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """``call()`` in a worker thread, for callers that must see its result even when
        nobody awaits it any more (to close what it opened)."""
        with self._lock:
            if self._closed:  # as the Broker's blocking calls say it
                raise ConfigurationError("this Broker is closed; create a new one")
            executor = self._executor
            if executor is None:
                executor = self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._max_workers, thread_name_prefix="rsauth"
                )
            return executor.submit(call)

    def _land(self, key: Hashable, flight: _Flight, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            waiting, flight.waiting = flight.waiting, None
        for loop, waiters in (waiting or {}).items():
            _hand_over(loop, future, waiters)


async def wait(future: concurrent.futures.Future[T]) -> T:
    """The result of ``future``, awaited through a future of the running loop alone.

    Unlike ``asyncio.wrap_future``, cancelling the wait leaves ``future`` alone
    (the call goes on, and its caller may still need its result).
    """
    if future.done():
        return future.result()
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    future.add_done_callback(lambda done: _hand_over(loop, done, [waiter]))
    return await waiter


def _hand_over(
    loop: asyncio.AbstractEventLoop,
    done: concurrent.futures.Future[Any],
    waiters: list[asyncio.Future[Any]],
) -> None:
    # A loop closed meanwhile has no one left waiting.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, loop, done, waiters, 0)


def _settle(
    loop: asyncio.AbstractEventLoop,
    done: concurrent.futures.Future[Any],
    waiters: list[asyncio.Future[Any]],
    start: int,
) -> None:
    """Hand ``done``'s outcome to ``WAKE_BATCH`` waiters from ``start``; the next batch
    in the next turn of the loop, after the tasks woken now have run."""
    end = start + WAKE_BATCH
    if end < len(waiters):
        loop.call_soon(_settle, loop, done, waiters, end)
    cancelled = done.cancelled()
    error = None if cancelled else done.exception()
    for waiter in waiters[start:end]:
        if waiter.done():  # its task was cancelled
            continue
        if cancelled:
            waiter.cancel()
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())
