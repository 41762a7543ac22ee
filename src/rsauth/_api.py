"""Module-level ``connect()``, ``get_credentials()`` and their async forms on one
process-wide Broker."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rsauth._broker import Broker
from rsauth._config import given_settings
from rsauth._credentials import Credentials
from rsauth._driver import calling_module
from rsauth._fork import call_in_child

if TYPE_CHECKING:
    from redshift_connector.core import Connection

__all__ = [
    "connect",
    "connect_async",
    "default_broker",
    "get_credentials",
    "get_credentials_async",
]

# Guards the creation of the default Broker.
_lock = threading.Lock()
_default: Broker | None = None


def default_broker() -> Broker:
    """The process-wide Broker behind :func:`connect`, made on first use."""
    global _default
    made = _default
    if made is not None:  # made once: later calls need no lock
        return made
    with _lock:
        if _default is None:
            _default = Broker()
        return _default


def _reset_lock_in_child() -> None:
    # A thread of the parent may have held the lock at fork time; the Broker resets itself.
    global _lock
    _lock = threading.Lock()


call_in_child(_reset_lock_in_child)


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
    resume_timeout: float | None = None,
    **driver_kwargs: Any,
) -> Connection:
    """A ``redshift_connector`` connection to a Redshift Serverless workgroup.

    Picks the login method (``method="auto"``: user+password → password,
    secret_id → secret, else iam), fetches and caches the login, refreshes it
    before it expires, and connects over TLS with ``sslmode="verify-full"``.
    Every keyword not listed here is passed to ``redshift_connector.connect``
    after checking it is one of its parameters. Options not given come from
    ``RSAUTH_*`` environment variables, then defaults.
    """
    return default_broker().connect(**given_settings(locals()), **driver_kwargs)


def get_credentials(
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
    """The current :class:`Credentials` for a workgroup (cached, refreshed ahead of expiry)."""
    # Every keyword spelled out (None: not given), as Broker.credentials takes them.
    return default_broker().credentials(
        workgroup=workgroup, custom_domain=custom_domain, database=database, method=method,
        duration=duration, secret_id=secret_id, role_arn=role_arn, db_roles=db_roles,
        user=user, password=password, host=host, port=port, region=region, profile=profile,
        fallback=fallback, resume_timeout=resume_timeout,
    )


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
    resume_timeout: float | None = None,
    **driver_kwargs: Any,
) -> Connection:
    """:func:`connect` without blocking the event loop while it logs in and connects.

    The result is the same ``redshift_connector`` connection, whose queries block
    (the driver has no async API); for async queries use :mod:`rsauth.psycopg`.
    """
    if not driver_kwargs.get("application_name"):
        driver_kwargs["application_name"] = calling_module()
    return await default_broker().connect_async(**given_settings(locals()), **driver_kwargs)


async def get_credentials_async(
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
    """:func:`get_credentials` without blocking the event loop (AWS asked from a worker
    thread, once for every task and thread asking the same at the same time)."""
    # Forwarded one by one: this runs on the loop for every task of a burst, and reading
    # locals() into a dict costs more than the rest of joining the flight.
    return await default_broker().credentials_async(
        workgroup=workgroup,
        custom_domain=custom_domain,
        database=database,
        method=method,
        duration=duration,
        secret_id=secret_id,
        role_arn=role_arn,
        db_roles=db_roles,
        user=user,
        password=password,
        host=host,
        port=port,
        region=region,
        profile=profile,
        fallback=fallback,
        resume_timeout=resume_timeout,
    )
