"""``Proxy``: a local PostgreSQL listener that logs every client in with the broker's login.

Per client connection, on one asyncio loop in a background thread:

1. find who connected (the peer's uid, :mod:`rsauth.proxy._peer`) and decide:
   let in, ask for the local password, or refuse;
2. answer SSLRequest with TLS (a per-run certificate) or ``N``, GSSENCRequest
   with ``N``, and a CancelRequest by forwarding it upstream under the key it maps to;
3. read the startup message and answer AuthenticationOk (no password asked,
   unless the local password is required);
4. get the login from the broker (cache hit almost always) for the client's
   ``database``, open TLS ``verify-full`` to the endpoint and log in; a refused
   login is recovered once with a fresh one, as ``rsauth.connect`` does;
5. send the server's answers with the proxy's own BackendKeyData, then relay
   bytes both ways without reading them.

Anything that stops a session before the relay reaches the client as an
ErrorResponse whose message starts with "rsauth proxy:". Log lines never hold a
password.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import logging
import os
import secrets
import shutil
import socket
import ssl
import stat
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsauth._broker import Broker
from rsauth._config import resolve
from rsauth._credentials import Credentials
from rsauth._errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    RsauthError,
)
from rsauth._pgwire import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    MAX_STARTUP_PACKET,
    PROTOCOL_3_0,
    SSL_REQUEST,
    ProtocolViolation,
    authentication_request,
    backend_key_data,
    error_response,
    md5_response,
    negotiate_protocol_version,
    parse_startup_params,
)
from rsauth.proxy._link import Link
from rsauth.proxy._localtls import LocalTls
from rsauth.proxy._logins import Logins
from rsauth.proxy._metrics import Metrics
from rsauth.proxy._peer import NETLINK_AVAILABLE, is_loopback, tcp_peer_uid, unix_peer_uid
from rsauth.proxy._upstream import (
    Refused,
    ServerError,
    Unreachable,
    Upstream,
    cancel,
    open_upstream,
    tls_context,
)

__all__ = ["DEFAULT_PORT", "Proxy", "SessionRecord"]

log = logging.getLogger("rsauth.proxy")

DEFAULT_PORT = 5439
"""The port the proxy listens on when none is given (Redshift's own)."""
_INT32 = struct.Struct("!i")
_KEY = struct.Struct("!ii")
_CLOSE_GRACE = 1.0

# Startup parameters not passed upstream: the login is the proxy's (user), the
# database is passed separately, "replication" asks for a walsender Redshift does not
# have, and "_pq_." names are protocol extensions, not settings (PostgreSQL manual,
# "Message Formats", StartupMessage). Every other parameter is a run-time setting the
# client would have sent to Redshift directly, so it goes through as sent.
_NOT_FORWARDED = frozenset({"user", "database", "replication"})

# SQLSTATEs of the errors the proxy itself answers (PostgreSQL manual, Appendix A).
_INVALID_AUTHORIZATION = "28000"
_CANNOT_CONNECT = "08001"
_PROTOCOL_VIOLATION = "08P01"
_FEATURE_NOT_SUPPORTED = "0A000"
_INTERNAL = "XX000"


@dataclass(frozen=True)
class SessionRecord:
    """One client session, as logged when it ends (``error``: why it never reached
    the database, else ``None``)."""

    who: str
    client_user: str
    user: str
    database: str
    seconds: float
    bytes_in: int
    bytes_out: int
    error: str | None = None

    def line(self) -> str:
        """The record as the log line the proxy writes when the session ends."""
        as_user = f" as {self.user}" if self.user else ""
        client = f" ({self.client_user!r})" if self.client_user else ""
        head = f"session {self.who}{client}{as_user} database {self.database or '-'}"
        if self.error is not None:
            return f"{head}: refused after {self.seconds:.3f} s: {self.error}"
        return (
            f"{head}: {self.seconds:.1f} s, {self.bytes_in} bytes in, "
            f"{self.bytes_out} bytes out"
        )


class _Refusal(Exception):
    """The session ends with an ErrorResponse ``sqlstate``/``text`` sent to the client."""

    def __init__(self, sqlstate: str, text: str, raw: bytes | None = None) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate
        self.text = text
        self.raw = raw


@dataclass
class _Session:
    link: Link
    who: str
    uid: int | None
    tls: bool = False
    client_user: str = ""
    user: str = ""
    database: str = ""


class Proxy:
    """A local authenticating proxy for one workgroup (or custom domain).

    Login settings are those of :func:`rsauth.connect` (``database`` is the default
    for clients that name none). ``address``/``port`` is the TCP listener (port 0
    picks a free one; ``address=None``: none), ``unix_socket`` a directory for a
    Unix socket ``.s.PGSQL.<port>`` (made 0700). Only the user running the proxy
    is let in (``allow_any_local_user=True`` turns that off); where the peer's
    uid cannot be found, or the address is not loopback, clients must send the
    local password (``local_password_file``, else a random one written to
    :attr:`local_password_path`). ``broker``: share one (default: a new Broker,
    closed with the proxy). Use as a context manager, or ``start()``/``close()``.
    """

    def __init__(
        self,
        *,
        workgroup: str | None = None,
        custom_domain: str | None = None,
        database: str | None = None,
        method: str | None = None,
        duration: int | None = None,
        secret_id: str | None = None,
        role_arn: str | None = None,
        db_roles: Sequence[str] | None = None,
        region: str | None = None,
        profile: str | None = None,
        fallback: bool | None = None,
        address: str | None = "127.0.0.1",
        port: int = 0,
        unix_socket: str | os.PathLike[str] | None = None,
        local_tls: bool = True,
        local_password_file: str | os.PathLike[str] | None = None,
        allow_any_local_user: bool = False,
        drain: float = 10.0,
        handshake_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        broker: Broker | None = None,
        on_session: Callable[[SessionRecord], None] | None = None,
    ) -> None:
        given = {
            "workgroup": workgroup,
            "custom_domain": custom_domain,
            "database": database,
            "method": method,
            "duration": duration,
            "secret_id": secret_id,
            "role_arn": role_arn,
            "db_roles": db_roles,
            "region": region,
            "profile": profile,
            "fallback": fallback,
        }
        settings = {name: value for name, value in given.items() if value is not None}
        options = resolve(settings, os.environ)  # a bad value fails here, before listening
        if options.method == "password":
            raise ConfigurationError(
                "method='password' has nothing to broker; the proxy logs in with "
                "method= iam, secret or superuser (or auto)"
            )
        if address is None and unix_socket is None:
            raise ConfigurationError("the proxy needs address= (TCP) or unix_socket= (or both)")
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port={port} is not a TCP port (0-65535; 0 picks one)")
        self.target = options.target
        self.name = options.workgroup or options.custom_domain or options.target
        self._settings = settings
        self._requested_address = address
        self._requested_port = port
        self._unix_dir = Path(unix_socket) if unix_socket is not None else None
        self._local_tls_wanted = local_tls
        self._password_file = Path(local_password_file) if local_password_file else None
        self.allow_any_local_user = allow_any_local_user
        self.drain = drain
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self._owns_broker = broker is None
        self._broker = broker
        self._on_session = on_session
        self.metrics = Metrics()
        self._uid = os.getuid() if hasattr(os, "getuid") else None
        self._ready = threading.Event()
        self._private_dir: Path | None = None
        self._local_tls: LocalTls | None = None
        self._local_password: bytes | None = None
        self.local_password_path: Path | None = None
        self._uid_checkable = False
        self._listeners: list[tuple[socket.socket, str]] = []
        self._port: int | None = None
        self.unix_socket_path: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._accepting: list[asyncio.Task[None]] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self._prefetch: asyncio.Task[None] | None = None
        # The proxy's BackendKeyData (pid, secret) → (host, port, upstream key); loop only.
        self._keys: dict[bytes, tuple[str, int, bytes]] = {}
        self._logins: Logins | None = None
        # Every link (client and upstream), so that shutdown can abort what a session left
        # half-closed.
        self._links: weakref.WeakSet[Link] = weakref.WeakSet()
        self._upstream_tls: ssl.SSLContext | None = None

    # ----------------------------------------------------------------- properties

    @property
    def address(self) -> str | None:
        """The TCP address listened on (``None``: Unix socket only)."""
        return self._requested_address

    @property
    def port(self) -> int:
        """The TCP port listened on (the one picked, for ``port=0``)."""
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate clients verify the proxy with (``None``: local TLS off)."""
        return self._local_tls.ca_path if self._local_tls is not None else None

    @property
    def ready(self) -> bool:
        """A login for this target came from AWS (no database session is needed for that)."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for :attr:`ready`; returns whether it is."""
        return self._ready.wait(timeout)

    @property
    def password_required(self) -> bool:
        """Whether TCP clients must send the local password (their uid cannot be checked)."""
        return self._local_password is not None and not self._uid_checkable

    def describe(self) -> list[str]:
        """Where it listens, one line each: TCP, Unix socket, CA file, local password file."""
        lines = []
        if self._requested_address is not None:
            host = self._requested_address
            shown = f"[{host}]" if ":" in host else host
            lines.append(f"listening on {shown}:{self.port}")
        if self.unix_socket_path is not None:
            lines.append(f"listening on {self.unix_socket_path}")
        if self.ca_path is not None:
            lines.append(f"local TLS CA certificate: {self.ca_path}")
        if self.local_password_path is not None:
            lines.append(f"local password file: {self.local_password_path}")
        return lines

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Proxy:
        """Listen and serve in a thread of its own; returns itself."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        try:
            self._prepare()
        except BaseException:
            self._release()
            raise
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet_exception_handler)
        self._loop = loop
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"rsauth-proxy-{self.name}", daemon=True)
        self._thread.start()
        started.wait()
        asyncio.run_coroutine_threadsafe(self._begin(), loop).result()
        for line in self.describe():
            log.info("%s: %s", self.name, line)
        return self

    def _prepare(self) -> None:
        if self.allow_any_local_user:
            log.warning(
                "%s: any local user may connect (allow_any_local_user): every process on "
                "this machine can use this login",
                self.name,
            )
        self._private_dir = Path(tempfile.mkdtemp(prefix="rsauth-proxy-"))
        if self._local_tls_wanted:
            names = [self._requested_address] if self._requested_address else []
            self._local_tls = LocalTls(names, directory=str(self._private_dir))
        self._upstream_tls = tls_context()
        if self._broker is None:
            self._broker = Broker()
        self._logins = Logins(self._broker, self._settings)
        if self._requested_address is not None:
            self._listen_tcp(self._requested_address, self._requested_port)
        if self._unix_dir is not None:
            self._listen_unix(self._unix_dir, self._port or self._requested_port or DEFAULT_PORT)
        self._choose_local_password()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix=f"rsauth-proxy-{self.name}-login"
        )

    def _listen_tcp(self, address: str, port: int) -> None:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(where)
            listener.listen(512)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise ConfigurationError(
                f"cannot listen on {address}:{port}: {exc.strerror or exc}"
            ) from exc
        self._listeners.append((listener, "tcp"))
        self._port = int(listener.getsockname()[1])

    def _listen_unix(self, directory: Path, port: int) -> None:
        if directory.exists():
            info = directory.stat()
            if not stat.S_ISDIR(info.st_mode):
                raise ConfigurationError(f"unix_socket={str(directory)!r} is not a directory")
            if info.st_mode & 0o077 or (self._uid is not None and info.st_uid != self._uid):
                raise ConfigurationError(
                    f"unix_socket={str(directory)!r} is open to other users (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); use a directory only you can enter "
                    "(chmod 700) or a path that does not exist yet"
                )
        else:
            directory.mkdir(mode=0o700, parents=True)
        path = directory / f".s.PGSQL.{port}"
        if path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left by a proxy that died
            else:
                raise ConfigurationError(f"another server is listening on {path}")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(512)
        listener.setblocking(False)
        self._listeners.append((listener, "unix"))
        self.unix_socket_path = path
        if self._port is None:
            self._port = port

    def _choose_local_password(self) -> None:
        tcp = self._requested_address is not None
        uid_known = tcp and is_loopback(self._requested_address or "") and NETLINK_AVAILABLE
        self._uid_checkable = uid_known
        if self._password_file is not None:
            try:
                text = self._password_file.read_text().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"local_password_file={str(self._password_file)!r} cannot be read: "
                    f"{exc.strerror or exc}"
                ) from exc
            if not text:
                raise ConfigurationError(
                    f"local_password_file={str(self._password_file)!r} is empty"
                )
            self._local_password = text.encode()
            self.local_password_path = self._password_file
        elif tcp and not uid_known and not self.allow_any_local_user:
            assert self._private_dir is not None
            path = self._private_dir / "local-password"
            password = secrets.token_urlsafe(24)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(password + "\n")
            self._local_password = password.encode()
            self.local_password_path = path
        if tcp and not uid_known and not self.allow_any_local_user:
            why = (
                f"address {self._requested_address} is not loopback"
                if not is_loopback(self._requested_address or "")
                else "this system cannot tell which local user opened a TCP connection"
            )
            log.info("%s: TCP clients must send the local password (%s)", self.name, why)

    async def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        for listener, kind in self._listeners:
            self._accepting.append(loop.create_task(self._accept_loop(listener, kind)))
        self._prefetch = loop.create_task(self._become_ready())

    def close(self, drain: float | None = None) -> None:
        """Stop accepting, let open sessions finish for ``drain`` seconds (default
        :attr:`drain`), then close what is left."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            grace = self.drain if drain is None else drain
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop).result(grace + 10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            if not thread.is_alive():
                loop.close()
        self._loop = self._thread = None
        self._release()

    def _release(self) -> None:
        for listener, _ in self._listeners:
            listener.close()
        self._listeners = []
        if self.unix_socket_path is not None:
            with contextlib.suppress(OSError):
                self.unix_socket_path.unlink()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._owns_broker and self._broker is not None:
            self._broker.close()
            self._broker = None
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    async def _shutdown(self, grace: float) -> None:
        for task in self._accepting:
            task.cancel()
        if self._prefetch is not None:
            self._prefetch.cancel()
        for listener, _ in self._listeners:
            listener.close()
        sessions = list(self._sessions)
        if sessions:
            log.info(
                "%s: draining %d open session(s) for up to %.0f s", self.name, len(sessions), grace
            )
            _, pending = await asyncio.wait(sessions, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for link in list(self._links):
            if not link.is_closed:
                link.abort()
        # Aborted transports close their sockets in callbacks; let those run.
        for _ in range(5):
            await asyncio.sleep(0)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, float]:
        """Counters: sessions, bytes each way, logins, connect latency (see ``/metrics``)."""
        return self.metrics.snapshot()

    # ----------------------------------------------------------------- readiness

    async def _become_ready(self) -> None:
        """Fetch a login once at start (a login from AWS, never a database session) and
        retry with backoff until one succeeds; readiness says it did."""
        loop = asyncio.get_running_loop()
        delay = 1.0
        while not self._ready.is_set():
            try:
                await loop.run_in_executor(self._executor, self._current, None)
            except RsauthError as exc:
                log.warning("%s: no login yet: %s (retrying in %.0f s)", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
            except Exception:
                log.exception("%s: fetching the first login failed", self.name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _current(self, database: str | None) -> Credentials:
        assert self._logins is not None
        try:
            credentials = self._logins.current(database)
        except RsauthError:
            self.metrics.add("logins_failed")
            raise
        self.metrics.add("logins_fetched")
        self._ready.set()
        return credentials

    # ----------------------------------------------------------------- sessions

    async def _accept_loop(self, listener: socket.socket, kind: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError:
                log.debug("accept failed", exc_info=True)
                await asyncio.sleep(0.05)
                continue
            task = loop.create_task(self._serve(sock, address, kind))
            self._sessions.add(task)
            task.add_done_callback(self._sessions.discard)

    def _identify(self, sock: socket.socket, address: Any, kind: str) -> tuple[str, int | None]:
        if kind == "unix":
            uid = unix_peer_uid(sock)
            return (f"uid {uid}" if uid is not None else "a local process"), uid
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        where = f"{address[0]}:{address[1]}"
        # Off loopback the local password is the check, whoever the peer is.
        uid = tcp_peer_uid(sock) if is_loopback(self._requested_address or "") else None
        return (f"uid {uid}" if uid is not None else where), uid

    async def _serve(self, sock: socket.socket, address: Any, kind: str) -> None:
        loop = asyncio.get_running_loop()
        began = time.monotonic()
        who, uid = self._identify(sock, address, kind)
        link = Link()
        try:
            await loop.connect_accepted_socket(lambda: link, sock)
        except OSError:
            sock.close()
            return
        self._links.add(link)
        session = _Session(link, who, uid)
        upstream: Upstream | None = None
        error: str | None = None
        try:
            try:
                params = await asyncio.wait_for(
                    self._startup(session, kind), self.handshake_timeout
                )
                if params is None:
                    return
                await asyncio.wait_for(self._admit(session, kind), self.handshake_timeout)
                upstream = await self._login(session, params)
            except asyncio.TimeoutError:
                raise _Refusal(
                    _PROTOCOL_VIOLATION,
                    f"rsauth proxy: the client did not log in within {self.handshake_timeout:g} s",
                ) from None
            except ProtocolViolation as exc:
                raise _Refusal(_PROTOCOL_VIOLATION, f"rsauth proxy: {exc}") from None
            self.metrics.observe_latency(time.monotonic() - began)
            await self._relay(session, upstream)
        except _Refusal as refusal:
            error = refusal.text
            self.metrics.add("sessions_refused")
            with contextlib.suppress(Exception):
                link.write(refusal.raw or error_response("FATAL", refusal.sqlstate, refusal.text))
            log.debug("%s: refused %s: %s", self.name, who, refusal.sqlstate)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            error = f"connection lost ({type(exc).__name__})"
        except asyncio.CancelledError:
            link.abort()
            if upstream is not None:
                upstream.link.abort()
            raise
        except Exception as exc:
            error = f"internal error ({type(exc).__name__})"
            log.exception("%s: session failed", self.name)
            with contextlib.suppress(Exception):
                link.write(error_response("FATAL", _INTERNAL, f"rsauth proxy: {error}"))
        finally:
            if upstream is not None:
                upstream.link.abort()
            await _close(link)
        if session.client_user or upstream is not None or error:
            self._record(session, began, upstream, error)

    def _record(
        self, session: _Session, began: float, upstream: Upstream | None, error: str | None
    ) -> None:
        record = SessionRecord(
            who=session.who,
            client_user=session.client_user,
            user=session.user,
            database=session.database,
            seconds=time.monotonic() - began,
            bytes_in=session.link.relayed,
            bytes_out=upstream.link.relayed if upstream is not None else 0,
            error=error if upstream is None else None,
        )
        log.info("%s: %s", self.name, record.line())
        if self._on_session is not None:
            try:
                self._on_session(record)
            except Exception:
                log.exception("%s: on_session failed", self.name)

    async def _startup(self, session: _Session, kind: str) -> dict[str, str] | None:
        """Answer SSL/GSS/cancel requests; the startup parameters, or None after a cancel."""
        link = session.link
        while True:
            header = await link.read_exact(4)
            length = _INT32.unpack(header)[0]
            if not 8 <= length <= MAX_STARTUP_PACKET:
                raise ProtocolViolation(
                    f"invalid startup packet length {length} (8 to {MAX_STARTUP_PACKET} bytes)"
                )
            body = await link.read_exact(length - 4)
            code = _INT32.unpack_from(body)[0]
            if code == SSL_REQUEST:
                if session.tls or kind == "unix" or self._local_tls is None:
                    link.write(b"N")
                    continue
                link.write(b"S")
                await self._start_tls(session)
            elif code == GSSENC_REQUEST:
                link.write(b"N")
            elif code == CANCEL_REQUEST:
                if length == 16:
                    await self._cancel(body[4:])
                return None
            elif code >> 16 == PROTOCOL_3_0 >> 16:
                try:
                    params = parse_startup_params(body[4:])
                except UnicodeDecodeError:
                    raise ProtocolViolation("the startup message is not UTF-8 text") from None
                session.client_user = params.get("user", "")
                session.database = params.get("database") or ""
                options = [name for name in params if name.startswith("_pq_.")]
                if code & 0xFFFF or options:
                    link.write(negotiate_protocol_version(options))
                return params
            else:
                raise _Refusal(
                    _FEATURE_NOT_SUPPORTED,
                    f"rsauth proxy: unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
                    "server supports 3.0 to 3.0",
                )

    async def _start_tls(self, session: _Session) -> None:
        assert self._local_tls is not None
        link = session.link
        assert link.transport is not None
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            link.transport,
            link,
            self._local_tls.context,
            server_side=True,
            ssl_handshake_timeout=self.handshake_timeout,
        )
        assert isinstance(transport, asyncio.Transport)
        link.transport = transport
        session.tls = True

    async def _admit(self, session: _Session, kind: str) -> None:
        """Let in only the user running the proxy (or a client with the local password)."""
        if self.allow_any_local_user:
            return
        if session.uid is not None:
            if session.uid == self._uid:
                return
            raise _Refusal(
                _INVALID_AUTHORIZATION,
                f"rsauth proxy: only uid {self._uid} (the user running the proxy) may connect; "
                f"this connection comes from uid {session.uid}",
            )
        if kind == "unix" or self._local_password is None:
            raise _Refusal(
                _INVALID_AUTHORIZATION,
                "rsauth proxy: could not tell which local user opened this connection; "
                "start the proxy with a local password (--local-password-file) to let "
                "such clients in",
            )
        await self._check_password(session)

    async def _check_password(self, session: _Session) -> None:
        assert self._local_password is not None
        link = session.link
        salt = b""
        if session.tls:
            link.write(authentication_request(AUTH_CLEARTEXT))
        else:
            # No TLS: never ask for the password in clear.
            salt = secrets.token_bytes(4)
            link.write(authentication_request(AUTH_MD5, salt))
        kind, body = await link.read_message()
        answer = body[:-1] if body.endswith(b"\0") else body
        expected = (
            self._local_password
            if session.tls
            else md5_response(session.client_user.encode(), self._local_password, salt)
        )
        if kind != b"p" or not hmac.compare_digest(answer, expected):
            raise _Refusal(
                _INVALID_AUTHORIZATION,
                f"rsauth proxy: wrong local password (the one in {self.local_password_path})",
            )

    async def _login(self, session: _Session, params: dict[str, str]) -> Upstream:
        assert self._logins is not None and self._upstream_tls is not None
        database = session.database or None
        forwarded = {
            name: value
            for name, value in params.items()
            if name not in _NOT_FORWARDED and not name.startswith("_pq_.")
        }
        credentials = await self._credentials(lambda: self._current(database))
        session.user, session.database = credentials.user, credentials.database
        for attempt in (1, 2):
            try:
                upstream = await open_upstream(
                    credentials, forwarded, self._upstream_tls, self.connect_timeout
                )
            except Refused as exc:
                self.metrics.add("logins_refused")
                self._logins.rejected(credentials)
                if attempt == 2:
                    raise _Refusal(
                        _INVALID_AUTHORIZATION,
                        f"rsauth proxy: the database at {self.target} refused the login of "
                        f"{credentials.user!r} twice, the second time with a freshly fetched "
                        f"login: {exc.fields.get('M', 'login refused')}",
                    ) from exc
                log.info(
                    "%s: the database refused the login of %s; fetching a fresh one",
                    self.name,
                    credentials.user,
                )
                credentials = await self._credentials(
                    functools.partial(self._logins.recover, database, credentials)
                )
                session.user = credentials.user
                continue
            except ServerError as exc:
                raise _Refusal(exc.fields.get("C", _INTERNAL), str(exc), exc.raw or None) from exc
            except (Unreachable, asyncio.TimeoutError) as exc:
                text = str(exc) or f"no answer within {self.connect_timeout:g} s"
                raise _Refusal(
                    _CANNOT_CONNECT, f"rsauth proxy: {self.target}: {text}"
                ) from exc
            self._links.add(upstream.link)
            self._logins.accepted(credentials)
            return upstream
        raise AssertionError("unreachable")

    async def _credentials(self, fetch: Callable[[], Credentials]) -> Credentials:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fetch)
        except RsauthError as exc:
            sqlstate = (
                _INVALID_AUTHORIZATION
                if isinstance(exc, AccessDeniedError | AuthenticationError | ConfigurationError)
                else _CANNOT_CONNECT
            )
            raise _Refusal(sqlstate, f"rsauth proxy: no login for {self.target}: {exc}") from exc

    async def _relay(self, session: _Session, upstream: Upstream) -> None:
        client = session.link
        key = self._new_key(upstream)
        answers = upstream.answers
        client.write(
            authentication_request(AUTH_OK)
            + b"".join(answers[:-1])
            + (backend_key_data(*_KEY.unpack(key)) if upstream.key is not None else b"")
            + answers[-1]
        )
        self.metrics.add("sessions_total")
        self.metrics.add("sessions_open")
        try:
            client.join(upstream.link)
            upstream.link.join(client)
            await client.closed()
            await upstream.link.closed()
        finally:
            self._keys.pop(key, None)
            self.metrics.add("sessions_open", -1)
            self.metrics.add("bytes_client_to_server", client.relayed)
            self.metrics.add("bytes_server_to_client", upstream.link.relayed)

    def _new_key(self, upstream: Upstream) -> bytes:
        while True:
            pid = secrets.randbelow(2**31 - 1) + 1
            key = _KEY.pack(pid, secrets.randbits(31))
            if key not in self._keys:
                break
        if upstream.key is not None:
            self._keys[key] = (upstream.host, upstream.port, upstream.key)
        return key

    async def _cancel(self, key: bytes) -> None:
        target = self._keys.get(key)
        if target is None:
            log.debug("%s: ignoring a cancel request for an unknown session", self.name)
            return
        host, port, upstream_key = target
        assert self._upstream_tls is not None
        log.debug("%s: forwarding a cancel request", self.name)
        try:
            await cancel(host, port, upstream_key, self._upstream_tls, self.connect_timeout)
        except (Unreachable, OSError, asyncio.TimeoutError) as exc:
            log.warning("%s: could not forward a cancel request: %s", self.name, exc)


async def _close(link: Link) -> None:
    """Close the client's side (a TLS close_notify first), then abort what is left: like
    PostgreSQL, the proxy does not wait long for the client's answering close_notify."""
    if link.transport is None:
        return
    link.close()
    try:
        await asyncio.wait_for(link.closed(), _CLOSE_GRACE)
    except asyncio.CancelledError:
        link.abort()
        raise
    except Exception:
        link.abort()


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """What asyncio reports about dying client transports, at debug level."""
    exc = context.get("exception")
    if isinstance(exc, OSError | ssl.SSLError | ConnectionError):
        log.debug("transport error: %s", type(exc).__name__)
        return
    log.warning(
        "proxy event loop: %s",
        context.get("message"),
        exc_info=exc if isinstance(exc, BaseException) else None,
    )
