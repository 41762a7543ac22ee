"""The login side: choosing the source, the refresh-ahead cache, recovering refused logins.

A login comes from the source of the call's method (``_sources``), through
the in-process :class:`RefreshCache` (single flight, refresh ahead) and, in
fleet mode, the shared tier before AWS. When the database refuses a login,
:meth:`Logins.attempt` drops it, fetches a fresh one (for a secret also its
``AWSPENDING`` version) and tries again a bounded number of times. A
superuser login's verdict is kept with the login, so it is checked once.
"""

from __future__ import annotations

import hmac
import logging
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from rsauth._cache import Lease, RefreshCache
from rsauth._calls import DEFAULT_DATABASE, AwsSide, Call, CredentialKey, describe
from rsauth._connections import Connections, Refused, refused_error
from rsauth._errors import AccessDeniedError, ConfigurationError, RsauthError
from rsauth._metrics import Attributes, Figures, attributes
from rsauth._sessions import Sessions
from rsauth._sources import Login
from rsauth._sources.iam import IamSource

# The other methods' sources (password, secret, superuser) are imported where they are
# used: a process that makes only iam logins never loads them.
if TYPE_CHECKING:
    from rsauth._fleet import RedisCache
    from rsauth._sources.secret import SecretSource

__all__ = ["Logins"]

logger = logging.getLogger("rsauth")

T = TypeVar("T")


class Logins:
    """Cached logins for one Broker; safe to share between threads."""

    def __init__(
        self,
        sessions: Sessions,
        connections: Connections,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        cache_size: int,
        secret_refresh: float,
        login_attempts: int,
        shared: RedisCache | None,
        on_retry: Callable[[int], None],
        figures: Figures,
    ) -> None:
        self._sessions = sessions
        self._figures = figures
        self._connections = connections
        self._clock = clock
        self._sleep = sleep
        self._secret_refresh = secret_refresh
        self._login_attempts = login_attempts
        self._shared = shared
        self._on_retry = on_retry
        self._cache: RefreshCache[CredentialKey, Login] = RefreshCache(
            "credentials",
            clock=clock,
            maxsize=cache_size,
            describe=describe,
            jitter=shared.jitter if shared is not None else 0.0,
        )
        figures.watch(self._cache, login_attributes)
        # Guards the set below.
        self._verified_lock = threading.Lock()
        # Logins whose superuser status was checked; weak, so they leave with the cache.
        self._verified: weakref.WeakSet[Login] = weakref.WeakSet()

    # -- fetching ---------------------------------------------------------

    def login(self, call: Call) -> Login:
        """The call's login: cached, refreshed ahead of expiry, fetched when due."""
        options = call.options
        if options.method == "password":
            from rsauth._sources.password import PasswordSource

            return PasswordSource(options.user or "", options.password or "").load().value
        key = call.aws.key
        if options.method == "secret":
            return self._cache.get(key, self._through_shared(call, lambda: self._fetched(
                key, "GetSecretValue", self._secret_source(call).load()
            )))
        try:
            return self._cache.get(key, self._through_shared(call, lambda: self._fetched(
                key, "GetCredentials", self._iam_source(call).load()
            )))
        except ConfigurationError:
            if options.workgroup and not options.host:
                # AWS refused the request: a workgroup that is not AVAILABLE is a
                # ServiceError saying so. Look it up afresh (raises if so).
                self._connections.discard_endpoint(call)
                self._connections.workgroup(call)
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
                return self.login(_as_secret(call))
            except RsauthError as secret_exc:
                raise AccessDeniedError(
                    f"{exc}; the fallback to the managed admin secret failed too: {secret_exc}"
                ) from exc

    @property
    def generation(self) -> int:
        """Moves whenever a login is stored or dropped."""
        return self._cache.generation

    def fresh_until(self, call: Call) -> float | None:
        """Until when the call's cached login is a hit without a refresh (None: not cached)."""
        return self._cache.fresh_until(call.aws.key)

    def count_hit(self) -> None:
        """Count a login answered from what a previous call remembered of this cache."""
        self._cache.count_hit()

    def will_fetch(self, call: Call) -> bool:
        """Whether the call's login is to be fetched (nothing cached) without the workgroup's
        lookup: a managed admin secret is found through that lookup, a password not fetched."""
        options = call.options
        if options.method == "secret" and options.secret_id is None:
            return False
        return options.method != "password" and self._cache.peek(call.aws.key) is None

    def attempt(self, call: Call, use: Callable[[Login], T]) -> tuple[T, Login]:
        """``use(login)`` with the call's login; when it raises :class:`Refused`, again with
        a fresh login, a bounded number of times. Returns its result and the login used."""
        attempts = 1 if call.options.method == "password" else self._login_attempts
        refused: Login | None = None
        for attempt in range(1, attempts + 1):
            login = self.login(call) if refused is None else self._recover(call, refused)
            try:
                result = use(login)
                break
            except Refused as exc:
                refused = login
                if attempt == attempts:
                    raise refused_error(call, exc, attempts) from exc.__cause__
                self._on_retry(attempt)
                from rsauth._backoff import backoff  # only on a retry: loaded then

                self._sleep(backoff(attempt))
        if refused is not None:
            key = call.aws.key._replace(method=login.method)
            self._figures.add("login.recoveries", login_attributes(key))
            if login.method == "secret":
                # A pending version that worked is the one to use until the next refresh.
                self._cache.put(key, Lease(login, refresh_after=self._secret_refresh))
        return result, login

    def _recover(self, call: Call, refused: Login) -> Login:
        """A fresh login after ``refused`` was refused; for a secret, AWSPENDING if unchanged."""
        # A fallback login is cached under the method it actually used.
        self._cache.discard(call.aws.key._replace(method=refused.method), refused)
        if self._shared is not None:
            self._shared.reject(refused)
        fresh = self.login(call)
        if fresh.method == "secret" and _same_login(fresh, refused):
            pending = self._secret_source(_as_secret(call)).load_pending()
            self._fetched(_as_secret(call).aws.key, "GetSecretValue", pending)
            if pending is not None and not _same_login(pending, refused):
                logger.info(
                    "login to %s refused with the current secret; trying AWSPENDING "
                    "(rotation in progress)",
                    call.options.target,
                )
                return pending
        return fresh

    def _through_shared(
        self, call: Call, fetch: Callable[[], Lease[Login]]
    ) -> Callable[[], Lease[Login]]:
        """``fetch`` behind the shared store in fleet mode: the store first, AWS once per fleet."""
        shared = self._shared
        if shared is None:
            return fetch
        aws = call.aws

        def through_shared() -> Lease[Login]:
            from rsauth._fleet import request_for  # fleet mode only: loaded on first use

            request = request_for(
                self._sessions,
                aws.session_key,
                aws.key,
                holding=self._cache.peek(aws.key),
                describe=describe(aws.key),
                clock=self._clock,
            )
            return shared.fetch(request, fetch)

        return through_shared

    def _fetched(self, key: CredentialKey, operation: str, fetched: T) -> T:
        """``fetched``, a login just fetched from AWS with ``operation``, counted."""
        if fetched is not None:
            attrs = attributes(operation=operation, **dict(login_attributes(key)))
            self._figures.add("login.fetches", attrs)
        return fetched

    def _iam_source(self, call: Call) -> IamSource:
        source = IamSource
        if call.options.method == "superuser":
            from rsauth._sources.superuser import SuperuserSource

            source = SuperuserSource
        return source(
            self._sessions.redshift_serverless(call.aws.session_key),
            workgroup=call.options.workgroup,
            custom_domain=call.options.custom_domain,
            database=call.options.database or DEFAULT_DATABASE,
            duration=call.options.duration,
            context=call.aws.context,
            clock=self._clock,
        )

    def _secret_source(self, call: Call) -> SecretSource:
        from rsauth._sources.secret import SecretSource

        secret_id = call.options.secret_id or self._connections.admin_secret_arn(call)
        return SecretSource(
            self._sessions.secretsmanager(call.aws.session_key),
            secret_id=secret_id,
            context=call.aws.context,
            refresh_after=self._secret_refresh,
        )

    # -- the superuser verdict --------------------------------------------

    def is_verified(self, login: Login) -> bool:
        """Whether ``login`` was already found to be a superuser's."""
        with self._verified_lock:
            return login in self._verified

    def mark_verified(self, login: Login) -> None:
        with self._verified_lock:
            self._verified.add(login)

    # -- bookkeeping ------------------------------------------------------

    def invalidate(self, predicate: Callable[[CredentialKey], bool] | None = None) -> int:
        """Drop cached logins whose key matches (``None``: all, with every verdict)."""
        dropped = self._cache.invalidate(predicate)
        if predicate is None:
            with self._verified_lock:
                self._verified = weakref.WeakSet()
        return dropped


def login_attributes(key: CredentialKey) -> Attributes:
    """What a login's figures are told apart by: never its user, only where and how."""
    return attributes(method=key.method, workgroup=key.workgroup, region=key.region)


def _as_secret(call: Call) -> Call:
    aws = call.aws
    return Call(
        options=call.options.replace(method="secret", fallback=False),
        profile=call.profile,
        resolved_aws=AwsSide(
            identity=aws.identity,
            region=aws.region,
            session_key=aws.session_key,
            context=aws.context,
            key=aws.key._replace(method="secret"),
            endpoint_key=aws.endpoint_key,
        ),
    )


def _same_login(a: Login, b: Login) -> bool:
    if a.version_id is not None and b.version_id is not None:
        return a.version_id == b.version_id
    return a.user == b.user and hmac.compare_digest(a.password, b.password)
