"""The proxy's side towards Redshift: TLS ``verify-full``, then the login itself.

As ``redshift_connector`` does it (``core.py``, ``Connection.__init__`` and
``handle_AUTHENTICATION_REQUEST``): an SSLRequest, the TLS handshake checking
the certificate and the host name against the CA bundle it trusts
(``SSL_CERT_FILE`` or the system store, plus the Redshift CA bundle the driver
ships), the startup message, then whichever password exchange the server asks
for: cleartext (3), MD5 (5), SCRAM-SHA-256 (10-12) or Redshift's extensible
digest (13). The server's answers up to ReadyForQuery are collected for the
client.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redshift_connector

from rsauth._credentials import Credentials
from rsauth._pgwire import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    CANCEL_REQUEST,
    SSL_REQUEST,
    cstr,
    md5_response,
    message,
    parse_error,
    startup_packet,
)
from rsauth.proxy._link import Link

__all__ = [
    "LOGIN_REFUSED",
    "Refused",
    "ServerError",
    "Unreachable",
    "Upstream",
    "cancel",
    "open_upstream",
    "tls_context",
]

_INT32 = struct.Struct("!i")
_AUTH_DIGEST = 13
# SQLSTATE invalid_authorization_specification and invalid_password.
LOGIN_REFUSED = frozenset({"28000", "28P01"})


class Unreachable(Exception):
    """No TLS session with the endpoint (network or certificate); never a secret inside."""


class ServerError(Exception):
    """The server answered the login with an ErrorResponse (``fields``, ``raw`` as sent)."""

    def __init__(self, fields: Mapping[str, str], raw: bytes) -> None:
        super().__init__(f"{fields.get('C', '')}: {fields.get('M', '')}")
        self.fields = dict(fields)
        self.raw = raw


class Refused(ServerError):
    """The server refused the login (SQLSTATE 28000 or 28P01)."""


@dataclass
class Upstream:
    """A logged-in upstream session: its link, its startup answers (minus the
    BackendKeyData) and that key, for CancelRequest."""

    link: Link
    answers: list[bytes]
    key: bytes | None
    host: str
    port: int


@functools.lru_cache(maxsize=4)
def _bundle() -> str | None:
    path = Path(redshift_connector.__file__).parent / "files" / "redshift-ca-bundle.crt"
    return str(path) if path.is_file() else None


def tls_context() -> ssl.SSLContext:
    """What redshift_connector trusts with ``sslmode="verify-full"``: the default
    verify paths (``SSL_CERT_FILE`` honoured) and its Redshift CA bundle, host name checked."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    bundle = _bundle()
    if bundle is not None:
        context.load_verify_locations(bundle)
    return context


async def _tls_socket(
    host: str, port: int, context: ssl.SSLContext, link: Link, timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unreachable(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    failure: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_sendall(sock, _INT32.pack(8) + _INT32.pack(SSL_REQUEST))
            answer = await loop.sock_recv(sock, 1)
            if answer != b"S":
                sock.close()
                if not answer:
                    raise Unreachable(
                        f"{host}:{port} closed the connection before answering (refused)"
                    )
                raise Unreachable(f"{host}:{port} does not offer TLS (answered {answer!r})")
            await loop.create_connection(
                lambda: link, sock=sock, ssl=context, server_hostname=host,
                ssl_handshake_timeout=timeout,
            )
            return
        except ssl.SSLError as exc:
            sock.close()
            raise Unreachable(
                f"TLS to {host}:{port} failed ({exc.reason or type(exc).__name__}): the "
                "server certificate was not accepted; check SSL_CERT_FILE (the CA bundle) "
                "and the host name"
            ) from exc
        except OSError as exc:
            sock.close()
            failure = exc
    raise Unreachable(
        f"could not reach {host}:{port} ({failure.strerror if failure else 'no address'}); "
        "check the network path (VPC, security group, publicly accessible)"
    ) from failure


async def open_upstream(
    credentials: Credentials,
    params: Mapping[str, str],
    context: ssl.SSLContext,
    timeout: float,
) -> Upstream:
    """A session logged in as ``credentials`` with the client's startup ``params``."""
    link = Link()
    host, port = credentials.host, credentials.port
    try:
        await asyncio.wait_for(_tls_socket(host, port, context, link, timeout), timeout)
        startup = {**params, "user": credentials.user, "database": credentials.database}
        link.write(startup_packet(startup))
        answers, key = await asyncio.wait_for(_login(link, credentials), timeout)
    except BaseException:
        link.abort()
        raise
    return Upstream(link, answers, key, host, port)


async def _login(link: Link, credentials: Credentials) -> tuple[list[bytes], bytes | None]:
    user = credentials.user.encode()
    password = credentials.password.encode()
    answers: list[bytes] = []
    key: bytes | None = None
    scram = None
    while True:
        kind, body = await link.read_message()
        if kind == b"R":
            code = _INT32.unpack_from(body)[0]
            if code == AUTH_OK:
                continue
            if code == AUTH_CLEARTEXT:
                link.write(message(b"p", password + b"\0"))
            elif code == AUTH_MD5:
                link.write(message(b"p", md5_response(user, password, body[4:8]) + b"\0"))
            elif code == AUTH_SASL:
                from scramp import ScramClient

                mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
                scram = ScramClient(mechanisms, credentials.user, credentials.password)
                first = scram.get_client_first().encode()
                link.write(
                    message(
                        b"p", cstr(scram.mechanism_name) + _INT32.pack(len(first)) + first
                    )
                )
            elif code == AUTH_SASL_CONTINUE and scram is not None:
                scram.set_server_first(body[4:].decode())
                link.write(message(b"p", scram.get_client_final().encode()))
            elif code == AUTH_SASL_FINAL and scram is not None:
                scram.set_server_final(body[4:].decode())
            elif code == _AUTH_DIGEST:
                link.write(_digest_answer(body, password))
            else:
                raise ServerError(
                    {"C": "28000", "M": f"the server asked for authentication method {code}, "
                     "which the proxy does not speak"},
                    b"",
                )
        elif kind == b"E":
            fields = parse_error(body)
            raw = message(kind, body)
            if fields.get("C") in LOGIN_REFUSED:
                raise Refused(fields, raw)
            raise ServerError(fields, raw)
        elif kind == b"K":
            key = body
        else:
            answers.append(message(kind, body))
            if kind == b"Z":
                return answers, key


def _digest_answer(body: bytes, password: bytes) -> bytes:
    """Redshift's AUTH_REQ_DIGEST (13) answer, built as redshift_connector builds it
    (core.py, handle_AUTHENTICATION_REQUEST; utils/extensible_digest.py)."""
    import time

    from redshift_connector.utils.extensible_digest import ExtensibleDigest

    offset = 4
    algorithm = _INT32.unpack_from(body, offset)[0]
    offset += 4
    salt_size = _INT32.unpack_from(body, offset)[0]
    offset += 4
    salt = body[offset : offset + salt_size]
    offset += salt_size
    nonce_size = _INT32.unpack_from(body, offset)[0]
    offset += 4
    server_nonce = body[offset : offset + nonce_size]
    if algorithm != 0:
        raise ServerError(
            {"C": "28000", "M": f"the server asked for digest algorithm {algorithm}; only "
             "SHA256 (0) is spoken"},
            b"",
        )
    client_nonce = str(int(time.time() * 1000)).encode()
    digest: bytes = ExtensibleDigest.encode(
        client_nonce=client_nonce, password=password, salt=salt, algo_name="SHA256",
        server_nonce=server_nonce,
    )
    payload = _INT32.pack(len(digest)) + digest + _INT32.pack(len(client_nonce)) + client_nonce
    return message(b"d", payload)


async def cancel(host: str, port: int, key: bytes, context: ssl.SSLContext, timeout: float) -> None:
    """Forward a CancelRequest for upstream ``key`` over a new TLS connection."""
    link = Link()
    await asyncio.wait_for(_tls_socket(host, port, context, link, timeout), timeout)
    try:
        link.write(_INT32.pack(16) + _INT32.pack(CANCEL_REQUEST) + key)
        # The server closes the connection once it has read the request.
        await asyncio.wait_for(link.closed(), timeout)
    finally:
        link.abort()
