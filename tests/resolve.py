"""Resolve one made-up host name to loopback inside the test process.

Custom domains need a name that resolves; editing /etc/hosts would touch every
other run on the machine, so tests patch ``socket.getaddrinfo`` for that one name
(redshift_connector and botocore both resolve through it).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest


def resolve_to_loopback(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower() == name.lower():
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
