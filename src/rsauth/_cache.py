"""A refresh-ahead cache: values are replaced before they expire, one fetch per key.

Each value arrives as a :class:`Lease`: the value and its lifetime ``L`` as
the issuer measured it (expiry minus the server's own time), so a skewed
local clock does not shorten or stretch it. From the local time of the fetch
the cache derives three instants:

- **advisory** at ``L/3`` before expiry: one caller tries the key's lock
  without blocking and refreshes; every other caller keeps the valid value.
  A failed advisory refresh is logged at WARNING and the old value served.
- **mandatory** at ``min(120 s, L/4)`` before expiry, or nothing cached:
  callers wait on the key's lock for the one in-flight fetch, then re-check.
  If that refresh fails while the old value has not expired, it is served
  (WARNING); only with nothing usable does the error reach the caller.
- **expiry**: the entry leaves the store on its own (cachetools ``TLRUCache``).

A value without expiry (a secret) has only an advisory instant, its refresh
interval. A value that arrives part-way through its life (from the shared
store of fleet mode) carries its whole lifetime as ``span``, so its windows
sit where they would for the worker that fetched it. ``jitter`` (fleet mode)
delays each entry's advisory instant by a random fraction of the advisory
window, so a fleet holding the same login does not refresh all at once.
A value just fetched is always returned to the caller that fetched it,
whatever its windows say.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from cachetools import TLRUCache

__all__ = ["CacheStats", "Lease", "RefreshCache"]

logger = logging.getLogger("rsauth")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Upper bound of the mandatory window, whatever the lifetime.
MANDATORY_MAX_SECONDS = 120.0


class Lease(Generic[V]):
    """A fetched value and how long it stays good.

    ``lifetime``: seconds from the fetch until expiry, as the issuer measured
    it; ``None`` when it does not expire. ``refresh_after``: for a value
    without expiry, seconds after which it is refreshed (advisory only).
    ``span``: the value's whole lifetime when it arrives with only
    ``lifetime`` of it left (fleet mode's shared store; default: ``lifetime``);
    the windows are scaled to it. Never changed once made.

    The records of this module are written out by hand, not dataclasses: those cost
    most of a millisecond each to define at import.
    """

    __slots__ = ("lifetime", "refresh_after", "span", "value")

    def __init__(
        self,
        value: V,
        lifetime: float | None = None,
        refresh_after: float | None = None,
        span: float | None = None,
    ) -> None:
        self.value = value
        self.lifetime = lifetime
        self.refresh_after = refresh_after
        self.span = span

    def __repr__(self) -> str:
        return (
            f"Lease(value={self.value!r}, lifetime={self.lifetime!r}, "
            f"refresh_after={self.refresh_after!r}, span={self.span!r})"
        )


class _Entry(Generic[V]):
    """A cached value and the instants (the clock's timestamps) of its windows."""

    __slots__ = ("advisory_at", "expires_at", "mandatory_at", "value")

    def __init__(
        self, value: V, advisory_at: float, mandatory_at: float, expires_at: float
    ) -> None:
        self.value = value
        self.advisory_at = advisory_at
        self.mandatory_at = mandatory_at
        self.expires_at = expires_at

    def _as_tuple(self) -> tuple[V, float, float, float]:
        return self.value, self.advisory_at, self.mandatory_at, self.expires_at

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Entry):
            return NotImplemented
        return self._as_tuple() == other._as_tuple()

    def __repr__(self) -> str:
        return (
            f"_Entry(value={self.value!r}, advisory_at={self.advisory_at!r}, "
            f"mandatory_at={self.mandatory_at!r}, expires_at={self.expires_at!r})"
        )


class CacheStats:
    """Counts since the cache was made: values served, fetched, refreshed."""

    __slots__ = ("hits", "misses", "refreshes")

    def __init__(self, hits: int = 0, misses: int = 0, refreshes: int = 0) -> None:
        self.hits = hits
        self.misses = misses
        self.refreshes = refreshes

    def __repr__(self) -> str:
        return f"CacheStats(hits={self.hits}, misses={self.misses}, refreshes={self.refreshes})"


class _Slot:
    """Per-key state: the lock that makes fetches of this key single flight."""

    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()


def windows(
    fetched_at: float,
    lease: Lease[V],
    *,
    jitter: float = 0.0,
    uniform: Callable[[], float] = random.random,
) -> _Entry[V]:
    """The advisory, mandatory and expiry instants of ``lease`` fetched at ``fetched_at``.

    ``jitter`` in [0, 1]: the advisory instant moves later by ``jitter * uniform()``
    of the advisory window, never earlier and never into the mandatory window.
    """
    if lease.lifetime is None:
        after = lease.refresh_after if lease.refresh_after is not None else math.inf
        return _Entry(lease.value, fetched_at + after, math.inf, math.inf)
    lifetime = max(lease.lifetime, 0.0)
    scale = max(lease.span, lifetime) if lease.span is not None else lifetime
    expires_at = fetched_at + lifetime
    advisory_at = expires_at - scale / 3
    mandatory_at = expires_at - min(MANDATORY_MAX_SECONDS, scale / 4)
    if jitter > 0 and mandatory_at > advisory_at:
        # Spreads a fleet's refreshes over the window; only ever later than L/3 before expiry.
        advisory_at += min(jitter, 1.0) * uniform() * (mandatory_at - advisory_at)
    return _Entry(lease.value, advisory_at, mandatory_at, expires_at)


def _expiry(_key: Hashable, entry: _Entry[V], _now: float) -> float:
    return entry.expires_at


class RefreshCache(Generic[K, V]):
    """Bounded per-key cache with refresh ahead of expiry and single-flight fetches.

    Keys must never contain a secret: they are logged through ``describe``.
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], datetime],
        maxsize: int = 1024,
        describe: Callable[[K], str] = repr,
        jitter: float = 0.0,
    ) -> None:
        self._name = name
        self._jitter = jitter
        self._clock = clock
        self._maxsize = maxsize
        self._describe = describe
        # Guards the store, the slots and the counters; held only for dict
        # operations, never while fetching.
        self._lock = threading.Lock()
        self._entries: TLRUCache[K, _Entry[V]] = TLRUCache(maxsize, ttu=_expiry, timer=self._now)
        self._slots: dict[K, _Slot] = {}
        self._stats = CacheStats()
        # Bumped by every change of the store: a caller that remembered a value and this
        # number knows it is still the cached one while the number has not moved.
        self.generation = 0

    def _now(self) -> float:
        return self._clock().timestamp()

    def __len__(self) -> int:
        """Entries held now (bounded by ``maxsize``)."""
        with self._lock:
            return len(self._entries)

    def get(self, key: K, fetch: Callable[[], Lease[V]]) -> V:
        """The value for ``key``, fetched or refreshed through ``fetch`` when due."""
        now = self._now()
        with self._lock:
            entry = self._entries.get(key)
            slot = self._slot(key)
            if entry is not None and now < entry.advisory_at:
                self._stats.hits += 1
        if entry is not None and now < entry.advisory_at:
            if logger.isEnabledFor(logging.DEBUG):  # describing a key costs more than a hit
                logger.debug("%s cache hit: %s", self._name, self._describe(key))
            return entry.value
        if entry is not None and now < entry.mandatory_at:
            return self._advisory(key, slot, entry, fetch)
        return self._mandatory(key, slot, fetch)

    def _advisory(self, key: K, slot: _Slot, seen: _Entry[V], fetch: Callable[[], Lease[V]]) -> V:
        if not slot.lock.acquire(blocking=False):
            # Another caller is refreshing; the value we hold is still valid.
            self._count_hit(key)
            return seen.value
        try:
            current = self._peek(key)
            if current is not None and current is not seen and self._now() < current.advisory_at:
                self._count_hit(key)
                return current.value
            try:
                return self._fetch(key, fetch, refresh=True)
            except Exception as exc:
                logger.warning(
                    "%s advisory refresh failed for %s; serving the cached value "
                    "until it is due (%s)",
                    self._name,
                    self._describe(key),
                    type(exc).__name__,
                )
                self._count_hit(key)
                return seen.value
        finally:
            slot.lock.release()

    def _mandatory(self, key: K, slot: _Slot, fetch: Callable[[], Lease[V]]) -> V:
        # Waiting here is the point: the caller holding the lock is fetching this key.
        with slot.lock:
            current = self._peek(key)
            now = self._now()
            if current is not None and now < current.mandatory_at:
                self._count_hit(key)
                return current.value
            try:
                return self._fetch(key, fetch, refresh=current is not None)
            except Exception as exc:
                if current is not None and self._now() < current.expires_at:
                    logger.warning(
                        "%s refresh failed for %s; serving the cached value until it expires (%s)",
                        self._name,
                        self._describe(key),
                        type(exc).__name__,
                    )
                    self._count_hit(key)
                    return current.value
                raise

    def _fetch(self, key: K, fetch: Callable[[], Lease[V]], *, refresh: bool) -> V:
        with self._lock:
            if refresh:
                self._stats.refreshes += 1
            else:
                self._stats.misses += 1
        logger.debug(
            "%s cache %s: fetching %s",
            self._name,
            "refresh" if refresh else "miss",
            self._describe(key),
        )
        started = time.perf_counter()
        lease = fetch()
        fetched_at = self._now()
        logger.debug(
            "%s fetched %s in %.3f s (lifetime %s s)",
            self._name,
            self._describe(key),
            time.perf_counter() - started,
            "none" if lease.lifetime is None else f"{lease.lifetime:.0f}",
        )
        entry = windows(fetched_at, lease, jitter=self._jitter)
        with self._lock:
            self._entries[key] = entry
            self.generation += 1
        return lease.value

    def _peek(self, key: K) -> _Entry[V] | None:
        with self._lock:
            return self._entries.get(key)

    def _count_hit(self, key: K) -> None:
        with self._lock:
            self._stats.hits += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s cache hit: %s", self._name, self._describe(key))

    def _slot(self, key: K) -> _Slot:
        # Caller holds self._lock.
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= 2 * self._maxsize:
                self._prune_slots()
            slot = self._slots[key] = _Slot()
        return slot

    def _prune_slots(self) -> None:
        # Caller holds self._lock. A slot whose lock is held is in use: keep it.
        for key in [
            k for k, s in self._slots.items() if k not in self._entries and not s.lock.locked()
        ]:
            del self._slots[key]

    def put(self, key: K, lease: Lease[V]) -> None:
        """Store ``lease`` for ``key`` as if it had just been fetched."""
        entry = windows(self._now(), lease, jitter=self._jitter)
        with self._lock:
            self._entries[key] = entry
            self.generation += 1

    def peek(self, key: K) -> V | None:
        """The cached value for ``key`` if any, without fetching or counting."""
        entry = self._peek(key)
        return None if entry is None else entry.value

    def held_keys(self) -> list[K]:
        """The keys of the entries held now (expired ones are gone)."""
        with self._lock:
            return list(self._entries)

    def discard(self, key: K, value: V | None = None) -> None:
        """Drop ``key``; with ``value``, only while that very value is cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (value is None or entry.value is value):
                del self._entries[key]
                self.generation += 1

    def invalidate(self, predicate: Callable[[K], bool] | None = None) -> int:
        """Drop every entry whose key matches ``predicate`` (all without one)."""
        with self._lock:
            keys = [
                key for key in list(self._entries.keys()) if predicate is None or predicate(key)
            ]
            for key in keys:
                self._entries.pop(key, None)
            self.generation += 1
        return len(keys)

    def fresh_until(self, key: K) -> float | None:
        """Until when (the clock's timestamp) the cached value of ``key`` is served as a hit
        without a refresh; ``None`` when nothing is cached."""
        entry = self._peek(key)
        return None if entry is None else entry.advisory_at

    def count_hit(self) -> None:
        """Count a hit answered from a value remembered from this cache (see ``generation``)."""
        with self._lock:
            self._stats.hits += 1

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._stats.hits, self._stats.misses, self._stats.refreshes)

    def reset(self) -> None:
        """Forget everything, locks included (used in a forked child)."""
        self._lock = threading.Lock()
        self._entries = TLRUCache(self._maxsize, ttu=_expiry, timer=self._now)
        self._slots = {}
        self._stats = CacheStats()
        self.generation += 1
