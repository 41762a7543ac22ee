"""``superuser``: an ``iam`` login, checked once per credential to be a database superuser.

The check is one query, ``pg_user.usesuper`` of the session's user, run once
per login (the broker keeps the verdict with the login, not the connection).
A user holding the ``sys:superuser`` role without ``usesuper`` is refused:
Redshift documents that role as holding every system permission of RBAC
(https://docs.aws.amazon.com/redshift/latest/dg/r_roles-default.html), not
as a superuser, who bypasses every permission check, object privileges too
(https://docs.aws.amazon.com/redshift/latest/dg/r_superusers.html).
"""

from __future__ import annotations

import contextlib
from typing import Any

from rsauth._errors import NotSuperuserError
from rsauth._sources.iam import IamSource

__all__ = ["SUPERUSER_QUERY", "SuperuserSource", "verify_superuser"]

SUPERUSER_QUERY = "select usesuper from pg_user where usename = current_user"


class SuperuserSource(IamSource):
    """Same call as ``iam``; the broker then runs :func:`verify_superuser` on the connection."""

    METHOD = "superuser"


def verify_superuser(connection: Any, *, user: str, target: str) -> None:
    """Fail closed: unless ``connection`` is a superuser's, close it and raise NotSuperuserError."""
    try:
        row = _ask(connection)
    except Exception as exc:
        _close_quietly(connection)
        raise NotSuperuserError(
            f"could not verify that {user!r} is a superuser on {target} "
            f"({type(exc).__name__}); the connection was closed"
        ) from exc
    if not row or row[0] is not True:
        _close_quietly(connection)
        raise NotSuperuserError(
            f"{user!r} logged in to {target} but is not a database superuser; the "
            "connection was closed. Use role_arn= of the role that created the namespace, "
            "or method='secret' for the managed admin secret"
        )


def _ask(connection: Any) -> Any:
    """One query, in autocommit: the driver opens no transaction, so none is left behind
    (``VACUUM`` and ``CREATE DATABASE`` refuse to run inside one)."""
    previous = connection.autocommit
    connection.autocommit = True
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(SUPERUSER_QUERY)
            return cursor.fetchone()
        finally:
            cursor.close()
    finally:
        connection.autocommit = previous


def _close_quietly(connection: Any) -> None:
    # The connection is being abandoned; the error that follows is the one that matters.
    with contextlib.suppress(Exception):
        connection.close()
