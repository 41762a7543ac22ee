"""Small clients for the proxy tests: raw protocol bytes, waiting for a state."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

from rsauth._pgwire import parse_error, startup_packet
from rsauth.sandbox import Sandbox

_HEADER = struct.Struct("!ci")


def read_reply(sock: socket.socket, limit: float = 30.0) -> list[tuple[bytes, bytes]]:
    """Messages until ReadyForQuery, an ErrorResponse or the end of the connection."""
    sock.settimeout(limit)
    data = b""
    messages: list[tuple[bytes, bytes]] = []
    while True:
        while len(data) >= 5:
            kind, length = _HEADER.unpack_from(data)
            if len(data) < 1 + length:
                break
            messages.append((kind, data[5 : 1 + length]))
            data = data[1 + length :]
            if kind in (b"Z", b"E"):
                return messages
        chunk = sock.recv(65536)
        if not chunk:
            return messages
        data += chunk


def error_of(messages: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The fields of the ErrorResponse among ``messages`` (fails the test if none)."""
    errors = [parse_error(body) for kind, body in messages if kind == b"E"]
    assert errors, f"expected an ErrorResponse, got {[kind for kind, _ in messages]}"
    return errors[0]


def login_raw(
    address: tuple[str, int] | str, params: dict[str, str] | None = None
) -> list[tuple[bytes, bytes]]:
    """A plaintext startup message to the proxy; its answer up to ReadyForQuery or an error."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(address)
        sock.sendall(startup_packet(params or {"user": "someone", "database": "dev"}))
        return read_reply(sock)


def wait_for(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll ``condition`` until true; ``limit`` only guards against a hang."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def statement_running(sandbox: Sandbox, statement: str) -> bool:
    literal = "'" + statement.replace("'", "''") + "'"
    rows = sandbox.sql(
        # The statement is quoted as a literal above.
        f"select count(*) from pg_stat_activity where state = 'active' and query = {literal}",  # noqa: S608
        database="postgres",
    )
    return rows[0][0] == "1"
