"""SQLAlchemy engines whose every new pooled connection logs in with current credentials.

::

    from rsauth.sqlalchemy import create_engine

    engine = create_engine(workgroup="analytics", pool_pre_ping=True)
    pandas.read_sql_query("select * from sales", engine)

A URL with the password in it (``Credentials.sqlalchemy_url(include_password=True)``)
freezes one login into the engine: once it expires, 15 minutes later by default,
every new pooled connection is refused. Here the engine's ``creator`` asks a
Broker each time the pool opens a connection, so the Broker decides: the cached
login while it is valid, a fresh one ahead of expiry, and a retry with a fresh
one when the database refuses. Connections already in the pool stay open after
their password expires (the database does not end a session for that).

Needs the ``sqlalchemy`` extra (SQLAlchemy and the ``sqlalchemy-redshift``
dialect): ``pip install 'rsauth[sqlalchemy]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rsauth._api import default_broker
from rsauth._config import SETTING_NAMES, given_settings
from rsauth._driver import check_driver_kwargs
from rsauth._errors import ConfigurationError

if TYPE_CHECKING:
    from redshift_connector.core import Connection
    from sqlalchemy.engine import Engine

    from rsauth._broker import Broker

__all__ = ["DIALECT", "create_engine"]


# sqlalchemy-redshift's dialect for the redshift_connector driver.
DIALECT = "redshift+redshift_connector"
"""The URL scheme of the engines ``create_engine`` makes."""

_OWN = frozenset({"creator", "url", "async_creator"})


def create_engine(
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
    broker: Broker | None = None,
    connect_args: Mapping[str, Any] | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """A ``sqlalchemy.engine.Engine`` on the ``redshift+redshift_connector`` dialect.

    The rsauth options are those of :func:`rsauth.connect` and are resolved on
    every new connection (so ``RSAUTH_*`` variables are read then, not now).
    ``broker`` defaults to the process-wide Broker behind ``rsauth.connect``.
    ``connect_args`` go to ``redshift_connector.connect`` (checked now against
    its signature); every other keyword goes to ``sqlalchemy.create_engine``
    (``pool_size``, ``pool_pre_ping``, ``pool_recycle``, ``echo``, ...).
    """
    clash = _OWN & set(engine_kwargs)
    if clash:
        raise ConfigurationError(
            f"{', '.join(sorted(clash))}: rsauth.sqlalchemy.create_engine makes the "
            "connections itself; pass rsauth options (workgroup=, method=, ...) instead"
        )
    driver_kwargs = check_driver_kwargs(connect_args or {}, SETTING_NAMES)
    options = given_settings(locals())

    def creator() -> Connection:
        chosen = broker if broker is not None else default_broker()
        return chosen.connect(**options, **driver_kwargs)

    try:
        import sqlalchemy
    except ImportError as exc:
        raise ConfigurationError(
            "rsauth.sqlalchemy needs SQLAlchemy and sqlalchemy-redshift: "
            "pip install 'rsauth[sqlalchemy]'"
        ) from exc
    try:
        return sqlalchemy.create_engine(f"{DIALECT}://", creator=creator, **engine_kwargs)
    except sqlalchemy.exc.NoSuchModuleError as exc:
        raise ConfigurationError(
            f"SQLAlchemy has no {DIALECT!r} dialect: install sqlalchemy-redshift "
            "(pip install 'rsauth[sqlalchemy]')"
        ) from exc
