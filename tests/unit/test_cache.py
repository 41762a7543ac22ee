"""The refresh-ahead cache: windows scaled to the lifetime, single flight, failures."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from rsauth._cache import Lease, RefreshCache, windows

from .conftest import FakeClock


class CountingFetcher:
    """Returns "v1", "v2", ... with a fixed lifetime; counts calls; can fail or block."""

    def __init__(self, lifetime: float | None = 900.0, *, delay: float = 0.0) -> None:
        self.lifetime = lifetime
        self.delay = delay
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> Lease[str]:
        with self._lock:
            self.calls += 1
            number = self.calls
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return Lease(f"v{number}", lifetime=self.lifetime)


def make(clock: FakeClock) -> RefreshCache[str, str]:
    return RefreshCache("test", clock=clock)


# (lifetime, seconds after the fetch, refetch expected)
WINDOWS = [
    # L = 900: advisory when < 300 s left (after 600 s), mandatory when < 120 s left.
    (900, 599, False),
    (900, 600, True),
    (900, 601, True),
    (900, 779, True),
    (900, 781, True),
    # L = 3600: advisory when < 1200 s left (after 2400 s), mandatory when < 120 s left.
    (3600, 2399, False),
    (3600, 2401, True),
    (3600, 3481, True),
]


@pytest.mark.parametrize(("lifetime", "elapsed", "refetch"), WINDOWS)
def test_refresh_windows(clock: FakeClock, lifetime: float, elapsed: float, refetch: bool) -> None:
    cache = make(clock)
    fetch = CountingFetcher(lifetime)
    assert cache.get("k", fetch) == "v1"
    clock.advance(elapsed)
    value = cache.get("k", fetch)
    assert fetch.calls == (2 if refetch else 1)
    assert value == ("v2" if refetch else "v1")


@pytest.mark.parametrize(
    ("lifetime", "advisory_at", "mandatory_at"),
    [(900, 600, 780), (3600, 2400, 3480), (240, 160, 180)],
)
def test_window_instants_scale_with_lifetime(
    clock: FakeClock, lifetime: float, advisory_at: float, mandatory_at: float
) -> None:
    from rsauth._cache import windows

    entry = windows(0.0, Lease("v", lifetime=lifetime))
    assert entry.advisory_at == pytest.approx(advisory_at)
    assert entry.mandatory_at == pytest.approx(mandatory_at)
    assert entry.expires_at == pytest.approx(lifetime)


def test_value_without_lifetime_refreshes_after_interval_and_never_expires(
    clock: FakeClock,
) -> None:
    from rsauth._cache import windows

    entry = windows(0.0, Lease("v", refresh_after=300))
    assert entry.advisory_at == 300
    assert entry.mandatory_at == float("inf")
    assert entry.expires_at == float("inf")


def test_hits_and_misses_are_counted(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher()
    for _ in range(5):
        cache.get("k", fetch)
    clock.advance(700)
    cache.get("k", fetch)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.refreshes) == (4, 1, 1)


def test_failed_advisory_refresh_keeps_serving_with_warning(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make(clock)
    fetch = CountingFetcher(900)
    cache.get("k", fetch)
    clock.advance(650)
    fetch.fail = RuntimeError("control plane down")
    with caplog.at_level(logging.WARNING, logger="rsauth"):
        assert cache.get("k", fetch) == "v1"
    assert fetch.calls == 2
    assert any("advisory refresh failed" in r.getMessage() for r in caplog.records)


def test_failed_mandatory_refresh_serves_unexpired_value(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher(900)
    cache.get("k", fetch)
    clock.advance(800)  # 100 s left: mandatory window, still valid
    fetch.fail = RuntimeError("down")
    assert cache.get("k", fetch) == "v1"


def test_nothing_usable_raises(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher(900)
    cache.get("k", fetch)
    clock.advance(901)  # expired: the entry left on its own
    fetch.fail = RuntimeError("down")
    with pytest.raises(RuntimeError, match="down"):
        cache.get("k", fetch)
    assert cache.peek("k") is None


def test_cold_failure_raises_and_caches_nothing(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher()
    fetch.fail = RuntimeError("denied")
    with pytest.raises(RuntimeError):
        cache.get("k", fetch)
    assert cache.peek("k") is None


def test_just_fetched_value_goes_to_its_fetcher(clock: FakeClock) -> None:
    # A value already expired when it arrives (a skewed or broken issuer).
    cache = make(clock)
    fetch = CountingFetcher(lifetime=0)
    assert cache.get("k", fetch) == "v1"
    assert cache.get("k", fetch) == "v2"
    assert fetch.calls == 2


def run_threads(count: int, target: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def test_single_flight_from_cold(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher(delay=0.05)
    results: list[str] = []
    barrier = threading.Barrier(32)

    def worker() -> None:
        barrier.wait()
        results.append(cache.get("k", fetch))

    run_threads(32, worker)
    assert fetch.calls == 1
    assert results == ["v1"] * 32


def test_single_flight_in_mandatory_window(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher(delay=0.02)
    cache.get("k", fetch)
    clock.advance(850)
    barrier = threading.Barrier(16)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.get("k", fetch))

    run_threads(16, worker)
    assert fetch.calls == 2
    assert results == ["v2"] * 16


def test_advisory_refresh_does_not_block_other_callers(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher()
    cache.get("k", fetch)
    clock.advance(650)
    fetch.gate = threading.Event()
    fetch.entered.clear()
    refresher_result: list[str] = []
    refresher = threading.Thread(target=lambda: refresher_result.append(cache.get("k", fetch)))
    refresher.start()
    assert fetch.entered.wait(5)
    # While the refresh is in flight, others get the still-valid value at once.
    assert [cache.get("k", fetch) for _ in range(10)] == ["v1"] * 10
    fetch.gate.set()
    refresher.join(5)
    assert refresher_result == ["v2"]
    assert fetch.calls == 2
    assert cache.get("k", fetch) == "v2"


def test_mandatory_window_waits_for_the_inflight_fetch(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher()
    fetch.gate = threading.Event()
    first: list[str] = []
    fetcher = threading.Thread(target=lambda: first.append(cache.get("k", fetch)))
    fetcher.start()
    assert fetch.entered.wait(5)
    waiter_result: list[str] = []
    waiter = threading.Thread(target=lambda: waiter_result.append(cache.get("k", fetch)))
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive()  # it waits rather than fetching a second time
    fetch.gate.set()
    fetcher.join(5)
    waiter.join(5)
    assert first == waiter_result == ["v1"]
    assert fetch.calls == 1


def test_other_keys_do_not_wait_for_a_slow_fetch(clock: FakeClock) -> None:
    cache = make(clock)
    slow = CountingFetcher()
    slow.gate = threading.Event()
    thread = threading.Thread(target=lambda: cache.get("slow", slow))
    thread.start()
    assert slow.entered.wait(5)
    assert cache.get("fast", CountingFetcher()) == "v1"
    slow.gate.set()
    thread.join(5)


def test_discard_only_the_refused_value(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher()
    cache.get("k", fetch)
    cache.discard("k", "some other value")
    assert cache.peek("k") == "v1"
    cache.discard("k", cache.peek("k"))
    assert cache.peek("k") is None


def test_invalidate_by_predicate_and_all(clock: FakeClock) -> None:
    cache: RefreshCache[tuple[str, str], str] = RefreshCache("t", clock=clock)
    for key in [("a", "1"), ("a", "2"), ("b", "1")]:
        cache.get(key, CountingFetcher())
    assert cache.invalidate(lambda key: key[0] == "a") == 2
    assert cache.peek(("b", "1")) == "v1"
    assert cache.invalidate() == 1


def test_bounded(clock: FakeClock) -> None:
    cache: RefreshCache[int, str] = RefreshCache("t", clock=clock, maxsize=4)
    for key in range(10):
        cache.get(key, CountingFetcher())
    assert sum(cache.peek(key) is not None for key in range(10)) == 4


def test_cache_logs_name_events_not_values(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make(clock)
    with caplog.at_level(logging.DEBUG, logger="rsauth"):
        cache.get("k", lambda: Lease("s3cr3t-value", lifetime=900))
        cache.get("k", lambda: Lease("s3cr3t-value", lifetime=900))
    text = caplog.text
    assert "cache miss" in text
    assert "cache hit" in text
    assert "fetched" in text
    assert "s3cr3t-value" not in text


def test_a_lease_without_lifetime_or_interval_is_kept_until_dropped(clock: FakeClock) -> None:
    cache = make(clock)
    fetch = CountingFetcher(lifetime=None)
    assert cache.get("k", fetch) == "v1"
    clock.advance(10 * 365 * 86400)
    assert cache.get("k", fetch) == "v1"
    assert fetch.calls == 1


def test_a_refresh_finished_meanwhile_is_served_not_repeated(clock: FakeClock) -> None:
    # An advisory caller that read the old entry, then got the key's lock after another
    # caller refreshed it, serves the new value and counts a hit.
    cache = make(clock)
    cache.get("k", CountingFetcher())
    cache.get("k", CountingFetcher())  # a hit, so the counts below start above zero
    clock.advance(700)  # the advisory window
    seen = cache._peek("k")
    assert seen is not None
    cache.put("k", Lease("refreshed", lifetime=900))
    hits = cache.stats().hits
    fetch = CountingFetcher()
    with cache._lock:
        slot = cache._slot("k")
    assert cache._advisory("k", slot, seen, fetch) == "refreshed"
    assert fetch.calls == 0
    assert cache.stats().hits == hits + 1


def test_a_refresh_due_right_now_is_made(clock: FakeClock) -> None:
    cache = make(clock)
    cache.get("k", CountingFetcher())
    clock.advance(600)  # exactly the advisory instant of the entry below
    seen = cache._peek("k")
    assert seen is not None
    cache.put("k", Lease("put", lifetime=900))
    clock.advance(600)
    fetch = CountingFetcher()
    with cache._lock:
        slot = cache._slot("k")
    assert cache._advisory("k", slot, seen, fetch) == "v1"
    assert fetch.calls == 1


def test_put_spreads_the_advisory_instant_too(clock: FakeClock) -> None:
    cache: RefreshCache[str, str] = RefreshCache("t", clock=clock, jitter=1.0)
    cache.put("k", Lease("put", lifetime=900))
    clock.advance(600)  # L/3 before expiry: with jitter, the advisory instant is later
    fetch = CountingFetcher()
    assert cache.get("k", fetch) == "put"
    assert fetch.calls == 0


def test_idle_slots_are_pruned_but_not_those_of_cached_or_busy_keys(clock: FakeClock) -> None:
    cache: RefreshCache[str, str] = RefreshCache("t", clock=clock, maxsize=2)
    cache.get("a", CountingFetcher())
    cache.get("b", CountingFetcher())
    cache.discard("a")
    with cache._lock:
        busy = cache._slot("busy")
    assert "a" in cache._slots  # three slots: below 2 * maxsize, nothing pruned yet
    with busy.lock:
        cache.get("c", CountingFetcher())
        cache.get("d", CountingFetcher())  # four slots: pruned before this one is made
    assert set(cache._slots) == {"b", "busy", "c", "d"}


def test_jitter_beyond_one_still_stops_at_the_mandatory_instant() -> None:
    entry = windows(0.0, Lease("v", lifetime=900), jitter=2.0, uniform=lambda: 1.0)
    assert entry.advisory_at == entry.mandatory_at == 780
