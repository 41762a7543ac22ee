"""``password``: an explicit user and password, as given."""

from __future__ import annotations

from rsauth._cache import Lease
from rsauth._sources import Login

__all__ = ["PasswordSource"]


class PasswordSource:
    """Returns the caller's own user and password; nothing is fetched."""

    METHOD = "password"

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password

    def load(self) -> Lease[Login]:
        return Lease(Login(user=self._user, password=self._password, method=self.METHOD))
