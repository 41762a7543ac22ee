"""``superuser``: an ``iam`` login, checked once per credential to be a database superuser."""

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
        cursor = connection.cursor()
        try:
            cursor.execute(SUPERUSER_QUERY)
            row = cursor.fetchone()
        finally:
            cursor.close()
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


def _close_quietly(connection: Any) -> None:
    # The connection is being abandoned; the error that follows is the one that matters.
    with contextlib.suppress(Exception):
        connection.close()
