"""Flights, the asyncio side of the broker: one call per key for any number of tasks, loops
and threads; cancellation; errors not kept; the wake-up spread over turns of the loop.

The calls are gated by ``threading.Event``s, so no test depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import rsauth
from rsauth._async import WAKE_BATCH, Flights

DEADLINE = 30.0


class Gated:
    """A blocking call that counts its runs and returns only once released."""

    def __init__(self, result: Any = "login", error: Exception | None = None) -> None:
        self.result = result
        self.error = error
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.threads.append(threading.get_ident())
        self.started.set()
        assert self.release.wait(DEADLINE), "never released"
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def runs(self) -> int:
        with self._lock:
            return len(self.threads)


async def until(event: threading.Event) -> None:
    """Until ``event`` is set, without blocking the loop (the deadline guards a deadlock)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not event.is_set():
        assert loop.time() < deadline, "the state was never reached"
        await asyncio.sleep(0.001)


@pytest.fixture
def flights() -> Iterator[Flights]:
    flights = Flights()
    yield flights
    flights.close()


def test_a_thousand_tasks_share_one_call_made_off_the_loop(flights: Flights) -> None:
    call = Gated()

    async def burst() -> tuple[int, list[Any]]:
        tasks = [asyncio.ensure_future(flights.join("key", call)) for _ in range(1000)]
        await until(call.started)
        call.release.set()
        return threading.get_ident(), await asyncio.gather(*tasks)

    loop_thread, results = asyncio.run(burst())
    assert results == ["login"] * 1000
    assert call.runs == 1
    assert loop_thread not in call.threads
    assert flights.in_flight() == 0


def test_waiters_are_woken_a_batch_per_turn_of_the_loop(flights: Flights) -> None:
    call = Gated()
    finished = 0
    # How many tasks finished by each turn of the loop, from the release on.
    by_turn: list[int] = []

    async def one() -> None:
        nonlocal finished
        await flights.join("key", call)
        finished += 1

    async def burst() -> None:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(one()) for _ in range(1000)]
        await until(call.started)

        def count() -> None:
            by_turn.append(finished)
            if finished < len(tasks):
                loop.call_soon(count)

        loop.call_soon(count)
        call.release.set()
        await asyncio.gather(*tasks)

    asyncio.run(burst())
    steps = [later - earlier for earlier, later in itertools.pairwise(by_turn)]
    assert by_turn[-1] == 1000
    assert max(steps) <= WAKE_BATCH
    assert len([step for step in steps if step]) >= 1000 // WAKE_BATCH


def test_loops_in_several_threads_and_plain_threads_share_one_call(flights: Flights) -> None:
    call = Gated()
    joined = threading.Barrier(4 + 1)
    results: list[Any] = []
    failures: list[BaseException] = []

    async def tasks() -> None:
        waiting = [asyncio.ensure_future(flights.join("key", call)) for _ in range(50)]
        await asyncio.sleep(0)  # every task has joined
        joined.wait(DEADLINE)
        results.extend(await asyncio.gather(*waiting))

    def in_loop() -> None:
        try:
            asyncio.run(tasks())
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=in_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    joined.wait(DEADLINE)
    call.release.set()
    for thread in threads:
        thread.join(DEADLINE)
    assert not failures
    assert results == ["login"] * 200
    assert call.runs == 1


def test_cancelled_waiters_leave_the_flight_to_the_others(flights: Flights) -> None:
    call = Gated()

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(flights.join("key", call)) for _ in range(100)]
        await until(call.started)
        for task in tasks[::2]:
            task.cancel()
        call.release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes[::2])
    assert outcomes[1::2] == ["login"] * 50
    assert call.runs == 1
    assert flights.in_flight() == 0


def test_a_flight_every_waiter_left_runs_to_its_end_and_leaves_the_table(
    flights: Flights,
) -> None:
    call = Gated()
    after = Gated(result="later")
    after.release.set()

    async def scenario() -> Any:
        tasks = [asyncio.ensure_future(flights.join("key", call)) for _ in range(10)]
        await until(call.started)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        call.release.set()
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while flights.in_flight():
            assert asyncio.get_running_loop().time() < deadline, "the flight never ended"
            await asyncio.sleep(0.001)
        return await flights.join("key", after)

    assert asyncio.run(scenario()) == "later"
    assert (call.runs, after.runs) == (1, 1)


def test_an_error_reaches_every_waiter_and_is_not_kept(flights: Flights) -> None:
    failing = Gated(error=rsauth.AccessDeniedError("denied"))
    working = Gated()
    working.release.set()

    async def scenario() -> tuple[list[Any], Any]:
        tasks = [asyncio.ensure_future(flights.join("key", failing)) for _ in range(100)]
        await until(failing.started)
        failing.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes, await flights.join("key", working)

    outcomes, later = asyncio.run(scenario())
    assert all(isinstance(outcome, rsauth.AccessDeniedError) for outcome in outcomes)
    assert later == "login"
    assert (failing.runs, working.runs) == (1, 1)


def test_calls_without_a_key_are_never_shared(flights: Flights) -> None:
    call = Gated()

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(flights.join(None, call)) for _ in range(3)]
        await until(call.started)
        call.release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == ["login"] * 3
    assert call.runs == 3


def test_a_closed_flights_fails_the_awaiting_task_and_keeps_nothing(flights: Flights) -> None:
    flights.close()
    call = Gated()
    with pytest.raises(rsauth.ConfigurationError, match="closed"):
        asyncio.run(flights.join("key", call))
    assert flights.in_flight() == 0
    assert call.runs == 0


def test_credentials_async_shares_flights_by_settings_and_never_by_password() -> None:
    broker = rsauth.Broker(region="us-east-1")
    call = Gated()
    asked: list[dict[str, Any]] = []

    def credentials(**settings: Any) -> Any:
        asked.append(settings)
        return call()

    broker.credentials = credentials  # type: ignore[method-assign]  # the AWS side left out

    async def scenario() -> list[Any]:
        tasks = [
            broker.credentials_async(workgroup="analytics", db_roles=["a", "b"]),
            broker.credentials_async(workgroup="analytics", db_roles=("a", "b")),
            broker.credentials_async(workgroup="analytics", user="u", password="p1"),
            broker.credentials_async(workgroup="analytics", user="u", password="p1"),
        ]
        running = [asyncio.ensure_future(task) for task in tasks]
        await until(call.started)
        call.release.set()
        return await asyncio.gather(*running)

    try:
        assert asyncio.run(scenario()) == ["login"] * 4
    finally:
        broker.close()
    # One flight for the two lists of roles; one each for the two calls with a password.
    assert call.runs == 3
    assert {tuple(settings["db_roles"] or ()) for settings in asked} == {("a", "b"), ()}
    assert [settings["password"] for settings in asked].count("p1") == 2


def test_get_credentials_async_forwards_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = rsauth.Broker(region="us-east-1")
    asked: list[dict[str, Any]] = []

    def credentials(**settings: Any) -> Any:
        asked.append(settings)
        return "login"

    broker.credentials = credentials  # type: ignore[method-assign]  # the AWS side left out
    monkeypatch.setattr(rsauth._api, "_default", broker)
    names = list(inspect.signature(rsauth.get_credentials_async).parameters)
    assert names == list(inspect.signature(rsauth.Broker.credentials_async).parameters)[1:]
    given: dict[str, Any] = {name: f"value of {name}" for name in names}
    try:
        result: Any = asyncio.run(rsauth.get_credentials_async(**given))
        assert result == "login"
    finally:
        broker.close()
    assert asked == [given]


def test_a_closed_broker_refuses_async_work_as_it_refuses_blocking_work() -> None:
    broker = rsauth.Broker(region="us-east-1")
    broker.close()
    with pytest.raises(rsauth.ConfigurationError, match="closed"):
        asyncio.run(broker.credentials_async(workgroup="analytics"))
    with pytest.raises(rsauth.ConfigurationError, match="closed"):
        asyncio.run(broker.connect_async(workgroup="analytics"))
    assert broker._flights_made is None  # no worker pool started after close
