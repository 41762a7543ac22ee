"""PostgreSQL wire protocol (version 3.0) framing, shared by the proxy and the sandbox.

Messages after startup are one type byte, an int32 length that counts itself,
and a body. The startup packet, SSLRequest, GSSENCRequest and CancelRequest
have no type byte: an int32 length, then an int32 code. See the PostgreSQL
manual, "Frontend/Backend Protocol", "Message Formats"
(https://www.postgresql.org/docs/current/protocol-message-formats.html).
"""

from __future__ import annotations

import hashlib
import socket
import struct
from collections.abc import Iterable, Mapping

__all__ = [
    "AUTH_CLEARTEXT",
    "AUTH_MD5",
    "AUTH_OK",
    "AUTH_SASL",
    "AUTH_SASL_CONTINUE",
    "AUTH_SASL_FINAL",
    "CANCEL_REQUEST",
    "GSSENC_REQUEST",
    "MAX_STARTUP_PACKET",
    "PROTOCOL_3_0",
    "SSL_REQUEST",
    "PgError",
    "ProtocolViolation",
    "authentication_request",
    "backend_key_data",
    "complete_prefix",
    "cstr",
    "error_fields",
    "error_response",
    "md5_response",
    "message",
    "negotiate_protocol_version",
    "parameter_status",
    "parse_error",
    "parse_parameter_status",
    "parse_startup_params",
    "recv_exact",
    "recv_message",
    "startup_packet",
]

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

# Authentication request codes ("AuthenticationOk", "AuthenticationCleartextPassword", ...).
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# PostgreSQL's own cap on a startup packet (MAX_STARTUP_PACKET_LENGTH, src/include/libpq/pqcomm.h).
MAX_STARTUP_PACKET = 10_000

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


class ProtocolViolation(Exception):
    """A peer sent bytes that are not PostgreSQL protocol messages."""


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


def authentication_request(code: int, extra: bytes = b"") -> bytes:
    """An Authentication ('R') message: ``code`` 0 is AuthenticationOk, 5 asks for MD5."""
    return message(b"R", _INT32.pack(code) + extra)


def backend_key_data(pid: int, secret: int) -> bytes:
    """A BackendKeyData ('K') message: the key a CancelRequest must quote."""
    return message(b"K", struct.pack("!ii", pid, secret))


def negotiate_protocol_version(options: Iterable[str]) -> bytes:
    """NegotiateProtocolVersion ('v'): the newest minor version spoken is 0 (3.0), and
    ``options`` (``_pq_.*`` startup parameters) are not understood."""
    names = list(options)
    body = _INT32.pack(0) + _INT32.pack(len(names))
    return message(b"v", body + b"".join(cstr(name) for name in names))


def md5_response(user: bytes, password: bytes, salt: bytes) -> bytes:
    """What a client answers to AuthenticationMD5Password, without the closing NUL:
    ``"md5" + md5hex(md5hex(password + user) + salt)`` (manual, "Password Authentication")."""
    inner = hashlib.md5(password + user, usedforsecurity=False).hexdigest().encode("ascii")
    return b"md5" + hashlib.md5(inner + salt, usedforsecurity=False).hexdigest().encode("ascii")


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


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the peer")
        chunks += chunk
    return bytes(chunks)


def recv_message(sock: socket.socket) -> tuple[bytes, bytes]:
    kind, length = _HEADER.unpack(recv_exact(sock, 5))
    if length < 4:
        raise ProtocolViolation(f"message length {length} is below the minimum of 4")
    return kind, recv_exact(sock, length - 4)
