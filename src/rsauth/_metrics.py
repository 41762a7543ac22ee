"""rsauth's figures: plain numbers always, OpenTelemetry instruments when its API is there.

Each Broker, and each shared tier, keeps its figures in a :class:`Figures`: plain
integers bumped where the event happens (a login fetched, an AWS error, a wait for
another worker), read by ``Broker.stats()``. A cache hit adds nothing to that: the
cache counts its own hits, and a Figures reads the cache's count when asked.

OpenTelemetry gets the same numbers at collection time. rsauth never imports
OpenTelemetry itself: an application that exports metrics has imported its API (the
SDK's meter provider is built on it: opentelemetry-sdk, ``opentelemetry/sdk/metrics/
_internal/__init__.py``, ``from opentelemetry.metrics import ...``), and one that has
not would pay about 10 ms on its first connect for nothing (the API is often installed
as some other package's dependency). The first Figures made, or the first event counted, once
``opentelemetry.metrics`` is in ``sys.modules`` creates rsauth's instruments on
``metrics.get_meter("rsauth")``: observable
counters and an observable gauge, whose callbacks sum the figures of every live
Figures and of those gone (so no counter goes down when a Broker is dropped), and one
histogram, the connect latency, recorded once per connect. Until the application sets
a meter provider, that meter is the API's proxy, which backs each instrument with a
real one when a provider is set (opentelemetry-api, ``opentelemetry/metrics/_internal/
__init__.py``: ``_ProxyMeterProvider.get_meter`` keeps every proxy meter it hands out
and ``on_set_meter_provider`` passes them the provider; ``_ProxyMeter.on_set_meter_provider``
calls ``on_meter_set`` of each proxy instrument, and ``_internal/instrument.py``
``_ProxyObservableCounter._create_real_instrument`` makes the real one with the same
callbacks). So a provider set after ``import rsauth``, or after the first Broker, is
picked up: at once when the application imported the API first, else at the next event
rsauth counts (a connect, a login fetched or refreshed, an AWS call), and the counters
then report everything counted since the process started. Without the API nothing is
created and the plain numbers are all there is.

Attributes name the login method, the workgroup and the region (besides the AWS
operation, the error code, the cache tier and the connect phase): never a user, a
person's ARN or a secret.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rsauth._fork import call_in_child

if TYPE_CHECKING:
    from typing import Protocol

    from opentelemetry.metrics import CallbackOptions, Histogram, Observation

    # Only annotations use it: a Protocol costs a tenth of a millisecond to define.
    class _Cache(Protocol):
        """What a Figures reads of a cache it watches (a ``RefreshCache``)."""

        def stats(self) -> Any: ...

        def held_keys(self) -> list[Any]: ...

__all__ = [
    "COUNTERS",
    "STATS_KEYS",
    "Attributes",
    "Figures",
    "attributes",
    "cached_totals",
    "flatten",
    "totals",
]

logger = logging.getLogger("rsauth")

# Attribute pairs, sorted by name: hashable, so they key plain counts.
Attributes = tuple[tuple[str, str], ...]

# The counters: rsauth.<name>, unit, what each counts. All observable.
COUNTERS: dict[str, tuple[str, str]] = {
    "login.fetches": ("{login}", "Logins fetched from AWS (GetCredentials, GetSecretValue)"),
    "login.recoveries": (
        "{login}",
        "Logins the database refused that a fresh login then replaced successfully",
    ),
    "login.retries": ("{attempt}", "Connect attempts made again after a refused login"),
    "cache.hits": ("{hit}", "Logins served from a cache tier (tier: process or shared)"),
    "cache.misses": ("{miss}", "Logins a cache tier did not have, fetched past it"),
    "cache.refreshes": ("{refresh}", "Cached logins replaced ahead of their expiry"),
    "cache.waits": ("{wait}", "Waits for another worker's fetch of the same login"),
    "cache.wait_timeouts": (
        "{timeout}",
        "Waits for another worker that ran out, after which this worker fetched itself",
    ),
    "connect.retries": ("{attempt}", "Connect attempts made again after a network failure"),
    "aws.calls": ("{call}", "AWS API calls made (after botocore's own retries: one each)"),
    "aws.errors": ("{error}", "AWS API calls that failed, by error code"),
}
CACHED = ("rsauth.logins.cached", "{login}", "Logins held in the process tier now")
CONNECT_DURATION = (
    "rsauth.connect.duration",
    "s",
    "Time to a database connection: getting the login (phase=login) and the driver's "
    "connect (phase=driver)",
)
# Seconds: a warm connect is milliseconds, a cold one with a resume up to minutes.
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


def attributes(**given: str | None) -> Attributes:
    """Attribute pairs of the values given, ``None`` left out."""
    return tuple(sorted((name, value) for name, value in given.items() if value is not None))


class _Tally:
    """The numbers of one :class:`Figures`, kept apart so they outlive it (see ``_retire``)."""

    def __init__(self, tier: str) -> None:
        # Guards the counts and the list of caches.
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, Attributes]] = Counter()
        self.caches: list[tuple[_Cache, Callable[[Any], Attributes]]] = []
        self.tier = (("tier", tier),)

    def snapshot(self) -> Counter[tuple[str, Attributes]]:
        with self.lock:
            counts = Counter(self.counts)
            caches = list(self.caches)
        for cache, _ in caches:
            stats = cache.stats()
            counts["cache.hits", self.tier] += stats.hits
            counts["cache.misses", self.tier] += stats.misses
            counts["cache.refreshes", self.tier] += stats.refreshes
        return counts

    def cached(self) -> Counter[Attributes]:
        with self.lock:
            caches = list(self.caches)
        held: Counter[Attributes] = Counter()
        for cache, describe in caches:
            held.update(describe(key) for key in cache.held_keys())
        return held


class Figures:
    """The figures of one Broker or one shared tier (``tier``: ``process`` or ``shared``).

    Safe to share between threads. Its numbers count towards the OpenTelemetry
    instruments while it lives and, added to the process's totals, after it is gone.
    """

    def __init__(self, tier: str = "process") -> None:
        self._tally = _Tally(tier)
        _register(self, self._tally)

    def add(self, name: str, attrs: Attributes = (), amount: int = 1) -> None:
        """Count ``amount`` more of ``name`` (a key of :data:`COUNTERS`) with ``attrs``."""
        if not _installed:
            _install_if_used()
        with self._tally.lock:
            self._tally.counts[name, attrs] += amount

    def watch(self, cache: _Cache, describe: Callable[[Any], Attributes]) -> None:
        """Report ``cache``'s hits, misses and refreshes, and its keys (as ``describe``
        names them) as cached logins. ``cache`` stays referenced while this lives."""
        with self._tally.lock:
            self._tally.caches.append((cache, describe))

    def connected(self, attrs: Attributes, login_seconds: float, driver_seconds: float) -> None:
        """One connection opened: ``login_seconds`` getting its login, then
        ``driver_seconds`` in the driver's connect."""
        if not _installed:
            _install_if_used()
        with self._tally.lock:
            counts = self._tally.counts
            counts["connect.count", attrs] += 1
            counts["connect.login_us", attrs] += round(login_seconds * 1e6)
            counts["connect.driver_us", attrs] += round(driver_seconds * 1e6)
        histogram = _histogram
        if histogram is not None:
            histogram.record(login_seconds, {"phase": "login", **dict(attrs)})
            histogram.record(driver_seconds, {"phase": "driver", **dict(attrs)})

    def counts(self) -> Counter[tuple[str, Attributes]]:
        """Every count by instrument name and attributes, now."""
        return self._tally.snapshot()

    def cached(self) -> Counter[Attributes]:
        """The logins the watched caches hold now, by attributes."""
        return self._tally.cached()

    def stats(self) -> dict[str, int]:
        """The counts as ``Broker.stats()`` shows them: flat keys, plain integers."""
        return flatten(self.counts(), sum(self.cached().values()))


# Every key Broker.stats() has, zero until counted.
STATS_KEYS = (
    "aws.errors",
    "cache.hits",
    "cache.logins",
    "cache.misses",
    "cache.refreshes",
    "cache.shared.hits",
    "cache.shared.misses",
    "cache.shared.wait_timeouts",
    "cache.shared.waits",
    "connect.count",
    "connect.driver_us",
    "connect.login_us",
    "connect.retries",
    "login.fetches",
    "login.recoveries",
    "login.retries",
)


def flatten(counts: Counter[tuple[str, Attributes]], cached: int) -> dict[str, int]:
    """Counts by name and attributes as flat keys: AWS calls as ``service.Operation``,
    errors as ``aws.errors`` and ``aws.errors.<code>``, fetches also by method, the shared
    tier as ``cache.shared.*``; totals for the rest."""
    flat: Counter[str] = Counter(dict.fromkeys(STATS_KEYS, 0))
    flat["cache.logins"] = cached
    for (name, attrs), value in counts.items():
        given = dict(attrs)
        if name == "aws.calls":
            flat[f"{given['service']}.{given['operation']}"] += value
            continue
        if name.startswith("cache.") and given.get("tier") == "shared":
            name = "cache.shared." + name.removeprefix("cache.")
        flat[name] += value
        if name == "aws.errors":
            flat[f"aws.errors.{given['code']}"] += value
        elif name == "login.fetches":
            flat[f"login.fetches.{given['method']}"] += value
    return dict(sorted(flat.items()))


# -- the process's totals and the instruments -----------------------------------------

# Guards the registry, the totals of Figures gone, and the instruments' creation.
_lock = threading.Lock()
_live: weakref.WeakSet[Figures] = weakref.WeakSet()
_gone: Counter[tuple[str, Attributes]] = Counter()
# Counts of Figures just gone, not yet in _gone: a finalizer may run inside a garbage
# collection that interrupts a holder of _lock, so it only appends (atomic) here.
_retired: deque[Counter[tuple[str, Attributes]]] = deque()
_installed = False
_histogram: Histogram | None = None


def _register(figures: Figures, tally: _Tally) -> None:
    if not _installed:
        _install_if_used()
    with _lock:
        _live.add(figures)
    # The tally, not the Figures: the finalizer must not keep it alive.
    weakref.finalize(figures, _retire, tally, os.getpid()).atexit = False


def _retire(tally: _Tally, pid: int) -> None:
    """A Figures is gone: its counts join the totals, so the counters keep rising."""
    if os.getpid() != pid:
        return  # collected in a forked child: the parent's numbers are not this process's
    _retired.append(tally.snapshot())


def totals(name: str) -> Counter[Attributes]:
    """The process's count of ``name`` by attributes: every Figures, live or gone."""
    with _lock:
        while _retired:
            _gone.update(_retired.popleft())
        live = list(_live)
        found: Counter[Attributes] = Counter(
            {attrs: value for (counted, attrs), value in _gone.items() if counted == name}
        )
    for figures in live:
        for (counted, attrs), value in figures.counts().items():
            if counted == name:
                found[attrs] += value
    return found


def cached_totals() -> Counter[Attributes]:
    """The logins every live Figures' caches hold now, by attributes."""
    with _lock:
        live = list(_live)
    held: Counter[Attributes] = Counter()
    for figures in live:
        held.update(figures.cached())
    return held


def _install_if_used() -> None:
    """Creates the instruments once the application has imported the OpenTelemetry API."""
    if "opentelemetry.metrics" in sys.modules:
        _install()


def _install() -> None:
    """Creates the instruments once per process, if the OpenTelemetry API is importable."""
    global _installed, _histogram
    with _lock:
        if _installed:
            return
        _installed = True
        try:
            from opentelemetry import metrics
        except ImportError:
            return
        from rsauth import __version__

        try:
            meter = metrics.get_meter("rsauth", __version__)
            for name, (unit, description) in COUNTERS.items():
                meter.create_observable_counter(
                    f"rsauth.{name}", callbacks=[_observer(name)], unit=unit,
                    description=description,
                )
            name, unit, description = CACHED
            meter.create_observable_gauge(
                name, callbacks=[_observe_cached], unit=unit, description=description
            )
            name, unit, description = CONNECT_DURATION
            _histogram = meter.create_histogram(
                name, unit=unit, description=description,
                explicit_bucket_boundaries_advisory=list(CONNECT_BUCKETS),
            )
        except Exception as exc:  # an API too old or broken: the plain numbers remain
            logger.warning("rsauth: OpenTelemetry instruments not created (%s)", exc)


def _observer(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(value, dict(attrs)) for attrs, value in totals(name).items()]

    return observe


def _observe_cached(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    return [Observation(value, dict(attrs)) for attrs, value in cached_totals().items()]


def _after_fork() -> None:
    # A parent's thread may have held the lock; its totals are not this process's.
    global _lock, _gone, _retired
    _lock = threading.Lock()
    _gone = Counter()
    _retired = deque()


call_in_child(_after_fork)
