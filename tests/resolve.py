"""Loopback networking for tests: a made-up host name, a free port in a range.

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


def free_port(low: int, high: int) -> int | None:
    """A port in ``low``..``high`` nothing on 127.0.0.1 listens on now, or None."""
    for port in range(low, high + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return None
