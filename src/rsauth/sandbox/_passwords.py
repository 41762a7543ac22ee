"""The passwords the wire front accepts, each valid until its own expiry.

A PostgreSQL role holds one password, but Redshift accepts every unexpired
temporary password it issued to a user. So the sandbox keeps the passwords
itself and the front checks logins against this store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class IssuedPassword:
    """One password of one database user.

    ``expires_at`` is epoch seconds, or None for a password that does not expire
    (the admin user's, kept in Secrets Manager). ``db_roles`` are database roles
    granted at sign-in (the ``RedshiftDbRoles`` session tag). ``workgroup`` is the
    workgroup whose port accepts it (None: every port).
    """

    user: str
    password: str = field(repr=False)
    expires_at: float | None
    db_roles: tuple[str, ...] = ()
    source: str = "GetCredentials"
    workgroup: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class PasswordStore:
    """Thread-safe store of issued passwords, keyed by database user."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Guards _by_user: the control plane adds while the front checks.
        self._lock = threading.Lock()
        self._by_user: dict[str, list[IssuedPassword]] = {}

    def now(self) -> float:
        return self._clock()

    def add(self, issued: IssuedPassword) -> None:
        with self._lock:
            self._by_user.setdefault(issued.user, []).append(issued)

    def set_static(self, user: str, password: str, *, source: str = "static") -> None:
        """Make ``password`` the only non-expiring password of ``user`` (admin, rotation)."""
        with self._lock:
            kept = [p for p in self._by_user.get(user, []) if p.expires_at is not None]
            kept.append(IssuedPassword(user, password, None, (), source))
            self._by_user[user] = kept

    def candidates(self, user: str) -> list[IssuedPassword]:
        """Every password recorded for ``user``, expired ones included."""
        with self._lock:
            return list(self._by_user.get(user, []))

    def expire(self, user: str | None = None) -> int:
        """Expire now every temporary password of ``user`` (or of everyone)."""
        now = self._clock()
        count = 0
        with self._lock:
            for name, issued in self._by_user.items():
                if user is not None and name != user:
                    continue
                updated = []
                for entry in issued:
                    if entry.expires_at is not None and entry.expires_at > now:
                        entry = replace(entry, expires_at=now)
                        count += 1
                    updated.append(entry)
                self._by_user[name] = updated
        return count

    def all(self) -> list[IssuedPassword]:
        with self._lock:
            return [entry for entries in self._by_user.values() for entry in entries]
