"""``rsauth.proxy``: a local authenticating proxy, so every PostgreSQL client gets
brokered logins (psql, JDBC tools, dbt, any driver).

``Proxy(workgroup="analytics")`` listens on 127.0.0.1 (``port=0`` picks a free
port); clients connect without a password and the proxy logs them in upstream
with the broker's login, over TLS ``verify-full``. Only the local user who
started it is let in. The command is ``rsauth proxy``.
"""

from __future__ import annotations

from rsauth.proxy._health import HealthServer
from rsauth.proxy._server import DEFAULT_PORT, Proxy, SessionRecord

__all__ = ["DEFAULT_PORT", "HealthServer", "Proxy", "SessionRecord"]
