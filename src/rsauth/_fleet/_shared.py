"""``RedisCache``: the shared tier between the in-process cache and AWS (fleet mode).

The broker hands :meth:`RedisCache.fetch` the fetch it would have made. Before
calling AWS, a worker:

1. reads the entry for the login's binding; a usable one (authentic, for this
   very binding, not in its mandatory window, not the login this worker
   already holds or saw refused) is the answer;
2. else takes the lease (``SET NX PX``) and fetches, publishes the sealed entry
   (``PX`` = the time the login has left), releases the lease and ``PUBLISH``es
   on the lease's channel;
3. else — another worker holds the lease — subscribes to that channel, looks at
   (1) and (2) again, and does so each time a message wakes it (or 1 to 2 s have
   passed), until ``wait_seconds`` have passed, then fetches itself. A holder
   that dies leaves a lease that expires after ``lease_seconds``; the next look
   takes it. A server that refuses the channel: the worker polls instead, with
   exponential backoff and jitter.

The store down or slow means fetching from AWS as before (see ``_store``).
Identity: the caller's ARN from STS ``GetCallerIdentity``, asked once per AWS
access key (so again after a role's credentials refresh). With a fleet key the
answer is shared too: one worker per access key asks STS (under a lease of its
own) and seals the ARN in a caller entry whose associated data names the access
key id; the others open it instead of asking. KMS mode does not share it
(docs/security.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from rsauth._cache import MANDATORY_MAX_SECONDS, Lease
from rsauth._config import _bool
from rsauth._errors import ConfigurationError
from rsauth._fleet._crypto import (
    Binding,
    EntryRejected,
    FleetKey,
    KmsKey,
    Sealer,
    binding_identity,
    parse_fleet_key,
)
from rsauth._fleet._store import Store, StoreUnavailable, Subscription, redact_url
from rsauth._fork import reset_in_child
from rsauth._metrics import Figures
from rsauth._sources import Login

if TYPE_CHECKING:
    from rsauth._sessions import SessionKey, Sessions

__all__ = [
    "KEY_ENV",
    "KMS_KEY_ENV",
    "SHARE_ROLE_SESSIONS_ENV",
    "URL_ENV",
    "RedisCache",
    "SharedRequest",
    "request_for",
    "shared_cache_from_environ",
]

logger = logging.getLogger("rsauth")

URL_ENV = "RSAUTH_SHARED_CACHE_URL"
KEY_ENV = "RSAUTH_SHARED_CACHE_KEY"
KMS_KEY_ENV = "RSAUTH_SHARED_CACHE_KMS_KEY"
SHARE_ROLE_SESSIONS_ENV = "RSAUTH_SHARED_CACHE_SHARE_ROLE_SESSIONS"

# A secret's entry this close to its refresh point is left to the next reader.
_SECRET_MIN_LEFT = 0.5
# The attributes of this tier's figures.
_SHARED = (("tier", "shared"),)
_REJECT_WARNING_INTERVAL = 600.0
# An access key id names one principal for as long as the key lives; the hour only
# bounds how long the entry of a key no worker uses any more stays in the store.
_CALLER_TTL_MS = 3_600_000

_T = TypeVar("_T")


@dataclass(frozen=True)
class SharedRequest:
    """One login the broker is about to fetch, and how to learn who is asking."""

    binding: Binding  # identity left empty: filled from caller_arn when needed
    describe: str
    holding: Login | None  # what the in-process cache holds for it now
    access_key: Callable[[], str]
    caller_arn: Callable[[], str]
    kms: Callable[[], Any]
    clock: Callable[[], datetime]
    key: Any = None  # the broker's cache key, matched by invalidate()


def request_for(
    sessions: Sessions,
    session_key: SessionKey,
    key: Any,
    *,
    holding: Login | None,
    describe: str,
    clock: Callable[[], datetime],
) -> SharedRequest:
    """The request for the broker's ``CredentialKey`` ``key``, fetched as ``session_key``."""

    def access_key() -> str:
        credentials = sessions.session(session_key).get_credentials()
        if credentials is None:
            return ""
        return str(credentials.get_frozen_credentials().access_key or "")

    def caller_arn() -> str:
        return str(sessions.sts(session_key).get_caller_identity()["Arn"])

    binding = Binding(
        identity="",
        region=key.region,
        workgroup=key.workgroup,
        custom_domain=key.custom_domain,
        database=key.database,
        method=key.method,
        duration=key.duration,
        role_arn=key.role_arn,
        db_roles=tuple(key.db_roles),
        secret_id=key.secret_id,
    )
    return SharedRequest(
        binding=binding,
        describe=describe,
        holding=holding,
        access_key=access_key,
        caller_arn=caller_arn,
        kms=lambda: sessions.kms(session_key),
        clock=clock,
        key=key,
    )


@dataclass(frozen=True)
class _Seen:
    """Where a login came from in the store: its entry key, generation and sealed bytes."""

    entry_key: str
    generation: str
    blob: bytes | None


class RedisCache:
    """A shared login cache in Redis or Valkey, for a fleet of processes and machines.

    ``url``: ``redis://``, ``rediss://`` (TLS) or ``unix://``, with an ACL user
    and password as the URL says (default: ``RSAUTH_SHARED_CACHE_URL``).
    Exactly one key mode: ``kms_key_id`` (default ``RSAUTH_SHARED_CACHE_KMS_KEY``)
    seals each identity's entries with KMS data keys whose encryption context
    names the identity; ``fleet_key`` (32 random bytes, 64 hex digits or base64;
    default ``RSAUTH_SHARED_CACHE_KEY``) seals every entry with one key, making
    the fleet one trust domain. ``timeout``: socket timeouts in seconds.
    ``lease_seconds``: how long a fetching worker holds the lease;
    ``wait_seconds``: how long the others wait for its result before fetching
    themselves. ``jitter`` spreads each worker's refresh over the advisory
    window (0 to 1). ``prefix`` begins every key. Pass it as
    ``rsauth.Broker(shared_cache=...)``; one instance may serve several Brokers.

    Logins are shared per caller: an assumed-role session shares only with itself,
    since each session may carry its own ``RedshiftDbRoles`` tag. Roles rsauth
    assumes (``role_arn=``) are shared by every worker, their tags being the bound
    ``db_roles=``. ``share_role_sessions=True`` (default
    ``RSAUTH_SHARED_CACHE_SHARE_ROLE_SESSIONS``) shares one login among all sessions
    of a role: only for fleets whose sessions all carry the same tags, such as an
    instance profile or a task role.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        fleet_key: bytes | str | None = None,
        kms_key_id: str | None = None,
        prefix: str = "rsauth:",
        timeout: float = 0.25,
        lease_seconds: float = 10.0,
        wait_seconds: float = 10.0,
        jitter: float = 0.5,
        retry_after: float = 5.0,
        share_role_sessions: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = environ if environ is not None else os.environ
        url = url or env.get(URL_ENV) or None
        if url is None:
            raise ConfigurationError(
                f"RedisCache needs url= or {URL_ENV} (redis://, rediss:// or unix://)"
            )
        if fleet_key is None and kms_key_id is None:
            fleet_key = env.get(KEY_ENV) or None
            kms_key_id = env.get(KMS_KEY_ENV) or None
            sources = f"{KEY_ENV} and {KMS_KEY_ENV}"
        else:
            sources = "fleet_key= and kms_key_id="
        if fleet_key is not None and kms_key_id is not None:
            raise ConfigurationError(
                f"{sources} are both set; the shared cache uses one key mode: "
                "kms_key_id (per-identity) or fleet_key (the fleet is one trust domain)"
            )
        if fleet_key is None and kms_key_id is None:
            raise ConfigurationError(
                "the shared cache seals every entry and needs a key: kms_key_id= / "
                f"{KMS_KEY_ENV} (a KMS key; per-identity protection) or fleet_key= / "
                f"{KEY_ENV} (32 random bytes as 64 hex digits or base64; the fleet is one "
                "trust domain)"
            )
        if not 0.0 <= jitter <= 1.0:
            raise ConfigurationError(f"jitter={jitter!r}: accepted values are 0 to 1")
        if timeout <= 0 or lease_seconds <= 0 or wait_seconds < 0:
            raise ConfigurationError(
                "timeout and lease_seconds must be positive and wait_seconds not negative"
            )
        self._sealer: Sealer = (
            KmsKey(kms_key_id)
            if kms_key_id is not None
            else FleetKey(parse_fleet_key(fleet_key or b"", source="the fleet key"))
        )
        self._store = Store(url, timeout=timeout, retry_after=retry_after)
        if share_role_sessions is None:
            share_role_sessions = _bool(
                SHARE_ROLE_SESSIONS_ENV, env.get(SHARE_ROLE_SESSIONS_ENV) or "false"
            )
        self.share_role_sessions = _bool("share_role_sessions", share_role_sessions)
        self.prefix = prefix
        self.jitter = jitter
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        # Waiters subscribe to the lease's channel (else poll with backoff and jitter).
        self._subscribe = True
        self._start()
        reset_in_child(self)

    def _start(self) -> None:
        # Guards the identity, provenance and rejection maps.
        self._lock = threading.Lock()
        self._arns: dict[str, str] = {}
        self._seen: weakref.WeakKeyDictionary[Login, _Seen] = weakref.WeakKeyDictionary()
        self._rejected: OrderedDict[str, None] = OrderedDict()
        self._reject_warned: dict[str, float] = {}
        # Entry keys this process published or used, and the broker's key of each.
        self._entries: OrderedDict[str, Any] = OrderedDict()
        # Hits, misses and waits of this tier, for stats() and OpenTelemetry.
        self._figures = Figures(tier="shared")

    def _after_fork(self) -> None:
        self._start()
        self._store.reset()
        if isinstance(self._sealer, KmsKey):
            self._sealer.reset()

    @property
    def url(self) -> str:
        """The store's URL, password masked."""
        return redact_url(self._store.url)

    def stats(self) -> dict[str, int]:
        """This tier's figures: ``cache.shared.hits`` (logins taken from the store),
        ``cache.shared.misses`` (fetched from AWS past it), ``cache.shared.waits`` (for
        another worker's fetch) and ``cache.shared.wait_timeouts`` (waits that ran out)."""
        return {
            name: value
            for name, value in self._figures.stats().items()
            if name.startswith("cache.shared.")
        }

    def close(self) -> None:
        """Close the connections to the store."""
        self._store.close()

    def __repr__(self) -> str:
        return f"<rsauth.RedisCache url={self.url!r} {self._sealer.describe()}>"

    # -- the broker's side ------------------------------------------------

    def fetch(self, request: SharedRequest, fetch: Callable[[], Lease[Login]]) -> Lease[Login]:
        """The login for ``request``: from the store, or fetched once for the fleet."""
        fetch = self._missed(fetch)
        if not self._store.available():
            return self._remember(fetch(), _Seen("", secrets.token_hex(8), None))
        try:
            identity = self._identity(request)
        except Exception as exc:
            logger.debug("shared cache: caller identity unknown (%s)", type(exc).__name__)
            return fetch()
        binding = replace(request.binding, identity=identity)
        entry_key = f"{self.prefix}v1:e:{self._sealer.store_key(binding)}"
        try:
            return self._through_store(request, binding, entry_key, fetch)
        except StoreUnavailable:
            # Nothing was fetched yet: the store failed before or while waiting.
            return self._remember(fetch(), _Seen("", secrets.token_hex(8), None))

    def reject(self, login: Login) -> None:
        """``login`` was refused: never take it from the store again, and drop its entry."""
        with self._lock:
            seen = self._seen.get(login)
            if seen is None:
                return
            self._rejected[seen.generation] = None
            while len(self._rejected) > 256:
                self._rejected.popitem(last=False)
        if seen.blob is not None and self._store.available():
            with contextlib.suppress(StoreUnavailable):
                self._store.delete_if(seen.entry_key, seen.blob)

    def invalidate(self, matches: Callable[[Any], bool] | None = None) -> int:
        """Delete the store's entries of the logins this process published or used whose
        broker key ``matches`` (all of them without it); other workers then fetch afresh.
        Returns how many were deleted."""
        with self._lock:
            chosen = [
                entry_key
                for entry_key, key in self._entries.items()
                if matches is None or (key is not None and matches(key))
            ]
            for entry_key in chosen:
                del self._entries[entry_key]
        deleted = 0
        if chosen and self._store.available():
            with contextlib.suppress(StoreUnavailable):
                deleted = self._store.delete(*chosen)
        logger.debug("shared cache: invalidated %d entries", deleted)
        return deleted

    # -- steps ------------------------------------------------------------

    def _track(self, entry_key: str, key: Any) -> None:
        with self._lock:
            self._entries[entry_key] = key
            self._entries.move_to_end(entry_key)
            while len(self._entries) > 1024:
                self._entries.popitem(last=False)

    def _identity(self, request: SharedRequest) -> str:
        access_key = request.access_key()
        with self._lock:
            arn = self._arns.get(access_key)
        if arn is None:
            arn = self._caller_arn(request, access_key)
            with self._lock:
                if len(self._arns) > 256:
                    self._arns.clear()
                self._arns[access_key] = arn
        return binding_identity(
            arn,
            role_arn=request.binding.role_arn,
            share_role_sessions=self.share_role_sessions,
        )

    def _caller_arn(self, request: SharedRequest, access_key: str) -> str:
        """The caller's ARN: from the access key's caller entry when the fleet key sealed
        one, else from STS once for the fleet (docs/security.md says what this trusts)."""
        sealer = self._sealer
        if not isinstance(sealer, FleetKey) or not access_key or not self._store.available():
            # KMS mode: a caller entry would be trusted across identities; each asks STS.
            return request.caller_arn()
        digest = sealer.caller_key(access_key)
        entry_key = f"{self.prefix}v1:c:{digest}"

        def read() -> str | None:
            blob = self._store.get(entry_key)
            if blob is None:
                return None
            try:
                return sealer.open_caller(access_key, blob)
            except EntryRejected as exc:
                self._warn_once(
                    entry_key,
                    "shared cache: the caller entry of this access key was rejected (%s); "
                    "asking STS",
                    exc,
                )
                return None

        def publish() -> str:
            arn = request.caller_arn()
            with contextlib.suppress(StoreUnavailable):
                self._store.write(entry_key, sealer.seal_caller(access_key, arn), _CALLER_TTL_MS)
            return arn

        try:
            return self._single_flight(
                f"{self.prefix}v1:cl:{digest}", read, publish, "caller identity", counted=False
            )
        except StoreUnavailable:
            return request.caller_arn()

    def _through_store(
        self,
        request: SharedRequest,
        binding: Binding,
        entry_key: str,
        fetch: Callable[[], Lease[Login]],
    ) -> Lease[Login]:
        return self._single_flight(
            entry_key.replace(":e:", ":l:", 1),
            lambda: self._read(request, binding, entry_key),
            lambda: self._fetch_and_publish(request, binding, entry_key, fetch),
            request.describe,
        )

    def _single_flight(
        self,
        lease_key: str,
        read: Callable[[], _T | None],
        make: Callable[[], _T],
        describe: str,
        counted: bool = True,
    ) -> _T:
        """``read()`` when it finds something, else ``make()`` under the lease: one worker
        of the fleet makes it while the others wait for it (at most ``wait_seconds``).
        ``counted``: the wait is a login's, reported in the tier's figures."""
        token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        deadline: float | None = None
        subscription: Subscription | None = None
        pause = 0.0
        try:
            while True:
                found = read()
                if found is not None:
                    return found
                if self._store.acquire(lease_key, token, int(self.lease_seconds * 1000)):
                    try:
                        # Another worker may have made it, published it and released the
                        # lease between the look above and this lease: look once more.
                        found = read()
                        if found is not None:
                            return found
                        return make()
                    finally:
                        self._release(lease_key, token)
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.wait_seconds
                    if counted:
                        self._figures.add("cache.waits", _SHARED)
                    logger.debug("shared cache: waiting for another worker's %s", describe)
                    if self._subscribe:
                        subscription = self._store.subscribe(lease_key)
                    if subscription is not None:
                        continue  # Look again: the holder may have published meanwhile.
                if now >= deadline:
                    if counted:
                        self._figures.add("cache.wait_timeouts", _SHARED)
                    logger.info(
                        "shared cache: no %s from the worker fetching it after %.1f s; "
                        "fetching it here",
                        describe,
                        self.wait_seconds,
                    )
                    return make()
                pause = _next_pause(pause, subscribed=subscription is not None)
                if subscription is not None:
                    subscription.wait(min(pause, deadline - now))
                else:
                    time.sleep(min(pause, deadline - now))
        finally:
            if subscription is not None:
                subscription.close()

    def _release(self, lease_key: str, token: str) -> None:
        # A lease that cannot be released expires on its own. The lease's channel wakes
        # the workers waiting for what its holder made (or failed to make: one of them
        # takes the lease at once).
        with contextlib.suppress(StoreUnavailable):
            self._store.delete_if(lease_key, token)
            self._store.publish(lease_key)

    def _fetch_and_publish(
        self,
        request: SharedRequest,
        binding: Binding,
        entry_key: str,
        fetch: Callable[[], Lease[Login]],
    ) -> Lease[Login]:
        lease = fetch()
        generation = secrets.token_hex(8)
        login = lease.value
        if lease.lifetime is not None:
            milliseconds = int(lease.lifetime * 1000)
        elif lease.refresh_after is not None and math.isfinite(lease.refresh_after):
            milliseconds = int(lease.refresh_after * 1000)
        else:
            milliseconds = 0
        blob: bytes | None = None
        if milliseconds > 0:
            # The absolute expiry, sealed: a store's fresh TTL cannot revive the entry.
            if login.expires_at is not None:
                not_after = login.expires_at.timestamp()
            else:
                not_after = request.clock().timestamp() + milliseconds / 1000
            payload = {
                "user": login.user,
                "password": login.password,
                "method": login.method,
                "version_id": login.version_id,
                "host": login.host,
                "port": login.port,
                "database": login.database,
                "span": lease.lifetime,
                "not_after": not_after,
                "generation": generation,
            }
            try:
                blob = self._sealer.seal(binding, json.dumps(payload).encode(), request.kms)
                self._store.write(entry_key, blob, milliseconds)
                self._track(entry_key, request.key)
                logger.debug("shared cache: published %s", request.describe)
            except StoreUnavailable:
                blob = None
            except Exception as exc:
                blob = None
                self._warn_once(
                    f"seal:{self._sealer.describe()}",
                    "shared cache: could not seal %s with the %s (%s); not shared",
                    request.describe,
                    self._sealer.describe(),
                    _refusal(exc),
                )
        return self._remember(lease, _Seen(entry_key, generation, blob))

    def _read(
        self, request: SharedRequest, binding: Binding, entry_key: str
    ) -> Lease[Login] | None:
        stored = self._store.read(entry_key)
        if stored is None:
            return None
        blob, milliseconds = stored
        try:
            payload = json.loads(self._sealer.open(binding, blob, request.kms))
            login, span, not_after, generation = self._login_of(payload, binding)
        except (EntryRejected, ValueError, KeyError, TypeError) as exc:
            self._warn_once(
                entry_key,
                "shared cache: the entry for %s was rejected (%s): tampered with, copied "
                "from another login, or sealed with another key; fetching a fresh one",
                request.describe,
                exc if isinstance(exc, EntryRejected) else "malformed",
            )
            return None
        sealed_left = not_after - request.clock().timestamp()
        if sealed_left <= 0:
            logger.debug("shared cache: the entry for %s is past its sealed expiry",
                         request.describe)
            return None
        left = min(milliseconds / 1000, sealed_left)
        with self._lock:
            refused = generation in self._rejected
            held = self._seen.get(request.holding) if request.holding is not None else None
        if refused or (held is not None and held.generation == generation):
            return None  # Not newer than what this worker has.
        if span is not None:
            if milliseconds / 1000 > span + 1 or left <= min(MANDATORY_MAX_SECONDS, span / 4):
                return None
            login = login.with_expiry(request.clock() + timedelta(seconds=left))
            lease: Lease[Login] = Lease(login, lifetime=left, span=span)
        else:
            if left <= _SECRET_MIN_LEFT:
                return None
            lease = Lease(login, refresh_after=left)
        logger.debug("shared cache: %s from the store", request.describe)
        self._figures.add("cache.hits", _SHARED)
        self._track(entry_key, request.key)
        return self._remember(lease, _Seen(entry_key, generation, blob))

    @staticmethod
    def _login_of(payload: Any, binding: Binding) -> tuple[Login, float | None, float, str]:
        if not isinstance(payload, dict) or payload.get("method") != binding.method:
            raise ValueError("not an entry of this binding")
        span = payload["span"]
        login = Login(
            user=str(payload["user"]),
            password=str(payload["password"]),
            method=str(payload["method"]),
            version_id=payload.get("version_id"),
            host=payload.get("host"),
            port=payload.get("port"),
            database=payload.get("database"),
        )
        span_seconds = None if span is None else float(span)
        return login, span_seconds, float(payload["not_after"]), str(payload["generation"])

    def _missed(self, fetch: Callable[[], Lease[Login]]) -> Callable[[], Lease[Login]]:
        """``fetch``, counted as a miss of this tier each time it runs."""

        def missed() -> Lease[Login]:
            self._figures.add("cache.misses", _SHARED)
            return fetch()

        return missed

    def _remember(self, lease: Lease[Login], seen: _Seen) -> Lease[Login]:
        with self._lock:
            self._seen[lease.value] = seen
        return lease

    def _warn_once(self, topic: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._reject_warned.get(topic, -math.inf)
            if now - last < _REJECT_WARNING_INTERVAL:
                return
            if len(self._reject_warned) > 1024:
                self._reject_warned.clear()
            self._reject_warned[topic] = now
        logger.warning(message, *args)


def _next_pause(pause: float, *, subscribed: bool) -> float:
    """How long a waiter waits before looking at the store again.

    Subscribed, a publish on the lease's channel wakes it: the pause only bounds how late
    it notices a holder that died (its lease lapses after ``lease_seconds``), 1 to 2 s.
    Polling (the server refused the subscription): a ceiling doubling from 50 ms up to
    1 s, each pause drawn from the upper half of its ceiling so waiters that started
    together do not poll together.
    """
    if subscribed:
        return random.uniform(1.0, 2.0)  # noqa: S311 - jitter, not a secret
    ceiling = min(1.0, max(0.05, 2 * pause))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


def shared_cache_from_environ(environ: Mapping[str, str]) -> RedisCache | None:
    """A :class:`RedisCache` from ``RSAUTH_SHARED_CACHE_URL`` and its key variables, if set."""
    if not environ.get(URL_ENV):
        return None
    return RedisCache(environ=environ)


def _refusal(exc: Exception) -> str:
    """What went wrong, in words safe for a log line: KMS's error code and the action it
    refused (an AccessDenied names a missing permission), else the exception's type."""
    response = getattr(exc, "response", None)
    operation = getattr(exc, "operation_name", None)
    if isinstance(response, dict) and operation:
        code = response.get("Error", {}).get("Code", "error")
        return f"{code} on kms:{operation}"
    return type(exc).__name__
