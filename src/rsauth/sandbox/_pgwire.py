"""The few pieces of the PostgreSQL wire protocol (version 3.0) the sandbox speaks.

Messages after startup are one type byte, an int32 length that counts itself,
and a body. The startup packet has no type byte. See the PostgreSQL manual,
"Frontend/Backend Protocol", "Message Formats".
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

_INT32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")


class PgError(Exception):
    """An ErrorResponse from PostgreSQL, with its fields (``C`` is the SQLSTATE)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        super().__init__(f"{fields.get('C', '?????')}: {fields.get('M', '')}")

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", "")


def message(kind: bytes, body: bytes = b"") -> bytes:
    """Frame one backend or frontend message."""
    return _HEADER.pack(kind, len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def startup_packet(params: Mapping[str, str]) -> bytes:
    body = _INT32.pack(PROTOCOL_3_0)
    body += b"".join(cstr(key) + cstr(value) for key, value in params.items()) + b"\0"
    return _INT32.pack(len(body) + 4) + body


def parse_startup_params(body: bytes) -> dict[str, str]:
    """Parse the key/value pairs of a startup packet body (after the protocol code)."""
    parts = body.split(b"\0")
    params: dict[str, str] = {}
    for key, value in zip(parts[0::2], parts[1::2], strict=False):
        if not key:
            break
        params[key.decode()] = value.decode()
    return params


def error_fields(fields: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(code.encode() + cstr(value) for code, value in fields) + b"\0"


def error_response(severity: str, sqlstate: str, text: str) -> bytes:
    """An ErrorResponse ('E') message as a server sends it."""
    return message(
        b"E",
        error_fields([("S", severity), ("V", severity), ("C", sqlstate), ("M", text)]),
    )


def parse_error(body: bytes) -> dict[str, str]:
    return {
        part[:1].decode(): part[1:].decode(errors="replace") for part in body.split(b"\0") if part
    }


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def parse_parameter_status(body: bytes) -> tuple[str, str]:
    name, value, _ = body.split(b"\0", 2)
    return name.decode(), value.decode()


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by PostgreSQL")
        chunks += chunk
    return bytes(chunks)


def recv_message(sock: socket.socket) -> tuple[bytes, bytes]:
    kind, length = _HEADER.unpack(recv_exact(sock, 5))
    return kind, recv_exact(sock, length - 4)


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


# --- Added for the wire front (_front.py). ---

AUTH_OK = 0
AUTH_MD5 = 5


def authentication_request(code: int, extra: bytes = b"") -> bytes:
    """An Authentication ('R') message: ``code`` 0 is AuthenticationOk, 5 asks for MD5."""
    return message(b"R", _INT32.pack(code) + extra)


class ProtocolViolation(Exception):
    """A peer sent bytes that are not PostgreSQL protocol messages."""


def complete_prefix(data: bytes | bytearray, start: int = 0) -> int:
    """The offset where the last complete message in ``data[start:]`` ends.

    Walks the framing message by message (type byte, int32 length counting
    itself) without copying; bytes after the returned offset are an
    incomplete message still to be read.
    """
    offset = start
    size = len(data)
    while offset + 5 <= size:
        length = _INT32.unpack_from(data, offset + 1)[0]
        if length < 4:
            raise ProtocolViolation(f"message length {length} is below the minimum of 4")
        end = offset + 1 + length
        if end > size:
            break
        offset = end
    return offset
