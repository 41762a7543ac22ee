"""``Credentials``: a frozen snapshot of one database login, password masked."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from rsauth._driver import trusted_ca_file

__all__ = ["Credentials", "describe_expiry", "describe_remaining"]

_MASK = "[secure]"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def describe_remaining(seconds: float | None) -> str:
    """``"in 14 min 58 s"``, ``"expired 2 min 3 s ago"`` or ``"does not expire"``."""
    if seconds is None:
        return "does not expire"
    whole = int(abs(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        span = f"{hours} h {minutes} min"
    elif minutes:
        span = f"{minutes} min {secs} s"
    else:
        span = f"{secs} s"
    return f"in {span}" if seconds > 0 else f"expired {span} ago"


def describe_expiry(expires_at: datetime | None, expires_in: float | None) -> str:
    """``"2026-11-30 12:15:00 UTC (in 14 min 58 s)"``, or ``"does not expire"``."""
    if expires_at is None:
        return "does not expire"
    stamp = expires_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({describe_remaining(expires_in)})"


# repr=False: the class writes its own __repr__ (the password masked), and the one
# dataclass would generate and discard costs import time.
@dataclass(frozen=True, repr=False)
class Credentials:
    """Everything needed to open one database session, as one immutable value.

    ``expires_at`` is timezone-aware, or ``None`` when the login does not expire
    (a secret, an explicit password). ``repr`` and ``str`` never show the
    password; the helpers leave it out unless asked.
    """

    user: str
    password: str = field(repr=False)
    host: str
    port: int
    database: str
    workgroup: str | None
    method: str
    expires_at: datetime | None = None
    # The Broker's clock, so expires_in agrees with its refresh decisions.
    _clock: Callable[[], datetime] = field(
        default=_utcnow, repr=False, compare=False, hash=False, kw_only=True
    )

    def __post_init__(self) -> None:
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("Credentials.expires_at must be timezone-aware")

    @property
    def expires_in(self) -> float | None:
        """Seconds until the login expires (negative once expired), or ``None``."""
        if self.expires_at is None:
            return None
        return (self.expires_at - self._clock()).total_seconds()

    def __repr__(self) -> str:
        return (
            f"Credentials(user={self.user!r}, password={_MASK!r}, host={self.host!r}, "
            f"port={self.port!r}, database={self.database!r}, workgroup={self.workgroup!r}, "
            f"method={self.method!r}, expires_at={self.expires_at!r})"
        )

    __str__ = __repr__

    def _repr_html_(self) -> str:
        """How Jupyter shows it: a small table, the password masked, the time left."""
        rows = [
            ("user", self.user),
            ("password", _MASK),
            ("host", f"{self.host}:{self.port}"),
            ("database", self.database),
            ("workgroup", self.workgroup or "-"),
            ("method", self.method),
            ("expires", describe_expiry(self.expires_at, self.expires_in)),
        ]
        body = "".join(
            f"<tr><th style=\"text-align:left\">{name}</th>"
            f"<td style=\"text-align:left\"><code>{html.escape(value)}</code></td></tr>"
            for name, value in rows
        )
        return f"<table><caption>rsauth.Credentials</caption>{body}</table>"

    def as_dict(self, include_password: bool = False) -> dict[str, Any]:
        """The fields as a dict; ``password`` only with ``include_password=True``."""
        data: dict[str, Any] = {
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "workgroup": self.workgroup,
            "method": self.method,
            "expires_at": self.expires_at,
        }
        if include_password:
            data["password"] = self.password
        return data

    def sqlalchemy_url(self, include_password: bool = False) -> str:
        """A ``redshift+redshift_connector://`` URL, every part percent-encoded."""
        userinfo = quote(self.user, safe="")
        if include_password:
            userinfo += ":" + quote(self.password, safe="")
        return (
            f"redshift+redshift_connector://{userinfo}@{self.host}:{self.port}/"
            f"{quote(self.database, safe='')}?sslmode=verify-full"
        )

    def as_env(
        self,
        *,
        sslrootcert: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """libpq environment variables (all ``str``) for ``psql`` and friends.

        ``PGSSLROOTCERT`` is ``sslrootcert`` when given, else the CA file the
        driver connection itself trusts: ``SSL_CERT_FILE`` (read from
        ``environ``, default ``os.environ``) when set, else the Redshift CA
        bundle redshift_connector ships. libpq has no default root.
        """
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
            "PGSSLMODE": "verify-full",
        }
        env["PGSSLROOTCERT"] = sslrootcert or trusted_ca_file(environ)
        return env
