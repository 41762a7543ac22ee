"""The proxy's logins, through a :class:`rsauth.Broker` (its cache, fleet mode and all).

A session asks :meth:`Logins.current` (almost always a cache hit). When the
database refuses that login, :meth:`Logins.recover` does what
``Broker.connect`` does on a refusal: drop the refused login, fetch a fresh
one and, for a secret that has not changed, try its ``AWSPENDING`` version
(a rotation in progress). This module is the only place the proxy reaches
past the Broker's public API; the recovery steps are the Broker's own.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Mapping
from typing import Any

from rsauth._broker import Broker
from rsauth._cache import Lease
from rsauth._credentials import Credentials
from rsauth._sources import Login

__all__ = ["Logins"]


class Logins:
    """Credentials for one proxied target; ``settings`` are ``Broker.credentials`` keywords."""

    def __init__(self, broker: Broker, settings: Mapping[str, Any]) -> None:
        self._broker = broker
        self._settings = dict(settings)
        # Recovered secret logins not yet proven by a successful session, by id().
        self._lock = threading.Lock()
        self._recovered: dict[int, tuple[Any, Login]] = {}

    def current(self, database: str | None) -> Credentials:
        return self._broker.credentials(**self._arguments(database))

    def recover(self, database: str | None, refused: Credentials) -> Credentials:
        """A fresh login after ``refused`` was refused by the database."""
        broker = self._broker
        call = broker._resolve_call(self._arguments(database))
        cached = broker._logins.login(call)
        same = cached.user == refused.user and hmac.compare_digest(
            cached.password, refused.password
        )
        login = cached if same else Login(refused.user, refused.password, refused.method)
        fresh = broker._logins._recover(call, login)
        credentials = broker._connections.credentials(call, fresh)
        if fresh.method == "secret":
            with self._lock:
                self._recovered[id(credentials)] = (call, fresh)
        return credentials

    def accepted(self, credentials: Credentials) -> None:
        """The database accepted ``credentials``; a recovered secret login (AWSPENDING
        during a rotation) is the one to use until the next refresh, as after a
        recovered ``connect()``."""
        with self._lock:
            entry = self._recovered.pop(id(credentials), None)
        if entry is None:
            return
        call, login = entry
        broker = self._broker
        key = call.aws.key._replace(method=login.method)
        broker._logins._cache.put(key, Lease(login, refresh_after=broker._secret_refresh))

    def rejected(self, credentials: Credentials) -> None:
        with self._lock:
            self._recovered.pop(id(credentials), None)

    def _arguments(self, database: str | None) -> dict[str, Any]:
        arguments = dict(self._settings)
        if database:
            arguments["database"] = database
        return arguments
