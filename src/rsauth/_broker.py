"""The Broker: picks a login method, caches logins and endpoints, opens connections.

One call goes: resolve and validate the options (no network) → find the AWS
identity and region → get the login from the refresh-ahead cache (fetching
through a source from ``_sources`` when due) → find the endpoint → open the
connection, retrying transient network failures with backoff, and on a
refused login dropping the credential and trying a fresh one (and a secret's
``AWSPENDING`` version) a bounded number of times.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

import boto3
import redshift_connector
from botocore.config import Config
from cachetools import LRUCache
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from rsauth._cache import Lease, RefreshCache
from rsauth._config import (
    PROCESS_ENVIRON,
    SETTING_NAMES,
    Options,
    check_host,
    given_settings,
    resolve,
    resolve_region,
)
from rsauth._credentials import Credentials
from rsauth._driver import (
    calling_module,
    check_driver_kwargs,
    is_login_refused,
    is_tls_failure,
    is_transient,
    server_error,
    with_tls,
)
from rsauth._endpoint import DEFAULT_PORT, Endpoints, NamespaceRoles, Workgroup, namespace_roles
from rsauth._errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    NotFoundError,
    RsauthError,
)
from rsauth._fleet import RedisCache, request_for, shared_cache_from_environ
from rsauth._fork import reset_in_child
from rsauth._sessions import SessionKey, Sessions
from rsauth._sources import AwsContext, Login
from rsauth._sources.iam import IamSource
from rsauth._sources.password import PasswordSource
from rsauth._sources.secret import SecretSource, admin_secret_arn
from rsauth._sources.superuser import SuperuserSource, verify_superuser

if TYPE_CHECKING:
    from redshift_connector.core import Connection

__all__ = ["Broker", "ConnectionOrigin", "CredentialKey", "connection_origin"]

logger = logging.getLogger("rsauth")

DEFAULT_DATABASE = "dev"

# Exponential backoff with jitter between attempts (tenacity; wait_exponential_jitter's
# signature changed across tenacity releases, these two do not).
_LOGIN_BACKOFF = wait_exponential(multiplier=0.2, max=2.0) + wait_random(0, 0.2)
_CONNECT_BACKOFF = wait_exponential(multiplier=0.2, max=2.0) + wait_random(0, 0.2)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class CredentialKey(NamedTuple):
    """What tells cached logins apart. Never holds a secret: ``identity`` is an access key id."""

    identity: str
    profile: str | None
    region: str
    workgroup: str | None
    custom_domain: str | None
    database: str | None
    method: str
    duration: int
    role_arn: str | None
    db_roles: tuple[str, ...]
    secret_id: str | None
    user: str | None


class EndpointKey(NamedTuple):
    """What tells cached workgroup lookups apart (the name last, for log lines)."""

    identity: str
    profile: str | None
    region: str
    role_arn: str | None
    db_roles: tuple[str, ...]
    custom_domain: str | None
    workgroup: str


def _describe(key: CredentialKey) -> str:
    where = (
        f"custom domain {key.custom_domain!r}"
        if key.custom_domain
        else f"workgroup {key.workgroup!r}"
        if key.workgroup
        else f"secret {key.secret_id!r}"
    )
    role = f" as {key.role_arn}" if key.role_arn else ""
    return f"{key.method} login for {where} in {key.region}{role}"


@dataclass(frozen=True)
class ConnectionOrigin:
    """Where a connection returned by :meth:`Broker.connect` came from."""

    broker: Broker
    workgroup: str | None
    custom_domain: str | None
    database: str
    user: str
    method: str
    # The AWS side the login was made with, to look up facts about the workgroup as the
    # same identity (rsauth.etl checks IAM roles with it).
    region: str | None = None
    profile: str | None = None
    role_arn: str | None = None


# Connections opened by any Broker, remembered without keeping them alive.
_ORIGINS: weakref.WeakKeyDictionary[Any, ConnectionOrigin] = weakref.WeakKeyDictionary()


def connection_origin(connection: object) -> ConnectionOrigin | None:
    """The broker, workgroup and login a connection was opened with, if rsauth opened it."""
    return _ORIGINS.get(connection)


@dataclass(frozen=True)
class _Aws:
    """The AWS side of one call: who, where, and the cache key of its login."""

    identity: str
    region: str
    session_key: SessionKey
    context: AwsContext
    key: CredentialKey
    endpoint_key: EndpointKey


@dataclass(frozen=True)
class _Call:
    """One resolved request; ``resolved_aws`` is ``None`` only for a password login to host=."""

    options: Options
    profile: str | None
    resolved_aws: _Aws | None = None

    @property
    def aws(self) -> _Aws:
        assert self.resolved_aws is not None, "this call needs no AWS identity"
        return self.resolved_aws


class _Refused(Exception):
    """Internal: the database refused a login; carries which one."""

    def __init__(self, login: Login) -> None:
        super().__init__(login.user)
        self.login = login


class Broker:
    """Hands out database logins and connections for Redshift Serverless.

    ``session`` is the base boto3 session (default: one from the environment);
    sessions for another ``profile`` or for ``role_arn``/``db_roles`` are derived
    and cached. ``region`` and ``profile`` are defaults for every call. ``clock``
    (returning an aware datetime), ``sleep`` and ``environ`` are injectable for
    tests. Safe to share between threads; a forked child starts empty.
    ``shared_cache`` (fleet mode: an :class:`rsauth.RedisCache`; default one from
    ``RSAUTH_SHARED_CACHE_URL`` when set) is asked before AWS for iam, superuser
    and secret logins, so a fleet fetches each login once.
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
        self._base_session = session
        self._botocore_config = botocore_config
        self._cache_size = cache_size
        self._endpoint_ttl = endpoint_ttl
        self._closed = False
        # Fleet mode: the shared tier between the in-process cache and AWS (rsauth._fleet).
        self._owns_shared = shared_cache is None
        self._shared = shared_cache if shared_cache is not None else (
            shared_cache_from_environ(self._env)
        )
        self._start()
        reset_in_child(self)

    def _start(self) -> None:
        # Guards the counters only.
        self._stats_lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._retries: Counter[str] = Counter()
        self._sessions = Sessions(
            self._base_session, config=self._botocore_config, on_call=self._count_call
        )
        self._logins: RefreshCache[CredentialKey, Login] = RefreshCache(
            "credentials",
            clock=self._clock,
            maxsize=self._cache_size,
            describe=_describe,
            jitter=self._shared.jitter if self._shared is not None else 0.0,
        )
        self._endpoints = Endpoints(clock=self._clock, ttl=self._endpoint_ttl)
        # The AWS side of recent calls (keys, contexts), rebuilt only for new arguments.
        self._memo_lock = threading.Lock()
        self._aws_memo: LRUCache[tuple[Any, ...], _Aws] = LRUCache(maxsize=256)
        # Logins whose superuser status was checked; weak, so they leave with the cache.
        self._verified: weakref.WeakSet[Login] = weakref.WeakSet()
        # The Credentials last assembled from each login (weak: they leave with the login).
        self._assembled: weakref.WeakKeyDictionary[
            Login, tuple[tuple[Any, ...], Credentials]
        ] = weakref.WeakKeyDictionary()
        self._verified_lock = threading.Lock()

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
        **driver_kwargs: Any,
    ) -> Connection:
        """A ``redshift_connector`` connection; other keywords go to ``redshift_connector.connect``.

        TLS is on with ``sslmode="verify-full"`` unless asked otherwise (then a WARNING).
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
    ) -> Credentials:
        """The current :class:`Credentials` (cached, refreshed ahead of expiry).

        With ``method="superuser"`` a login not yet verified is checked by
        connecting once (then closed); not a superuser → NotSuperuserError.
        """
        call = self._resolve_call(given_settings(locals()))
        if call.options.method == "superuser":
            login = self._login(call)
            if not self._is_verified(login):
                connection, credentials = self._connect(call, with_tls({}))
                connection.close()
                return credentials
            return self._assemble(call, login)
        return self._assemble(call, self._login(call))

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

        dropped = self._logins.invalidate(matches if match else None)
        if self._shared is not None:
            self._shared.invalidate(matches if match else None)
        if set(match) <= set(EndpointKey._fields):
            dropped += self._endpoints.invalidate(matches if match else None)
        if not match:
            with self._verified_lock:
                self._verified = weakref.WeakSet()
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
        namespace = self._workgroup(call).namespace
        client = self._sessions.redshift_serverless(call.aws.session_key)
        context = call.aws.context
        return self._endpoints.namespace_roles(
            self._endpoint_key(call),
            lambda: namespace_roles(client, namespace=namespace, context=context),
            fresh=fresh,
        )

    def stats(self) -> dict[str, int]:
        """A snapshot: AWS calls keyed ``service.Operation``, ``cache.hits``,
        ``cache.misses``, ``cache.refreshes``, ``login.retries``, ``connect.retries``."""
        cache = self._logins.stats()
        with self._stats_lock:
            snapshot = dict(sorted(self._calls.items()))
            snapshot["login.retries"] = self._retries["login"]
            snapshot["connect.retries"] = self._retries["connect"]
        snapshot["cache.hits"] = cache.hits
        snapshot["cache.misses"] = cache.misses
        snapshot["cache.refreshes"] = cache.refreshes
        return snapshot

    def close(self) -> None:
        """Release clients and cached logins. The Broker cannot be used afterwards."""
        self._closed = True
        self._logins.invalidate()
        self._endpoints.invalidate()
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

    # -- resolution (no network) -----------------------------------------

    @property
    def _env(self) -> Mapping[str, str]:
        return self._environ if self._environ is not None else PROCESS_ENVIRON

    def _prepare(self, **arguments: Any) -> _Call:
        return self._resolve_call(arguments)

    def _resolve_call(self, arguments: Mapping[str, Any]) -> _Call:
        if self._closed:
            raise ConfigurationError("this Broker is closed; create a new one")
        options = resolve(arguments, self._env)
        profile = options.profile or self._profile
        if options.method == "password" and options.host is not None:
            return _Call(options, profile)
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
                return _Call(options, profile, aws)
        aws = self._resolve_aws(options, profile, region, identity)
        if options.password is None:
            with self._memo_lock:
                self._aws_memo[memo_key] = aws
        return _Call(options, profile, aws)

    def _resolve_aws(
        self, options: Options, profile: str | None, region: str, identity: str
    ) -> _Aws:
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
        return _Aws(identity, region, session_key, context, key, endpoint_key)

    # -- logins -----------------------------------------------------------

    def _login(self, call: _Call) -> Login:
        options = call.options
        if options.method == "password":
            return PasswordSource(options.user or "", options.password or "").load().value
        key = call.aws.key
        if options.method == "secret":
            return self._logins.get(
                key, self._through_shared(call, lambda: self._secret_source(call).load())
            )
        try:
            return self._logins.get(
                key, self._through_shared(call, lambda: self._iam_source(call).load())
            )
        except ConfigurationError:
            if options.workgroup and not options.host:
                # AWS refused the request: a workgroup that is not AVAILABLE is a
                # ServiceError saying so. Look it up afresh (raises if so).
                self._endpoints.discard(self._endpoint_key(call))
                self._workgroup(call)
            raise
        except AccessDeniedError as exc:
            if not (options.method == "iam" and options.fallback and options.workgroup):
                raise
            logger.warning(
                "iam login to %s was denied; fallback=True: using the namespace's "
                "Redshift-managed admin secret instead",
                options.target,
            )
            try:
                return self._login(self._as_secret(call))
            except RsauthError as secret_exc:
                raise AccessDeniedError(
                    f"{exc}; the fallback to the managed admin secret failed too: {secret_exc}"
                ) from exc

    def _through_shared(
        self, call: _Call, fetch: Callable[[], Lease[Login]]
    ) -> Callable[[], Lease[Login]]:
        """``fetch`` behind the shared store in fleet mode: the store first, AWS once per fleet."""
        shared = self._shared
        if shared is None:
            return fetch
        aws = call.aws

        def through_shared() -> Lease[Login]:
            request = request_for(
                self._sessions,
                aws.session_key,
                aws.key,
                holding=self._logins.peek(aws.key),
                describe=_describe(aws.key),
                clock=self._clock,
            )
            return shared.fetch(request, fetch)

        return through_shared

    def _as_secret(self, call: _Call) -> _Call:
        options = replace(call.options, method="secret", fallback=False)
        aws = replace(call.aws, key=call.aws.key._replace(method="secret"))
        return replace(call, options=options, resolved_aws=aws)

    def _iam_source(self, call: _Call) -> IamSource:
        source = SuperuserSource if call.options.method == "superuser" else IamSource
        return source(
            self._sessions.redshift_serverless(call.aws.session_key),
            workgroup=call.options.workgroup,
            custom_domain=call.options.custom_domain,
            database=call.options.database or DEFAULT_DATABASE,
            duration=call.options.duration,
            context=call.aws.context,
            clock=self._clock,
        )

    def _secret_source(self, call: _Call) -> SecretSource:
        secret_id = call.options.secret_id or self._admin_secret_arn(call)
        return SecretSource(
            self._sessions.secretsmanager(call.aws.session_key),
            secret_id=secret_id,
            context=call.aws.context,
            refresh_after=self._secret_refresh,
        )

    def _admin_secret_arn(self, call: _Call) -> str:
        workgroup = self._workgroup(call)
        client = self._sessions.redshift_serverless(call.aws.session_key)
        context = call.aws.context
        return self._endpoints.admin_secret_arn(
            self._endpoint_key(call),
            lambda: admin_secret_arn(client, namespace=workgroup.namespace, context=context),
        )

    def _recover(self, call: _Call, refused: Login) -> Login:
        """A fresh login after ``refused`` was refused; for a secret, AWSPENDING if unchanged."""
        # A fallback login is cached under the method it actually used.
        self._logins.discard(call.aws.key._replace(method=refused.method), refused)
        if self._shared is not None:
            self._shared.reject(refused)
        fresh = self._login(call)
        if fresh.method == "secret" and _same_login(fresh, refused):
            pending = self._secret_source(self._as_secret(call)).load_pending()
            if pending is not None and not _same_login(pending, refused):
                logger.info(
                    "login to %s refused with the current secret; trying AWSPENDING "
                    "(rotation in progress)",
                    call.options.target,
                )
                return pending
        return fresh

    def _is_verified(self, login: Login) -> bool:
        with self._verified_lock:
            return login in self._verified

    # -- endpoints --------------------------------------------------------

    def _endpoint_key(self, call: _Call) -> EndpointKey:
        return call.aws.endpoint_key

    def _workgroup(self, call: _Call) -> Workgroup:
        if call.options.workgroup is None:
            raise ConfigurationError(
                "the namespace's managed admin secret is found through workgroup=; "
                "pass workgroup= or secret_id="
            )
        session_key = call.aws.session_key
        return self._endpoints.workgroup(
            self._endpoint_key(call),
            lambda: self._sessions.redshift_serverless(session_key),
            call.options.workgroup,
            call.aws.context,
        )

    def _address(self, call: _Call, login: Login) -> tuple[str, int]:
        options = call.options
        if options.host:
            return options.host, options.port or DEFAULT_PORT
        if options.custom_domain:
            if options.port:
                return options.custom_domain, options.port
            session_key = call.aws.session_key
            found = self._endpoints.custom_domain(
                self._endpoint_key(call)._replace(workgroup=""),
                lambda: self._sessions.redshift_serverless(session_key),
                options.custom_domain,
                call.aws.context,
            )
            return options.custom_domain, found.port
        if options.workgroup:
            workgroup = self._workgroup(call)
            return workgroup.address, options.port or workgroup.port
        if login.host:
            return check_host("the secret's host", login.host), login.port or DEFAULT_PORT
        raise ConfigurationError(
            "no endpoint to connect to: pass workgroup=, custom_domain= or host= "
            "(the secret names no host)"
        )

    def _assemble(self, call: _Call, login: Login) -> Credentials:
        host, port = self._address(call, login)
        database = call.options.database or login.database or DEFAULT_DATABASE
        where = (host, port, database, call.options.workgroup)
        # The same login at the same place gives the same frozen value: hand that out again.
        with self._verified_lock:
            seen = self._assembled.get(login)
        if seen is not None and seen[0] == where:
            return seen[1]
        credentials = Credentials(
            user=login.user,
            password=login.password,
            host=host,
            port=port,
            database=database,
            workgroup=call.options.workgroup,
            method=login.method,
            expires_at=login.expires_at,
            _clock=self._clock,
        )
        with self._verified_lock:
            self._assembled[login] = (where, credentials)
        return credentials

    # -- connecting -------------------------------------------------------

    def _connect(self, call: _Call, kwargs: Mapping[str, Any]) -> tuple[Connection, Credentials]:
        attempts = 1 if call.options.method == "password" else self._login_attempts
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=_LOGIN_BACKOFF,
            retry=retry_if_exception_type(_Refused),
            sleep=self._sleep,
            before_sleep=functools.partial(self._count_retry, "login"),
            reraise=True,
        )
        refused: Login | None = None
        try:
            for attempt in retrying:
                with attempt:
                    login = self._login(call) if refused is None else self._recover(call, refused)
                    credentials = self._assemble(call, login)
                    try:
                        connection = self._open(call, credentials, kwargs)
                    except _Refused:
                        refused = login
                        raise
        except _Refused as exc:
            cause = exc.__cause__
            fields = server_error(cause) if cause is not None else None
            detail = fields.get("M", "") if fields else ""
            raise AuthenticationError(
                f"the database at {call.options.target} refused the {call.options.method} "
                f"login of {exc.login.user!r} after {attempts} attempt(s), each with a freshly "
                f"fetched credential: {detail or 'login refused'}"
            ) from cause
        if refused is not None and login.method == "secret":
            # A pending version that worked is the one to use until the next refresh.
            key = call.aws.key._replace(method=login.method)
            self._logins.put(key, Lease(login, refresh_after=self._secret_refresh))
        if call.options.method == "superuser" and not self._is_verified(login):
            verify_superuser(connection, user=login.user, target=call.options.target)
            with self._verified_lock:
                self._verified.add(login)
        _ORIGINS[connection] = ConnectionOrigin(
            broker=self,
            workgroup=call.options.workgroup,
            custom_domain=call.options.custom_domain,
            database=credentials.database,
            user=login.user,
            method=login.method,
            region=call.resolved_aws.region if call.resolved_aws is not None else None,
            profile=call.profile,
            role_arn=call.options.role_arn,
        )
        return connection, credentials

    def _open(self, call: _Call, credentials: Credentials, kwargs: Mapping[str, Any]) -> Connection:
        def attempt() -> Connection:
            return redshift_connector.connect(
                user=credentials.user,
                password=credentials.password,
                host=credentials.host,
                port=credentials.port,
                database=credentials.database,
                **kwargs,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self._connect_attempts),
            wait=_CONNECT_BACKOFF,
            retry=retry_if_exception(is_transient),
            sleep=self._sleep,
            before_sleep=functools.partial(self._count_retry, "connect"),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Exception as exc:
            raise self._connect_error(call, credentials, exc) from exc

    def _connect_error(self, call: _Call, credentials: Credentials, exc: Exception) -> Exception:
        address = f"{credentials.host}:{credentials.port}"
        if is_login_refused(exc):
            return _Refused(_login_of(credentials))
        fields = server_error(exc)
        if fields is not None:
            code, message = fields.get("C", ""), fields.get("M", "")
            if code == "3D000":
                return NotFoundError(
                    f"database {credentials.database!r} does not exist on {call.options.target}: "
                    f"{message}. Pass database= (default {DEFAULT_DATABASE!r})"
                )
            return ConnectError(f"the database at {address} answered {code}: {message}")
        if is_tls_failure(exc):
            return ConnectError(
                f"TLS to {address} failed ({type(exc).__name__}): the server certificate was "
                "not accepted; check SSL_CERT_FILE (the CA bundle) and the host name"
            )
        if is_transient(exc):
            if call.resolved_aws is not None and (
                call.options.workgroup or call.options.custom_domain
            ):
                # The endpoint may have moved: look it up again on the next call.
                self._endpoints.discard(self._endpoint_key(call))
                if call.options.custom_domain:
                    self._endpoints.discard(self._endpoint_key(call)._replace(workgroup=""))
            return ConnectError(
                f"could not reach {call.options.target} at {address} after "
                f"{self._connect_attempts} attempt(s) ({type(exc).__name__}); check the "
                "network path (VPC, security group, publicly accessible) and try again"
            )
        return ConnectError(
            f"connecting to {call.options.target} at {address} failed ({type(exc).__name__})"
        )

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
        with self._stats_lock:
            self._calls[operation] += 1

    def _count_retry(self, kind: str, state: RetryCallState) -> None:
        with self._stats_lock:
            self._retries[kind] += 1
        logger.debug("%s attempt %d failed; retrying", kind, state.attempt_number)

    def _after_fork(self) -> None:
        # The parent's locks may be held by threads that do not exist here.
        self._start()


def _same_login(a: Login, b: Login) -> bool:
    if a.version_id is not None and b.version_id is not None:
        return a.version_id == b.version_id
    return a.user == b.user and hmac.compare_digest(a.password, b.password)


def _login_of(credentials: Credentials) -> Login:
    return Login(user=credentials.user, password=credentials.password, method=credentials.method)
