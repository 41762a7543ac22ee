"""The connection side of a login: where to connect, opening the driver connection.

- the endpoint: a workgroup's address from ``GetWorkgroup`` (cached in
  ``_endpoint``), a custom domain, ``host=``, or the host a secret names;
- the :class:`Credentials` value handed out for a login at that endpoint;
- opening the ``redshift_connector`` connection (TLS settings come from
  ``_driver.with_tls``), retrying transient network failures with backoff,
  and reading the driver's errors: a refused login is :class:`Refused` for the
  login side to recover from, anything else an rsauth error;
- waiting for a workgroup that resumes (``_resume``): once the connect has
  reached it, its answer may take ``resume_timeout``;
- checking that a ``superuser`` login is one.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import redshift_connector

from rsauth._calls import DEFAULT_DATABASE, Call, EndpointKey
from rsauth._config import check_host
from rsauth._credentials import Credentials
from rsauth._driver import is_login_refused, is_tls_failure, is_transient, server_error
from rsauth._endpoint import DEFAULT_PORT, Endpoints, Workgroup
from rsauth._errors import AuthenticationError, ConfigurationError, ConnectError, NotFoundError
from rsauth._resume import handshake, is_handshake_timeout, restore_timeout
from rsauth._sessions import Sessions
from rsauth._sources import Login

if TYPE_CHECKING:
    from redshift_connector.core import Connection

    from rsauth._roles import NamespaceRoles

__all__ = ["Connections", "Lookup", "Refused", "refused_error"]

logger = logging.getLogger("rsauth")

T = TypeVar("T")

# A handshake slower than this was held by a resume: a connect to an awake workgroup
# (TLS, startup, password check) takes a fraction of it.
_RESUMING_AFTER = 3.0


class NotResumed(Exception):
    """Internal: the connect reached the workgroup, whose answer did not come in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class Refused(Exception):
    """Internal: the database refused a login; carries which one."""

    def __init__(self, login: Login) -> None:
        super().__init__(login.user)
        self.login = login


def refused_error(call: Call, exc: Refused, attempts: int) -> AuthenticationError:
    """The error for a login the database kept refusing, each time with a fresh credential."""
    cause = exc.__cause__
    fields = server_error(cause) if cause is not None else None
    detail = fields.get("M", "") if fields else ""
    return AuthenticationError(
        f"the database at {call.options.target} refused the {call.options.method} "
        f"login of {exc.login.user!r} after {attempts} attempt(s), each with a freshly "
        f"fetched credential: {detail or 'login refused'}"
    )


class Lookup:
    """An endpoint lookup (:meth:`Connections.pending_lookup`) running in a daemon thread
    of its own; :meth:`wait` joins it and raises its error."""

    def __init__(self, lookup: Callable[[], object]) -> None:
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, args=(lookup,), name="rsauth-endpoint-lookup", daemon=True
        )
        self._thread.start()

    def _run(self, lookup: Callable[[], object]) -> None:
        try:
            lookup()  # the answer is cached: address() finds it there
        except Exception as exc:  # raised to the caller by wait()
            self._error = exc

    def wait(self) -> None:
        """Wait for the lookup; its error, if it failed, is raised here, as the same lookup
        made in line would have raised it (and not asked again)."""
        self._thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def join(self) -> None:
        """Wait for the lookup, whatever its outcome: no thread outlives the call."""
        self._thread.join()


class Connections:
    """Endpoints, Credentials values and driver connections for one Broker."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        endpoint_ttl: float,
        connect_attempts: int,
        on_retry: Callable[[int], None],
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._sleep = sleep
        self._connect_attempts = connect_attempts
        self._on_retry = on_retry
        self._endpoints = Endpoints(clock=clock, ttl=endpoint_ttl)
        # Guards the weak map below (read and written by every caller).
        self._lock = threading.Lock()
        # The Credentials last assembled from each login (weak: they leave with the login).
        self._assembled: weakref.WeakKeyDictionary[
            Login, tuple[tuple[Any, ...], Credentials]
        ] = weakref.WeakKeyDictionary()

    # -- endpoints --------------------------------------------------------

    def workgroup(self, call: Call) -> Workgroup:
        """``GetWorkgroup``'s answer for the call's workgroup, cached."""
        if call.options.workgroup is None:
            raise ConfigurationError(
                "the namespace's managed admin secret is found through workgroup=; "
                "pass workgroup= or secret_id="
            )
        session_key = call.aws.session_key
        return self._endpoints.workgroup(
            call.aws.endpoint_key,
            lambda: self._sessions.redshift_serverless(session_key),
            call.options.workgroup,
            call.aws.context,
        )

    def admin_secret_arn(self, call: Call) -> str:
        """The ARN of the namespace's Redshift-managed admin secret, cached like the endpoint."""
        from rsauth._sources.secret import admin_secret_arn  # the secret method's: on first use

        workgroup = self.workgroup(call)
        client = self._sessions.redshift_serverless(call.aws.session_key)
        context = call.aws.context
        return self._endpoints.admin_secret_arn(
            call.aws.endpoint_key,
            lambda: admin_secret_arn(client, namespace=workgroup.namespace, context=context),
        )

    def namespace_roles(self, call: Call, *, fresh: bool) -> NamespaceRoles:
        """The IAM roles of the workgroup's namespace, cached like the endpoint."""
        from rsauth._roles import namespace_roles  # rsauth.etl's: loaded on first use

        namespace = self.workgroup(call).namespace
        client = self._sessions.redshift_serverless(call.aws.session_key)
        context = call.aws.context
        return self._endpoints.namespace_roles(
            call.aws.endpoint_key,
            lambda: namespace_roles(client, namespace=namespace, context=context),
            fresh=fresh,
        )

    def discard_endpoint(self, call: Call) -> None:
        """Forget the call's workgroup (or custom domain) lookup: the next call asks AWS again."""
        if call.options.custom_domain:
            self._endpoints.discard(self._domain_key(call))
        self._endpoints.discard(call.aws.endpoint_key)

    @staticmethod
    def _domain_key(call: Call) -> EndpointKey:
        # A custom domain's workgroup is cached under the domain, whatever workgroup= says.
        return call.aws.endpoint_key._replace(workgroup="")

    def invalidate(self, predicate: Callable[[Hashable], bool] | None = None) -> int:
        """Drop cached lookups whose :class:`EndpointKey` matches (``None``: all)."""
        return self._endpoints.invalidate(predicate)

    def address(self, call: Call, login: Login) -> tuple[str, int]:
        options = call.options
        if options.host:
            return options.host, options.port or DEFAULT_PORT
        if options.custom_domain:
            if options.port:
                return options.custom_domain, options.port
            return options.custom_domain, self._custom_domain(call).port
        if options.workgroup:
            workgroup = self.workgroup(call)
            return workgroup.address, options.port or workgroup.port
        if login.host:
            return check_host("the secret's host", login.host), login.port or DEFAULT_PORT
        raise ConfigurationError(
            "no endpoint to connect to: pass workgroup=, custom_domain= or host= "
            "(the secret names no host)"
        )

    def _custom_domain(self, call: Call) -> Workgroup:
        """The workgroup of the call's custom domain, cached."""
        assert call.options.custom_domain is not None
        session_key = call.aws.session_key
        return self._endpoints.custom_domain(
            self._domain_key(call),
            lambda: self._sessions.redshift_serverless(session_key),
            call.options.custom_domain,
            call.aws.context,
        )

    @property
    def generation(self) -> int:
        """Moves whenever an endpoint lookup is stored or dropped."""
        return self._endpoints.generation

    def fresh_until(self, call: Call) -> float | None:
        """Until when :meth:`address` answers the call from the cache without a refresh:
        ``inf`` when it looks nothing up, ``None`` when its lookup is not cached."""
        options = call.options
        if options.host or call.resolved_aws is None or (
            options.custom_domain and options.port
        ):
            return math.inf
        if options.custom_domain:
            return self._endpoints.fresh_until(self._domain_key(call))
        if options.workgroup:
            return self._endpoints.fresh_until(call.aws.endpoint_key)
        return math.inf

    def pending_lookup(self, call: Call) -> Callable[[], object] | None:
        """The endpoint lookup :meth:`address` would make for the call (nothing cached),
        to start ahead of it in a :class:`Lookup`; else ``None``. Through the same cache:
        one lookup per key whoever asks."""
        options = call.options
        if options.host or call.resolved_aws is None:
            return None
        if options.custom_domain:
            if options.port or self._endpoints.has(self._domain_key(call)):
                return None
            return functools.partial(self._custom_domain, call)
        if options.workgroup and not self._endpoints.has(call.aws.endpoint_key):
            return functools.partial(self.workgroup, call)
        return None

    def credentials(self, call: Call, login: Login) -> Credentials:
        """The :class:`Credentials` of ``login`` at the call's endpoint."""
        host, port = self.address(call, login)
        database = call.options.database or login.database or DEFAULT_DATABASE
        where = (host, port, database, call.options.workgroup)
        # The same login at the same place gives the same frozen value: hand that out again.
        with self._lock:
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
        with self._lock:
            self._assembled[login] = (where, credentials)
        return credentials

    # -- connecting -------------------------------------------------------

    @staticmethod
    def driver_connect(
        call: Call, credentials: Credentials, kwargs: Mapping[str, Any]
    ) -> Connection:
        """One redshift_connector connection attempt, neither retried nor mapped.

        Once it has reached the workgroup it waits up to ``resume_timeout`` for the
        answer (a workgroup that resumes holds it): no second connect while the first
        is held. A workgroup that did not answer in time is :class:`NotResumed`."""
        driver_timeout = kwargs.get("timeout")
        # The driver's timeout bounds each read; a resume may hold the first one longer.
        wait = max(call.options.resume_timeout, driver_timeout or 0)
        with handshake(wait) as current:
            try:
                connection = redshift_connector.connect(
                    user=credentials.user,
                    password=credentials.password,
                    host=credentials.host,
                    port=credentials.port,
                    database=credentials.database,
                    **kwargs,
                )
            except Exception as exc:
                if is_handshake_timeout(exc, current):
                    raise NotResumed(wait) from exc
                raise
        restore_timeout(connection, driver_timeout)
        if current.waited >= _RESUMING_AFTER:
            logger.info("%s is resuming; waited %.0f s", call.options.target, current.waited)
        return connection

    def open_with(self, call: Call, credentials: Credentials, connect: Callable[[], T]) -> T:
        """``connect()``, transient network failures retried; a refused login is
        :class:`Refused`, any other failure an rsauth error.

        ``connect`` reports failures in ``redshift_connector``'s terms (a refused login
        an ``InterfaceError`` with SQLSTATE 28000, a network failure an ``OSError``, a
        TLS failure an ``ssl.SSLError``), so every driver gets the same rsauth errors."""
        attempt = 1
        while True:
            try:
                return connect()
            except Exception as exc:
                if attempt >= self._connect_attempts or not is_transient(exc):
                    raise self._error(call, credentials, exc) from exc
            self._on_retry(attempt)
            from rsauth._backoff import backoff  # only on a retry: loaded then

            self._sleep(backoff(attempt))
            attempt += 1

    def verify_superuser(self, connection: Connection, call: Call, login: Login) -> None:
        """Fail closed: unless ``connection`` is a superuser's, close it and raise."""
        from rsauth._sources.superuser import verify_superuser  # the superuser method's

        verify_superuser(connection, user=login.user, target=call.options.target)

    def _error(self, call: Call, credentials: Credentials, exc: Exception) -> Exception:
        address = f"{credentials.host}:{credentials.port}"
        if is_login_refused(exc):
            return Refused(_login_of(credentials))
        if isinstance(exc, NotResumed):
            return ConnectError(
                f"{call.options.target} at {address} accepted the connection but did not "
                f"resume within {exc.seconds:g} s; it may still be resuming: try again, or "
                "raise resume_timeout= (RSAUTH_RESUME_TIMEOUT)"
            )
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
                self.discard_endpoint(call)
            return ConnectError(
                f"could not reach {call.options.target} at {address} after "
                f"{self._connect_attempts} attempt(s) ({type(exc).__name__}); check the "
                "network path (VPC, security group, publicly accessible) and try again"
            )
        return ConnectError(
            f"connecting to {call.options.target} at {address} failed ({type(exc).__name__})"
        )


def _login_of(credentials: Credentials) -> Login:
    return Login(user=credentials.user, password=credentials.password, method=credentials.method)
