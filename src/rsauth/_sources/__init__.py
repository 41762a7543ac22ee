"""Credential sources: small named providers, one file each.

Each source has a ``METHOD`` name and one ``load()`` that fetches a login
and returns it as a :class:`~rsauth._cache.Lease` (the login and how long
it stays valid). Adding a way to log in is adding one file here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

__all__ = ["AwsContext", "Login"]


class Login:
    """One database login as fetched. Compared by identity; the password is never shown.

    ``version_id`` is the secret version it came from; ``host``, ``port`` and
    ``database`` are hints a secret may carry. Read-only once made. (Written out by
    hand, not a dataclass: a frozen dataclass costs most of a millisecond to define at
    import.)
    """

    __slots__ = (
        "__weakref__", "database", "expires_at", "host", "method", "password", "port", "user",
        "version_id",
    )

    user: str
    password: str
    method: str
    expires_at: datetime | None
    version_id: str | None
    host: str | None
    port: int | None
    database: str | None

    def __init__(
        self,
        user: str,
        password: str,
        method: str,
        expires_at: datetime | None = None,
        version_id: str | None = None,
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
    ) -> None:
        setter = object.__setattr__
        setter(self, "user", user)
        setter(self, "password", password)
        setter(self, "method", method)
        setter(self, "expires_at", expires_at)
        setter(self, "version_id", version_id)
        setter(self, "host", host)
        setter(self, "port", port)
        setter(self, "database", database)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Login is read-only: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Login is read-only: cannot delete {name!r}")

    def __reduce__(self) -> tuple[type[Login], tuple[Any, ...]]:
        # copy and pickle rebuild it through __init__ (setting attributes is refused).
        return Login, (
            self.user, self.password, self.method, self.expires_at, self.version_id,
            self.host, self.port, self.database,
        )

    def with_expiry(self, expires_at: datetime | None) -> Login:
        """The same login expiring at ``expires_at``: a new object (compared by identity)."""
        return Login(
            self.user, self.password, self.method, expires_at, self.version_id, self.host,
            self.port, self.database,
        )

    def __repr__(self) -> str:
        return (
            f"Login(user={self.user!r}, method={self.method!r}, "
            f"expires_at={self.expires_at!r}, version_id={self.version_id!r}, "
            f"host={self.host!r}, port={self.port!r}, database={self.database!r})"
        )


class AwsContext:
    """What a source needs to name things in its errors: the region, and ``identity``,
    called only when AWS denies access, to name the refused identity. (A plain class,
    like :class:`Login`.)"""

    __slots__ = ("identity", "region")

    def __init__(self, region: str, identity: Callable[[], str]) -> None:
        self.region = region
        self.identity = identity
