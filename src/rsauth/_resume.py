"""Waiting for a workgroup that resumes, without giving up reaching one that is not there.

An idle Serverless workgroup accepts the TCP connection and answers it only
once compute is back (the sandbox models this as a held answer to the SSL
request). ``redshift_connector.connect(timeout=)`` puts one timeout on the
socket for everything, so a short one fails the resume and a long one waits
that long for a host that never answers. rsauth splits the two: the TCP
connect keeps the driver's ``timeout``; once connected, the handshake (SSL
answer, TLS, startup, authentication) may take up to ``resume_timeout``; the
open connection then gets the driver's ``timeout`` back for every later read.

The driver creates its socket with ``socket.socket`` in ``redshift_connector.core``
(``Connection.__init__``); rsauth gives that module a ``socket.socket`` that, when
the calling thread is inside :func:`handshake`, makes a socket whose ``connect``
applies the handshake timeout, and otherwise the plain socket it always made. A
failed handshake closes its socket, which the driver leaves open on some errors.
"""

from __future__ import annotations

import socket
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redshift_connector.core

__all__ = ["Handshake", "handshake", "is_handshake_timeout"]


class Handshake:
    """One connect's phases, filled in as they happen. (A plain class: a dataclass costs
    more to define at import than this module's whole body.)"""

    __slots__ = ("answered_at", "connected_at", "resume_timeout", "sock")

    def __init__(self, resume_timeout: float) -> None:
        self.resume_timeout = resume_timeout
        self.sock: socket.socket | None = None
        self.connected_at: float | None = None  # time.monotonic() when TCP connected
        self.answered_at: float | None = None  # when the driver's connect returned

    @property
    def waited(self) -> float:
        """Seconds from TCP connected to the end of the handshake (0 if not connected)."""
        if self.connected_at is None or self.answered_at is None:
            return 0.0
        return self.answered_at - self.connected_at


class _Current(threading.local):
    handshake: Handshake | None = None


_CURRENT = _Current()


class _ResumableSocket(socket.socket):
    """A socket that, inside :func:`handshake`, waits ``resume_timeout`` once connected."""

    __slots__ = ()  # like socket.socket: no __dict__

    def connect(self, address: Any) -> None:
        super().connect(address)
        current = _CURRENT.handshake
        if current is not None:
            current.connected_at = time.monotonic()
            self.settimeout(current.resume_timeout)


def _make_socket(*args: Any, **kwargs: Any) -> socket.socket:
    current = _CURRENT.handshake
    if current is None:
        return socket.socket(*args, **kwargs)
    current.sock = _ResumableSocket(*args, **kwargs)
    return current.sock


class _DriverSocketModule(types.ModuleType):
    """``socket`` as ``redshift_connector.core`` sees it: the same but for ``socket.socket``."""

    socket = staticmethod(_make_socket)

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)


def _install() -> None:
    # getattr/setattr: ``socket`` is an import inside redshift_connector.core, not its API.
    if not isinstance(getattr(redshift_connector.core, "socket", None), _DriverSocketModule):
        setattr(redshift_connector.core, "socket", _DriverSocketModule("socket"))  # noqa: B010  # see above


_install()


@contextmanager
def handshake(resume_timeout: float) -> Iterator[Handshake]:
    """The driver connects inside this block; the yielded value tells what happened."""
    current = Handshake(resume_timeout)
    _CURRENT.handshake = current
    try:
        yield current
    except BaseException:
        if current.sock is not None:
            current.sock.close()
        raise
    finally:
        current.answered_at = time.monotonic()
        _CURRENT.handshake = None


def is_handshake_timeout(exc: BaseException, current: Handshake) -> bool:
    """The connect reached the server and then timed out waiting for its answer."""
    if current.connected_at is None:
        return False
    parts = [exc, *exc.args, exc.__cause__, exc.__context__]
    return any(isinstance(part, TimeoutError) for part in parts)


def restore_timeout(connection: Any, timeout: float | None) -> None:
    """Give an open connection the driver's ``timeout`` back for every later read."""
    sock = getattr(connection, "_usock", None)  # redshift_connector.core.Connection._usock
    if sock is not None:
        sock.settimeout(timeout)
