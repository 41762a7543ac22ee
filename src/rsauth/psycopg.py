"""psycopg 3 connections and pools that log in through rsauth.

::

    import rsauth.psycopg

    with rsauth.psycopg.connect(workgroup="analytics") as connection:
        connection.execute("select 1")

    async with await rsauth.psycopg.connect_async(workgroup="analytics") as connection:
        await connection.execute("select 1")

    with rsauth.psycopg.pool(workgroup="analytics", max_size=10) as pool:
        with pool.connection() as connection:
            connection.execute("select 1")

The settings, ``RSAUTH_*`` variables and errors are those of
:func:`rsauth.connect`; the login comes from the same Broker (default: the
process-wide one), with its cache, refresh ahead and single flight. Every other
keyword goes to ``psycopg.connect``. TLS is ``sslmode=verify-full`` with
``sslrootcert`` the CA file rsauth trusts (``SSL_CERT_FILE``, else the
Redshift bundle redshift_connector ships). A login the database refuses is
dropped and a fresh one tried, as :func:`rsauth.connect` does (for a secret
also its ``AWSPENDING`` version during a rotation).

psycopg's automatic prepared statements are off by default
(``prepare_threshold=None``): Redshift prepares only SELECT, INSERT, UPDATE
and DELETE (https://docs.aws.amazon.com/redshift/latest/dg/r_PREPARE.html).
Pass ``prepare_threshold=5`` (psycopg's default) to turn them back on.

The pools open each new connection with a current login, so a pool outlives
every credential; connections already in the pool stay open past their
password's expiry (the database does not end a session for that).

Needs the ``psycopg`` extra: ``pip install 'rsauth[psycopg]'``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import difflib
import functools
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redshift_connector.error import InterfaceError, ProgrammingError

from rsauth._api import default_broker
from rsauth._async import wait
from rsauth._config import SETTING_NAMES, given_settings
from rsauth._driver import trusted_ca_file
from rsauth._errors import ConfigurationError

try:
    import psycopg
    import psycopg_pool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "rsauth.psycopg needs psycopg 3 and psycopg_pool: pip install 'rsauth[psycopg]'"
    ) from exc

if TYPE_CHECKING:
    from typing_extensions import Self

    from rsauth._broker import Broker
    from rsauth._credentials import Credentials

__all__ = [
    "MAX_IDLE",
    "MAX_LIFETIME",
    "async_pool",
    "connect",
    "connect_async",
    "pool",
]

logger = logging.getLogger("rsauth")

C = TypeVar("C")
A = TypeVar("A", bound="psycopg.AsyncConnection[Any]")

# Pool defaults: a connection is replaced after an hour and closed after five idle minutes
# (beyond min_size, which is 0: an idle pool holds no sessions).
MAX_LIFETIME = 3600.0
"""Seconds a pooled connection lives before the pool replaces it (``max_lifetime``)."""
MAX_IDLE = 300.0
"""Seconds an idle pooled connection above ``min_size`` is kept (``max_idle``)."""

# libpq's connection keywords (``PQconndefaults``) and psycopg's own connect() parameters.
_LIBPQ_KEYWORDS = frozenset(
    option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()
)
_PSYCOPG_KEYWORDS = frozenset(
    {"autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory"}
)
# Chosen by rsauth from the login and the endpoint.
_OWNED = {
    "dbname": "database=",
    "hostaddr": "host= or workgroup=",
    "service": "workgroup=, custom_domain= or host=",
    "passfile": "method=",
    "conninfo": "workgroup=, method= and the other rsauth settings",
}

# libpq reports a server's refusal of the login as text only, "... failed: FATAL:  <message>"
# (severity, a colon and two spaces: libpq's fe-protocol3.c, pqBuildErrorMessage3), and
# psycopg raises it as an OperationalError whose sqlstate is None: a connection attempt
# yields no result to read the SQLSTATE from (psycopg/generators.py, _connect;
# https://github.com/psycopg/psycopg/issues/1188). The server's own message is read here.
_SERVER_MESSAGE = re.compile(r"\b(?:FATAL|PANIC|ERROR):  (.+?)\s*$", re.S)
# What the server says, with the SQLSTATE it sends along (28000 for both refusals on
# Redshift; PostgreSQL sends 28P01 for a wrong password).
_SERVER_CODES = (
    (re.compile(r"^password authentication failed for user "), "28000"),
    (re.compile(r"^IAM Authentication token has expired"), "28000"),
    (re.compile(r'^database ".*" does not exist'), "3D000"),
)
# libpq's own messages for a network failure, and for a TLS failure (fe-connect.c,
# fe-secure-openssl.c).
_NETWORK = (
    "Connection refused",
    "Connection reset",
    "Connection timed out",
    "timeout expired",
    "could not translate host name",
    "Network is unreachable",
    "No route to host",
    "server closed the connection unexpectedly",
    "could not receive data",
    "could not send data",
    "SSL SYSCALL error",
    "EOF detected",
)
_TLS = ("SSL error", "certificate", "SSL connection")


# --------------------------------------------------------------------------- connect


def connect(
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
    broker: Broker | None = None,
    **psycopg_kwargs: Any,
) -> psycopg.Connection[Any]:
    """A ``psycopg.Connection`` logged in as :func:`rsauth.connect` would log in.

    ``broker`` defaults to the process-wide Broker. Other keywords go to
    ``psycopg.connect`` (checked now against libpq's and psycopg's parameters).
    """
    kwargs = _check_kwargs(psycopg_kwargs)
    return _open(broker, given_settings(locals()), psycopg.Connection.connect, kwargs)


async def connect_async(
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
    broker: Broker | None = None,
    **psycopg_kwargs: Any,
) -> psycopg.AsyncConnection[Any]:
    """:func:`connect` for asyncio: a ``psycopg.AsyncConnection``.

    The login (AWS calls, the cache) is made in a worker thread and the
    connection opened on the running loop, which is never blocked.
    """
    kwargs = _check_kwargs(psycopg_kwargs)
    return await _open_async(
        broker, given_settings(locals()), psycopg.AsyncConnection.connect, kwargs
    )


# --------------------------------------------------------------------------- pools


def pool(
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
    broker: Broker | None = None,
    kwargs: Mapping[str, Any] | None = None,
    min_size: int = 0,
    max_size: int | None = None,
    max_lifetime: float = MAX_LIFETIME,
    max_idle: float = MAX_IDLE,
    check: Callable[[psycopg.Connection[Any]], None] | None = None,
    open: bool = True,
    **pool_kwargs: Any,
) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
    """A ``psycopg_pool.ConnectionPool`` whose every new connection gets a current login.

    ``kwargs`` go to ``psycopg.connect`` for each connection; other keywords to
    ``ConnectionPool`` (``timeout``, ``configure``, ``reset``, ``name``, ...).
    Defaults for Serverless: ``min_size=0`` (no idle sessions held),
    ``max_lifetime`` one hour, ``max_idle`` five minutes, and no check before
    handing out a connection (``check=ConnectionPool.check_connection`` adds one:
    a round trip to the database on every checkout).
    """
    connect_kwargs = _check_kwargs(kwargs or {})
    _check_pool_kwargs(pool_kwargs)
    settings = given_settings(locals())

    class Connection(psycopg.Connection[Any]):
        """Opened by psycopg_pool through ``connect``: logs in through the Broker."""

        @classmethod
        def connect(
            cls, conninfo: str = "", **given: Any
        ) -> Self:
            return _open(broker, settings, super().connect, {**connect_kwargs, **given})

    return psycopg_pool.ConnectionPool(
        connection_class=Connection,
        min_size=min_size,
        max_size=max_size,
        max_lifetime=max_lifetime,
        max_idle=max_idle,
        check=check,
        open=open,
        **pool_kwargs,
    )


def async_pool(
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
    broker: Broker | None = None,
    kwargs: Mapping[str, Any] | None = None,
    min_size: int = 0,
    max_size: int | None = None,
    max_lifetime: float = MAX_LIFETIME,
    max_idle: float = MAX_IDLE,
    check: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
    **pool_kwargs: Any,
) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """:func:`pool` for asyncio: a ``psycopg_pool.AsyncConnectionPool``, not yet open
    (``async with`` it, or ``await pool.open()``, as psycopg_pool asks)."""
    connect_kwargs = _check_kwargs(kwargs or {})
    _check_pool_kwargs(pool_kwargs)
    settings = given_settings(locals())

    class AsyncConnection(psycopg.AsyncConnection[Any]):
        """Opened by psycopg_pool through ``connect``: logs in through the Broker."""

        @classmethod
        async def connect(
            cls, conninfo: str = "", **given: Any
        ) -> Self:
            return await _open_async(
                broker, settings, super().connect, {**connect_kwargs, **given}
            )

    return psycopg_pool.AsyncConnectionPool(
        connection_class=AsyncConnection,
        min_size=min_size,
        max_size=max_size,
        max_lifetime=max_lifetime,
        max_idle=max_idle,
        check=check,
        open=False,
        **pool_kwargs,
    )


# --------------------------------------------------------------------------- the work


def _open(
    broker: Broker | None,
    settings: Mapping[str, Any],
    driver_connect: Callable[..., C],
    kwargs: Mapping[str, Any],
) -> C:
    chosen = broker if broker is not None else default_broker()
    call = chosen._resolve_call(settings)
    tls = _with_tls(kwargs, chosen._env)

    def connect(credentials: Credentials) -> C:
        return _translated(lambda: driver_connect(**_login(credentials), **tls))

    connection, _ = chosen._connect_with(call, connect)
    return connection


async def _open_async(
    broker: Broker | None,
    settings: Mapping[str, Any],
    driver_connect: Callable[..., Coroutine[Any, Any, A]],
    kwargs: Mapping[str, Any],
) -> A:
    chosen = broker if broker is not None else default_broker()
    loop = asyncio.get_running_loop()

    def on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
        # From the worker thread: the connection belongs to the caller's loop.
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def connect(tls: Mapping[str, Any], credentials: Credentials) -> A:
        opened: A = _translated(lambda: on_loop(driver_connect(**_login(credentials), **tls)))
        return opened

    def job() -> A:
        call = chosen._resolve_call(settings)
        tls = _with_tls(kwargs, chosen._env)
        connection, _ = chosen._connect_with(
            call,
            functools.partial(connect, tls),
            verify=lambda opened: _Blocking(opened, on_loop),
        )
        return connection

    future = chosen._flights.submit(job)
    try:
        return await wait(future)
    except asyncio.CancelledError:
        # Nobody will take the connection the worker may still open: close it then.
        future.add_done_callback(functools.partial(_close_unclaimed, loop))
        raise


def _close_unclaimed(
    loop: asyncio.AbstractEventLoop, future: concurrent.futures.Future[Any]
) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    connection = future.result()
    with contextlib.suppress(RuntimeError):  # the loop is closed: the session ends with it
        asyncio.run_coroutine_threadsafe(connection.close(), loop)


class _Blocking:
    """The DB-API calls of the superuser check, made on an ``AsyncConnection`` from a worker
    thread (each one run on the connection's loop)."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], run: Callable[..., Any]) -> None:
        self._connection = connection
        self._run = run
        self._cursor: psycopg.AsyncCursor[Any] | None = None

    @property
    def autocommit(self) -> bool:
        return self._connection.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._run(self._connection.set_autocommit(value))

    def cursor(self) -> _Blocking:
        self._cursor = self._connection.cursor()
        return self

    def execute(self, query: str) -> None:
        assert self._cursor is not None
        self._run(self._cursor.execute(query))

    def fetchone(self) -> Any:
        assert self._cursor is not None
        return self._run(self._cursor.fetchone())

    def close(self) -> None:
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            self._run(cursor.close())
        else:
            self._run(self._connection.close())


def _login(credentials: Credentials) -> dict[str, Any]:
    return {
        "host": credentials.host,
        "port": credentials.port,
        "dbname": credentials.database,
        "user": credentials.user,
        "password": credentials.password,
    }


# --------------------------------------------------------------------------- settings


def _check_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` for ``psycopg.connect``; a bad keyword is a ConfigurationError (no network)."""
    for name in kwargs:
        if name in _OWNED:
            raise ConfigurationError(
                f"{name}= is chosen by rsauth from the login and the endpoint; "
                f"use {_OWNED[name]} instead"
            )
        if name not in _LIBPQ_KEYWORDS | _PSYCOPG_KEYWORDS:
            candidates = sorted(_LIBPQ_KEYWORDS | _PSYCOPG_KEYWORDS | set(SETTING_NAMES))
            close = difflib.get_close_matches(name, candidates, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigurationError(
                f"unknown keyword {name!r}: neither an rsauth option nor a parameter of "
                f"psycopg.connect (libpq's connection parameters){hint}"
            )
    result = dict(kwargs)
    result.setdefault("prepare_threshold", None)
    return result


def _check_pool_kwargs(pool_kwargs: Mapping[str, Any]) -> None:
    clash = {"conninfo", "connection_class"} & set(pool_kwargs)
    if clash:
        raise ConfigurationError(
            f"{', '.join(sorted(clash))}: rsauth makes the pool's connections itself; pass "
            "rsauth options (workgroup=, method=, ...) and kwargs= for psycopg.connect"
        )


def _with_tls(kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``kwargs`` with ``sslmode=verify-full`` and rsauth's CA file unless asked otherwise."""
    result = dict(kwargs)
    result.setdefault("sslmode", "verify-full")
    result.setdefault("sslrootcert", trusted_ca_file(environ))
    if result["sslmode"] != "verify-full":
        logger.warning(
            "sslmode=%r (as asked) does not check the server's host name; "
            "verify-full is the safe default",
            result["sslmode"],
        )
    return result


# --------------------------------------------------------------------------- errors


def _translated(connect: Callable[[], C]) -> C:
    """``connect()``, a psycopg failure raised as :func:`_as_driver_failure` reads it."""
    try:
        return connect()
    except psycopg.Error as exc:
        failure = _as_driver_failure(exc)
        failure.__cause__ = _without_connection(exc)
    # Raised outside the handler, so the original error (and its pgconn) is not kept as
    # the failure's context.
    raise failure


def _as_driver_failure(exc: psycopg.Error) -> Exception:
    """``exc`` in the terms rsauth reads driver failures in (``_driver``): the server's
    error fields in an ``InterfaceError``, a network failure an ``OSError``, a TLS failure
    an ``ssl.SSLError``; anything else an ``InterfaceError`` with libpq's message."""
    text = str(exc)
    found = _SERVER_MESSAGE.findall(text)
    if found or exc.sqlstate:
        message = found[-1] if found else text
        code = exc.sqlstate or next(
            (sqlstate for pattern, sqlstate in _SERVER_CODES if pattern.search(message)), ""
        )
        fields = {"S": "FATAL", "C": code, "M": message}
        return InterfaceError(fields) if code.startswith("28") else ProgrammingError(fields)
    if any(marker in text for marker in _NETWORK):
        return ConnectionError(text)
    if any(marker in text for marker in _TLS):
        return ssl.SSLError(text)
    return InterfaceError(text)


def _without_connection(exc: psycopg.Error) -> psycopg.Error:
    """A copy of ``exc`` without its ``pgconn``, whose repr shows the connection's
    parameters, the password among them."""
    copy = type(exc)(*exc.args)
    copy.__traceback__ = exc.__traceback__
    return copy
