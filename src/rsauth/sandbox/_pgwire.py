"""The sandbox's own uses of the PostgreSQL wire protocol: its admin session and quoting.

The framing itself (messages, the startup packet, errors) is :mod:`rsauth._pgwire`,
shared with the proxy; it is re-exported here for the sandbox's modules.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass

from rsauth._pgwire import (
    AUTH_MD5,
    AUTH_OK,
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    PROTOCOL_3_0,
    SSL_REQUEST,
    PgError,
    ProtocolViolation,
    authentication_request,
    complete_prefix,
    cstr,
    error_fields,
    error_response,
    message,
    parameter_status,
    parse_error,
    parse_parameter_status,
    parse_startup_params,
    recv_exact,
    recv_message,
    startup_packet,
)

__all__ = [
    "AUTH_MD5",
    "AUTH_OK",
    "CANCEL_REQUEST",
    "GSSENC_REQUEST",
    "PROTOCOL_3_0",
    "SSL_REQUEST",
    "AdminSession",
    "PgError",
    "ProtocolViolation",
    "QueryResult",
    "authentication_request",
    "complete_prefix",
    "cstr",
    "data_row",
    "error_fields",
    "error_response",
    "message",
    "parameter_status",
    "parse_error",
    "parse_parameter_status",
    "parse_startup_params",
    "quote_ident",
    "quote_literal",
    "recv_exact",
    "recv_message",
    "startup_packet",
]

_INT32 = struct.Struct("!i")


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[str | None, ...]]


def _row_description(body: bytes) -> list[str]:
    count = struct.unpack_from("!h", body)[0]
    names: list[str] = []
    offset = 2
    for _ in range(count):
        end = body.index(b"\0", offset)
        names.append(body[offset:end].decode())
        offset = end + 1 + 18  # table oid, column no, type oid, size, modifier, format
    return names


def data_row(body: bytes) -> tuple[str | None, ...]:
    """The values of a DataRow ('D') message, as text (None for NULL)."""
    count = struct.unpack_from("!h", body)[0]
    values: list[str | None] = []
    offset = 2
    for _ in range(count):
        size = _INT32.unpack_from(body, offset)[0]
        offset += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[offset : offset + size].decode())
            offset += size
    return tuple(values)


class AdminSession:
    """A blocking simple-query session over PostgreSQL's Unix socket (trust auth).

    The sandbox uses it to create databases, roles and grants; it is never
    reachable from outside the sandbox.
    """

    def __init__(self, socket_path: str, *, user: str = "postgres", database: str = "postgres"):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(30)
            self._sock.connect(socket_path)
            self._sock.sendall(startup_packet({"user": user, "database": database}))
            self._drain()
        except BaseException:
            self._sock.close()
            raise

    def _drain(self) -> QueryResult:
        columns: list[str] = []
        rows: list[tuple[str | None, ...]] = []
        error: PgError | None = None
        while True:
            kind, body = recv_message(self._sock)
            if kind == b"R" and _INT32.unpack_from(body)[0] != 0:
                raise PgError({"C": "28000", "M": "admin session needs trust authentication"})
            if kind == b"T":
                columns = _row_description(body)
            elif kind == b"D":
                rows.append(data_row(body))
            elif kind == b"E":
                error = PgError(parse_error(body))
                if error.fields.get("V", error.fields.get("S")) == "FATAL":
                    raise error
            elif kind == b"Z":
                if error is not None:
                    raise error
                return QueryResult(columns, rows)

    def execute(self, sql: str) -> QueryResult:
        """Run one or more statements; the last result set is returned."""
        self._sock.sendall(message(b"Q", cstr(sql)))
        return self._drain()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(message(b"X"))
        self._sock.close()

    def __enter__(self) -> AdminSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
