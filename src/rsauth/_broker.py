"""The Broker: the public facade composing the login side and the connection side.

One call goes: resolve and validate the options (no network) → find the AWS
identity and region → get the login (``_logins``: the source of the method,
the refresh-ahead cache, the fleet tier) → find the endpoint and open the
connection (``_connections``), and on a refused login drop the credential
and try a fresh one (``_logins``) a bounded number of times.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from cachetools import LRUCache

from rsauth._calls import DEFAULT_DATABASE, AwsSide, Call, CredentialKey, EndpointKey
from rsauth._config import (
    PROCESS_ENVIRON,
    SETTING_NAMES,
    SETTINGS_BY_NAME,
    Options,
    environ_seen,
    given_settings,
    resolve,
    resolve_region,
)
from rsauth._connections import Connections, Lookup
from rsauth._credentials import Credentials
from rsauth._driver import calling_module, check_driver_kwargs, with_tls
from rsauth._errors import ConfigurationError
from rsauth._fork import reset_in_child
from rsauth._logins import Logins
from rsauth._metrics import Figures, attributes
from rsauth._sessions import SessionKey, Sessions
from rsauth._sources import AwsContext, Login

if TYPE_CHECKING:
    from redshift_connector.core import Connection

    from rsauth._async import Flights
    from rsauth._fleet import RedisCache
    from rsauth._roles import NamespaceRoles

__all__ = [
    "DEFAULT_DATABASE",
    "Broker",
    "ConnectionOrigin",
    "CredentialKey",
    "connection_origin",
]

logger = logging.getLogger("rsauth")

C = TypeVar("C")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ConnectionOrigin:
    """Where a connection returned by :meth:`Broker.connect` came from; never changed once
    made. (A plain class: a frozen dataclass costs about a millisecond to define at import.)

    ``region``, ``profile`` and ``role_arn``: the AWS side the login was made with, to look
    up facts about the workgroup as the same identity (rsauth.etl checks IAM roles with it).
    """

    __slots__ = (
        "broker", "custom_domain", "database", "method", "profile", "region", "role_arn",
        "user", "workgroup",
    )

    def __init__(
        self,
        *,
        broker: Broker,
        workgroup: str | None,
        custom_domain: str | None,
        database: str,
        user: str,
        method: str,
        region: str | None = None,
        profile: str | None = None,
        role_arn: str | None = None,
    ) -> None:
        self.broker = broker
        self.workgroup = workgroup
        self.custom_domain = custom_domain
        self.database = database
        self.user = user
        self.method = method
        self.region = region
        self.profile = profile
        self.role_arn = role_arn


# Connections opened by any Broker, remembered without keeping them alive.
_ORIGINS: weakref.WeakKeyDictionary[Any, ConnectionOrigin] = weakref.WeakKeyDictionary()


def _flight_key(values: tuple[Any, ...]) -> Hashable | None:
    """Which calls may share one flight: those given the same settings (in the order of
    ``credentials_async``'s signature). ``None`` (not shared) for an unhashable value."""
    try:
        hash(values)
    except TypeError:
        values = tuple(tuple(value) if isinstance(value, list) else value for value in values)
        try:
            hash(values)
        except TypeError:
            return None
    return values


# Distinct credentials() calls remembered; more is a service asking for many logins, which
# the caches below serve anyway.
_SEEN_MAX = 256


class _Seen:
    """A credentials() answer and what it rests on (see :meth:`Broker._marks`); never
    changed once made. (A plain class: a dataclass costs more to define at import.)"""

    __slots__ = ("credentials", "fresh_until", "marks")

    def __init__(
        self, marks: tuple[tuple[Any, ...], int, int], fresh_until: float, credentials: Credentials
    ) -> None:
        self.marks = marks
        self.fresh_until = fresh_until
        self.credentials = credentials


class _NoLookup:
    """No endpoint lookup running beside the login: nothing to wait for."""

    def wait(self) -> None:
        pass


_NO_LOOKUP = _NoLookup()

# RSAUTH_SHARED_CACHE_URL (rsauth._fleet's URL_ENV): only then is fleet mode loaded.
_SHARED_CACHE_URL_ENV = "RSAUTH_SHARED_CACHE_URL"


def _shared_cache_from_environ(environ: Mapping[str, str]) -> RedisCache | None:
    if not environ.get(_SHARED_CACHE_URL_ENV):
        return None
    from rsauth._fleet import shared_cache_from_environ

    return shared_cache_from_environ(environ)


def connection_origin(connection: object) -> ConnectionOrigin | None:
    """The broker, workgroup and login a connection was opened with, if rsauth opened it."""
    return _ORIGINS.get(connection)


class Broker:
    """Hands out database logins and connections for Redshift Serverless.

    ``session`` is the base boto3 session (default: one from the environment);
    sessions for another ``profile`` or for ``role_arn``/``db_roles`` are derived
    and cached. ``region`` and ``profile`` are defaults for every call. ``clock``
    (returning an aware datetime), ``sleep`` and ``environ`` are injectable for
    tests. Safe to share between threads; a forked child starts empty.
    ``shared_cache`` (fleet mode: an :class:`rsauth.RedisCache`; default one from
    ``RSAUTH_SHARED_CACHE_URL`` when set) is asked before AWS for iam, superuser
    and secret logins, so a fleet fetches each login once. ``resume_timeout``
    (default ``RSAUTH_RESUME_TIMEOUT``, else 120 s) bounds how long a connect that
    reached a sleeping workgroup waits while it resumes; ``connect(resume_timeout=)``
    overrides it per call.
    """

    def __init__(
        self,
        session: boto3.Session | None = None,
        *,
        region: str | None = None,
        profile: str | None = None,
        clock: Callable[[], datetime] | None = None,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] | None = None,
        botocore_config: Config | None = None,
        cache_size: int = 1024,
        endpoint_ttl: float = 3600.0,
        secret_refresh: float = 300.0,
        login_attempts: int = 3,
        connect_attempts: int = 3,
        shared_cache: RedisCache | None = None,
        resume_timeout: float | None = None,
    ) -> None:
        if login_attempts < 1 or connect_attempts < 1:
            raise ConfigurationError("login_attempts and connect_attempts must be at least 1")
        self._region = region
        self._profile = profile
        self._clock = clock if clock is not None else _utcnow
        self._environ = environ
        self._sleep = sleep if sleep is not None else time.sleep
        self._secret_refresh = secret_refresh
        self._login_attempts = login_attempts
        self._connect_attempts = connect_attempts
        # Checked now (a bad value fails here, not at the first connect); calls may override.
        self._resume_timeout = (
            None if resume_timeout is None
            else SETTINGS_BY_NAME["resume_timeout"].parse("resume_timeout", resume_timeout)
        )
        self._base_session = session
        self._botocore_config = botocore_config
        self._cache_size = cache_size
        self._endpoint_ttl = endpoint_ttl
        self._closed = False
        # Fleet mode: the shared tier between the in-process cache and AWS (rsauth._fleet).
        self._owns_shared = shared_cache is None
        self._shared = shared_cache if shared_cache is not None else (
            _shared_cache_from_environ(self._env)
        )
        self._start()
        reset_in_child(self)

    def _start(self) -> None:
        # This Broker's figures: stats() and the OpenTelemetry instruments read them.
        self._figures = Figures()
        self._sessions = Sessions(
            self._base_session,
            config=self._botocore_config,
            on_call=self._count_call,
            on_error=self._count_error,
        )
        self._connections = Connections(
            self._sessions,
            clock=self._clock,
            sleep=self._sleep,
            endpoint_ttl=self._endpoint_ttl,
            connect_attempts=self._connect_attempts,
            on_retry=functools.partial(self._count_retry, "connect"),
        )
        self._logins = Logins(
            self._sessions,
            self._connections,
            clock=self._clock,
            sleep=self._sleep,
            cache_size=self._cache_size,
            secret_refresh=self._secret_refresh,
            login_attempts=self._login_attempts,
            shared=self._shared,
            on_retry=functools.partial(self._count_retry, "login"),
            figures=self._figures,
        )
        # Worker threads for the async API (made on its first use: asyncio is loaded then).
        self._flights_made: Flights | None = None
        # Answers of recent credentials() calls, by their arguments (one dict: its reads
        # and writes are atomic), each valid while what it rests on is unchanged.
        self._seen: dict[tuple[Any, ...], _Seen] = {}
        # The AWS side of recent calls (keys, contexts), rebuilt only for new arguments.
        self._memo_lock = threading.Lock()
        self._aws_memo: LRUCache[tuple[Any, ...], AwsSide] = LRUCache(maxsize=256)

    # -- public API -------------------------------------------------------

    def connect(
        self,
        *,
        workgroup: str | None = None,
        custom_domain: str | None = None,
        database: str | None = None,
        method: str | None = None,
        duration: int | None = None,
        secret_id: str | None = None,
        role_arn: str | None = None,
        db_roles: Sequence[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str | None = None,
        profile: str | None = None,
        fallback: bool | None = None,
        resume_timeout: float | None = None,
        **driver_kwargs: Any,
    ) -> Connection:
        """A ``redshift_connector`` connection; other keywords go to ``redshift_connector.connect``.

        TLS is on with ``sslmode="verify-full"`` unless asked otherwise (then a WARNING).
        ``resume_timeout`` is rsauth's: how long to wait for the answer of a workgroup
        that resumes; the driver's ``timeout`` still bounds reaching it and each read after.
        """
        kwargs = with_tls(check_driver_kwargs(driver_kwargs, SETTING_NAMES))
        if not kwargs.get("application_name"):
            kwargs["application_name"] = calling_module()
        call = self._resolve_call(given_settings(locals()))
        connection, _ = self._connect(call, kwargs)
        return connection

    def credentials(
        self,
        *,
        workgroup: str | None = None,
        custom_domain: str | None = None,
        database: str | None = None,
        method: str | None = None,
        duration: int | None = None,
        secret_id: str | None = None,
        role_arn: str | None = None,
        db_roles: Sequence[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str | None = None,
        profile: str | None = None,
        fallback: bool | None = None,
        resume_timeout: float | None = None,
    ) -> Credentials:
        """The current :class:`Credentials` (cached, refreshed ahead of expiry).

        With ``method="superuser"`` a login not yet verified is checked by
        connecting once (then closed); not a superuser → NotSuperuserError.
        """
        repeat: tuple[Any, ...] | None = None
        if password is None:  # never a password in a key
            repeat = (
                workgroup, custom_domain, database, method, duration, secret_id, role_arn,
                db_roles, user, host, port, region, profile, fallback, resume_timeout,
            )
            try:
                seen = self._seen.get(repeat)
            except TypeError:  # an unhashable argument (db_roles as a list)
                seen, repeat = None, None
            if seen is not None and self._still_holds(seen):
                self._logins.count_hit()
                return seen.credentials
        before = self._marks()
        call = self._resolve_call(given_settings(locals()))
        credentials = self._credentials(call)
        if repeat is not None:
            self._remember(repeat, before, call, credentials)
        return credentials

    def _credentials(self, call: Call) -> Credentials:
        with self._endpoint_ahead(call) as endpoint:
            login = self._logins.login(call)
            if call.options.method == "superuser" and not self._logins.is_verified(login):
                endpoint.wait()
                connection, credentials = self._connect(call, with_tls({}))
                connection.close()
                return credentials
            endpoint.wait()
            return self._connections.credentials(call, login)

    async def connect_async(
        self,
        *,
        workgroup: str | None = None,
        custom_domain: str | None = None,
        database: str | None = None,
        method: str | None = None,
        duration: int | None = None,
        secret_id: str | None = None,
        role_arn: str | None = None,
        db_roles: Sequence[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str | None = None,
        profile: str | None = None,
        fallback: bool | None = None,
        resume_timeout: float | None = None,
        **driver_kwargs: Any,
    ) -> Connection:
        """:meth:`connect`, the login and the connect made in a worker thread.

        The connection is ``redshift_connector``'s: its queries block the loop
        (the driver has no async API); async code that queries should use
        :mod:`rsauth.psycopg`.
        """
        if not driver_kwargs.get("application_name"):
            # Named here: in the worker thread the caller is no longer on the stack.
            driver_kwargs["application_name"] = calling_module()
        settings = given_settings(locals())
        return await self._flights.run(
            functools.partial(self.connect, **settings, **driver_kwargs)
        )

    async def credentials_async(
        self,
        *,
        workgroup: str | None = None,
        custom_domain: str | None = None,
        database: str | None = None,
        method: str | None = None,
        duration: int | None = None,
        secret_id: str | None = None,
        role_arn: str | None = None,
        db_roles: Sequence[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str | None = None,
        profile: str | None = None,
        fallback: bool | None = None,
        resume_timeout: float | None = None,
    ) -> Credentials:
        """:meth:`credentials` without blocking the event loop: AWS is asked from a worker
        thread, once for all tasks and threads asking the same at the same time.
        Cancelling the awaiting task leaves the login being fetched to the others."""
        # This runs on the loop for every task of a burst: the key is the arguments as they
        # come (a password never goes into a key: not shared), the settings are read in the
        # worker thread, once per flight.
        values: tuple[Any, ...] = (
            workgroup, custom_domain, database, method, duration, secret_id, role_arn,
            db_roles, user, password, host, port, region, profile, fallback, resume_timeout,
        )
        return await self._flights.join(
            None if password is not None else _flight_key(values),
            lambda: self.credentials(**dict(zip(_async_settings(), values, strict=True))),
        )

    def invalidate(self, **match: Any) -> int:
        """Drop cached logins (and workgroup lookups) whose fields equal ``match``; no
        arguments: everything. Fields: those of :class:`CredentialKey` but ``identity``.
        In fleet mode the shared store's entries of those logins are deleted too, so no
        worker takes them from the store again. Returns how many in-process entries were
        dropped."""
        fields = set(CredentialKey._fields) - {"identity"}
        unknown = set(match) - fields
        if unknown:
            raise ConfigurationError(
                f"invalidate(): unknown field(s) {', '.join(sorted(unknown))}; "
                f"accepted: {', '.join(sorted(fields))}"
            )
        if "db_roles" in match:
            match["db_roles"] = tuple(match["db_roles"])

        def matches(key: object) -> bool:
            return all(getattr(key, name) == value for name, value in match.items())

        predicate = matches if match else None
        dropped = self._logins.invalidate(predicate)
        if self._shared is not None:
            self._shared.invalidate(predicate)
        if set(match) <= set(EndpointKey._fields):
            dropped += self._connections.invalidate(predicate)
        logger.debug("invalidated %d cache entries", dropped)
        return dropped

    def namespace_roles(
        self,
        *,
        workgroup: str,
        region: str | None = None,
        profile: str | None = None,
        role_arn: str | None = None,
        fresh: bool = False,
    ) -> NamespaceRoles:
        """The IAM roles associated with ``workgroup``'s namespace and its default role
        (``GetWorkgroup`` → ``GetNamespace`` as that identity), cached like the endpoint;
        ``fresh=True`` asks AWS again."""
        call = self._prepare(
            workgroup=workgroup, region=region, profile=profile, role_arn=role_arn, method="iam"
        )
        return self._connections.namespace_roles(call, fresh=fresh)

    def stats(self) -> dict[str, int]:
        """A snapshot of this Broker's figures as plain numbers, the same the
        OpenTelemetry instruments report: AWS calls keyed ``service.Operation``,
        ``cache.hits``, ``cache.misses``, ``cache.refreshes``, ``cache.logins``,
        ``login.fetches``, ``login.recoveries``, ``login.retries``, ``connect.retries``,
        ``connect.count``, ``connect.login_us``, ``connect.driver_us``, ``aws.errors``
        (also by code), and the shared tier's ``cache.shared.*`` (its RedisCache's)."""
        snapshot = self._figures.stats()
        if self._shared is not None:
            snapshot.update(self._shared.stats())
        return snapshot

    def close(self) -> None:
        """Release clients and cached logins. The Broker cannot be used afterwards."""
        self._closed = True
        self._seen.clear()
        with self._memo_lock:
            flights = self._flights_made
        if flights is not None:
            flights.close()
        self._logins.invalidate()
        self._connections.invalidate()
        self._sessions.close()
        if self._shared is not None and self._owns_shared:
            self._shared.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<rsauth.Broker region={self._region!r} profile={self._profile!r} {state}>"

    @property
    def _flights(self) -> Flights:
        """Worker threads for the async API, one flight per login asked for."""
        with self._memo_lock:
            if self._flights_made is None:
                if self._closed:  # a closed Broker starts no worker pool
                    raise ConfigurationError("this Broker is closed; create a new one")
                from rsauth._async import Flights  # the async API's: asyncio loads with it

                self._flights_made = Flights()
            return self._flights_made

    # -- resolution (no network) -----------------------------------------

    @property
    def _env(self) -> Mapping[str, str]:
        return self._environ if self._environ is not None else PROCESS_ENVIRON

    def _prepare(self, **arguments: Any) -> Call:
        return self._resolve_call(arguments)

    def _resolve_call(self, arguments: Mapping[str, Any]) -> Call:
        if self._closed:
            raise ConfigurationError("this Broker is closed; create a new one")
        if self._resume_timeout is not None and arguments.get("resume_timeout") is None:
            arguments = {**arguments, "resume_timeout": self._resume_timeout}
        options = resolve(arguments, self._env)
        profile = options.profile or self._profile
        if options.method == "password" and options.host is not None:
            return Call(options, profile)
        session = self._sessions.profile_session(profile)
        region = resolve_region(
            options.region, self._region, self._env, lambda: session.region_name
        )
        identity = self._sessions.identity(profile)
        memo_key = (options, profile, region, identity)
        if options.password is None:  # never a password in a key
            with self._memo_lock:
                aws = self._aws_memo.get(memo_key)
            if aws is not None:
                return Call(options, profile, aws)
        aws = self._resolve_aws(options, profile, region, identity)
        if options.password is None:
            with self._memo_lock:
                self._aws_memo[memo_key] = aws
        return Call(options, profile, aws)

    def _resolve_aws(
        self, options: Options, profile: str | None, region: str, identity: str
    ) -> AwsSide:
        session_key = SessionKey(profile, region, options.role_arn, options.db_roles)
        context = AwsContext(region, identity=functools.partial(self._who, session_key, identity))
        key = CredentialKey(
            identity=identity,
            profile=profile,
            region=region,
            workgroup=options.workgroup,
            custom_domain=options.custom_domain,
            database=options.database,
            method=options.method,
            duration=options.duration,
            role_arn=options.role_arn,
            db_roles=options.db_roles,
            secret_id=options.secret_id,
            user=options.user,
        )
        endpoint_key = EndpointKey(
            identity,
            profile,
            region,
            options.role_arn,
            options.db_roles,
            options.custom_domain,
            options.workgroup or "",
        )
        return AwsSide(identity, region, session_key, context, key, endpoint_key)

    # -- connecting -------------------------------------------------------

    def _connect(self, call: Call, kwargs: Mapping[str, Any]) -> tuple[Connection, Credentials]:
        connection, credentials = self._connect_with(
            call, lambda credentials: self._connections.driver_connect(call, credentials, kwargs)
        )
        _ORIGINS[connection] = ConnectionOrigin(
            broker=self,
            workgroup=call.options.workgroup,
            custom_domain=call.options.custom_domain,
            database=credentials.database,
            user=credentials.user,
            method=credentials.method,
            region=call.resolved_aws.region if call.resolved_aws is not None else None,
            profile=call.profile,
            role_arn=call.options.role_arn,
        )
        return connection, credentials

    def _connect_with(
        self,
        call: Call,
        connect: Callable[[Credentials], C],
        *,
        verify: Callable[[C], Any] = lambda connection: connection,
    ) -> tuple[C, Credentials]:
        """A connection of another driver: ``connect(credentials)`` reports failures as
        :meth:`Connections.open_with` reads them; a refused login is recovered and a
        superuser checked as in :meth:`connect` (on ``verify(connection)``, a DB-API view)."""

        with self._endpoint_ahead(call) as endpoint:

            started, driver = time.perf_counter(), 0.0

            def use(login: Login) -> tuple[C, Credentials]:
                nonlocal driver
                endpoint.wait()
                credentials = self._connections.credentials(call, login)
                began = time.perf_counter()
                try:
                    opened = self._connections.open_with(
                        call, credentials, functools.partial(connect, credentials)
                    )
                finally:
                    driver += time.perf_counter() - began
                return opened, credentials

            (connection, credentials), login = self._logins.attempt(call, use)
        self._figures.connected(
            attributes(
                method=credentials.method,
                workgroup=call.options.workgroup,
                region=call.resolved_aws.region if call.resolved_aws is not None else None,
            ),
            time.perf_counter() - started - driver,
            driver,
        )
        if call.options.method == "superuser" and not self._logins.is_verified(login):
            self._connections.verify_superuser(verify(connection), call, login)
            self._logins.mark_verified(login)
        return connection, credentials

    # -- repeated calls ---------------------------------------------------

    def _marks(self) -> tuple[tuple[Any, ...], int, int]:
        """What a call's answer rests on besides its arguments: the environment's settings
        and the generations of the login and endpoint caches."""
        return (
            environ_seen(self._env), self._logins.generation, self._connections.generation
        )

    def _still_holds(self, seen: _Seen) -> bool:
        return (
            not self._closed
            and self._clock().timestamp() < seen.fresh_until
            and seen.marks == self._marks()
        )

    def _remember(
        self,
        repeat: tuple[Any, ...],
        before: tuple[tuple[Any, ...], int, int],
        call: Call,
        credentials: Credentials,
    ) -> None:
        """Keep ``credentials`` for a repeat of the same call while the login and the
        endpoint it came from stay cached and fresh and nothing it read changes."""
        if call.resolved_aws is None:
            return
        login_until = self._logins.fresh_until(call)
        endpoint_until = self._connections.fresh_until(call)
        if login_until is None or endpoint_until is None or self._marks() != before:
            return  # a fallback login, or a cache changed meanwhile: not a plain repeat
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()
        self._seen[repeat] = _Seen(before, min(login_until, endpoint_until), credentials)

    @contextlib.contextmanager
    def _endpoint_ahead(self, call: Call) -> Iterator[Lookup | _NoLookup]:
        """On a cold cache, the endpoint looked up beside the login (``GetWorkgroup`` while
        ``GetCredentials`` runs, in a thread of its own); ``wait()`` before using it. When
        the block is left, the lookup is over."""
        pending = self._connections.pending_lookup(call)
        if (
            pending is None
            or not self._logins.will_fetch(call)
            or not self._sessions.credentials_at_hand(call.aws.session_key)
        ):
            # Nothing to overlap: the endpoint is cached, or the login is at hand (or is
            # found through this very lookup, as a managed admin secret is); or the role
            # is still to be assumed, which both calls would wait for (and each ask STS
            # again if it refused).
            yield _NO_LOOKUP
            return
        lookup = Lookup(pending)
        try:
            yield lookup
        finally:
            lookup.join()

    # -- bookkeeping ------------------------------------------------------

    def _who(self, session_key: SessionKey, identity: str) -> str:
        """Names the refused identity for an AccessDeniedError (asks STS once, on that path)."""
        try:
            arn = self._sessions.sts(session_key).get_caller_identity()["Arn"]
        except Exception:
            arn = None
        if arn:
            return f"IAM identity {arn}"
        if session_key.role_arn:
            return f"role {session_key.role_arn}"
        return f"the IAM identity of access key {identity}"

    def _count_call(self, operation: str) -> None:
        service, _, name = operation.partition(".")
        self._figures.add("aws.calls", attributes(service=service, operation=name))

    def _count_error(self, operation: str, code: str, region: str) -> None:
        service, _, name = operation.partition(".")
        self._figures.add(
            "aws.errors", attributes(service=service, operation=name, code=code, region=region)
        )

    def _count_retry(self, kind: str, attempt: int) -> None:
        self._figures.add(f"{kind}.retries")
        logger.debug("%s attempt %d failed; retrying", kind, attempt)

    def _after_fork(self) -> None:
        # The parent's locks may be held by threads that do not exist here.
        self._start()


@functools.cache
def _async_settings() -> tuple[str, ...]:
    """credentials_async's settings, in the order of its flight keys (worked out on the
    async API's first use: inspect.signature costs a tenth of a millisecond at import)."""
    return tuple(inspect.signature(Broker.credentials_async).parameters)[1:]
