"""Credential sources: small named providers, one file each.

Each source has a ``METHOD`` name and one ``load()`` that fetches a login
and returns it as a :class:`~rsauth._cache.Lease` (the login and how long
it stays valid). Adding a way to log in is adding one file here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["AwsContext", "Login"]


@dataclass(frozen=True, eq=False)
class Login:
    """One database login as fetched. Compared by identity; the password is never shown.

    ``version_id`` is the secret version it came from; ``host``, ``port`` and
    ``database`` are hints a secret may carry.
    """

    user: str
    password: str = field(repr=False)
    method: str
    expires_at: datetime | None = None
    version_id: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None


@dataclass(frozen=True)
class AwsContext:
    """What a source needs to name things in its errors."""

    region: str
    # Called only when AWS denies access, to name the refused identity.
    identity: Callable[[], str]
