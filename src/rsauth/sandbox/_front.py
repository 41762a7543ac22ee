"""The sandbox's wire front: what ``redshift_connector`` meets on the database port.

A TLS-terminating proxy in front of PostgreSQL (SANDBOX-SPEC.md, "Database
front"). Per client connection it

1. answers the first packet: SSLRequest → ``S`` and a server-side TLS
   handshake; GSSENCRequest → ``N``; CancelRequest → forwarded to PostgreSQL
   when it names a live session of this front; a plaintext startup → refused
   when TLS is required;
2. keeps only an allowlist of startup parameters (the driver sends
   ``client_protocol_version``, ``driver_version``, ``os_version``, … which
   PostgreSQL rejects);
3. checks the password itself with MD5 against every password the
   :class:`PasswordStore` holds for the user, because Redshift accepts every
   unexpired temporary password of a user while a PostgreSQL role holds one;
4. creates the user at first login (belonging only to PUBLIC) and grants the
   password's existing ``db_roles``, opens the PostgreSQL session over the Unix
   socket (trust), relays its startup answers with ``server_version`` set to
   Redshift's, then relays both directions message by message.

Each workgroup has its own port (:meth:`Front.listen`, :attr:`Front.routes`), and
each custom domain its own certificate, chosen by the name the client asks for
(SNI). Sessions are never re-checked, so they outlive their password as on Redshift.
Faults (refuse, reset, reset mid-handshake, delay) are injected through
:attr:`Front.faults`; a workgroup that sleeps (:attr:`Front.idle`) holds the
answer to a connection's first packet while it resumes. Log lines name events and
users, never passwords.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import logging
import random
import secrets
import socket
import ssl
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rsauth._pgwire import md5_response, negotiate_protocol_version
from rsauth.sandbox._idle import IdleResume
from rsauth.sandbox._passwords import PasswordStore
from rsauth.sandbox._pgwire import (
    AUTH_MD5,
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    PROTOCOL_3_0,
    SSL_REQUEST,
    AdminSession,
    PgError,
    ProtocolViolation,
    authentication_request,
    complete_prefix,
    error_response,
    message,
    parameter_status,
    parse_error,
    parse_parameter_status,
    parse_startup_params,
    quote_ident,
    quote_literal,
    startup_packet,
)
from rsauth.sandbox._version import REDSHIFT_SERVER_VERSION

if TYPE_CHECKING:
    from rsauth.sandbox._copy import CopyUnload

log = logging.getLogger("rsauth.sandbox.front")


# Startup parameters passed on to PostgreSQL, compared in lower case (PostgreSQL
# treats setting names case-insensitively). Everything else is dropped.
ALLOWED_STARTUP_PARAMETERS = frozenset(
    {
        "user",
        "database",
        "application_name",
        "replication",
        "options",
        "client_encoding",
        "datestyle",
        "timezone",
        "intervalstyle",
        "extra_float_digits",
        "search_path",
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "bytea_output",
    }
)

# PostgreSQL's NAMEDATALEN - 1; Redshift allows 127 bytes.
MAX_IDENTIFIER_BYTES = 63
# PostgreSQL's own cap on a startup packet (MAX_STARTUP_PACKET_LENGTH).
_MAX_STARTUP_PACKET = 10_000
_CHUNK = 256 * 1024
_CLOSE_GRACE = 1.0
_INT32 = struct.Struct("!i")
_RESET_LINGER = struct.pack("ii", 1, 0)

# Redshift's words (github.com/aws/amazon-redshift-jdbc-driver/issues/21 shows the first
# with SQLSTATE 28000; issues/97 the second, its SQLSTATE unreported: 28000 here too).
WRONG_PASSWORD = 'password authentication failed for user "{user}"'
EXPIRED_PASSWORD = "IAM Authentication token has expired"
# What PostgreSQL-derived servers, Redshift with require_ssl among them, answer a
# plaintext login that the host rules refuse.
SSL_OFF = 'no pg_hba.conf entry for host "{host}", user "{user}", database "{database}", SSL off'
NAME_TOO_LONG = (
    'user name "{user}" is {size} bytes long: Redshift allows 127 bytes, but the '
    "sandbox's PostgreSQL cuts identifiers at 63 bytes, so the sandbox cannot hold this user"
)


# --------------------------------------------------------------------------- faults


HandshakeStage = Literal["ssl_answer", "tls"]


@dataclass
class _Rule:
    count: int | None
    fraction: float | None
    rng: random.Random
    seconds: float = 0.0
    stage: HandshakeStage = "tls"

    def fires(self) -> bool:
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
            return True
        assert self.fraction is not None
        return self.rng.random() < self.fraction

    def spent(self) -> bool:
        return self.count is not None and self.count <= 0


@dataclass(frozen=True)
class _Plan:
    """The faults one accepted connection meets, drawn at accept time."""

    delay: float = 0.0
    refuse: bool = False
    reset_after_accept: bool = False
    reset_handshake: HandshakeStage | None = None


_FAULT_KINDS = ("delay", "refuse", "reset_after_accept", "reset_handshake")


class FrontFaults:
    """Faults the front injects into new connections.

    Each kind applies either to the next ``count`` connections or to a
    ``fraction`` of connections, drawn from ``random.Random(seed)`` so a run
    repeats (same seed, same order of connections). With neither given, the
    fault hits the next connection. Setting a kind again replaces its rule.
    Every rule draws for every accepted connection, so kinds do not disturb
    each other's sequence. When several fire, the delay comes first, then the
    first of refuse, reset after accept, reset mid-handshake.

    - ``refuse``: close the accepted socket at once (an orderly FIN).
    - ``reset_after_accept``: abort the accepted socket (``SO_LINGER`` 0, an RST).
    - ``reset_handshake``: answer the SSLRequest with ``S``, then abort, either
      at once (``stage="ssl_answer"``) or once the client's TLS ClientHello
      has arrived (``stage="tls"``, the default). A plaintext client is reset
      after its startup packet.
    - ``delay``: sleep ``seconds`` after accept, before answering anything.
    """

    def __init__(self) -> None:
        # Guards _rules and _injected: tests set faults while the front's loop draws.
        self._lock = threading.Lock()
        self._rules: dict[str, _Rule] = {}
        self._injected: dict[str, int] = dict.fromkeys(_FAULT_KINDS, 0)

    def refuse(
        self, *, count: int | None = None, fraction: float | None = None, seed: int = 0
    ) -> None:
        self._set("refuse", _make_rule(count, fraction, seed))

    def reset_after_accept(
        self, *, count: int | None = None, fraction: float | None = None, seed: int = 0
    ) -> None:
        self._set("reset_after_accept", _make_rule(count, fraction, seed))

    def reset_handshake(
        self,
        *,
        stage: HandshakeStage = "tls",
        count: int | None = None,
        fraction: float | None = None,
        seed: int = 0,
    ) -> None:
        if stage not in ("ssl_answer", "tls"):
            raise ValueError(f"stage must be 'ssl_answer' or 'tls', got {stage!r}")
        rule = _make_rule(count, fraction, seed)
        rule.stage = stage
        self._set("reset_handshake", rule)

    def delay(
        self,
        seconds: float,
        *,
        count: int | None = None,
        fraction: float | None = None,
        seed: int = 0,
    ) -> None:
        if seconds < 0:
            raise ValueError(f"delay seconds must be >= 0, got {seconds}")
        rule = _make_rule(count, fraction, seed)
        rule.seconds = seconds
        self._set("delay", rule)

    def clear(self, kind: str) -> None:
        """Remove the rule of one kind (``"refuse"``, ``"delay"``, ...)."""
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(_FAULT_KINDS)}")
        with self._lock:
            self._rules.pop(kind, None)

    def reset(self) -> None:
        """Remove every fault and zero the injection counts."""
        with self._lock:
            self._rules.clear()
            self._injected = dict.fromkeys(_FAULT_KINDS, 0)

    def active(self) -> list[str]:
        """The kinds that may still fire."""
        with self._lock:
            return [kind for kind, rule in self._rules.items() if not rule.spent()]

    def injected(self) -> dict[str, int]:
        """How many connections met each fault since the last reset."""
        with self._lock:
            return dict(self._injected)

    def _set(self, kind: str, rule: _Rule) -> None:
        with self._lock:
            self._rules[kind] = rule

    def draw(self) -> _Plan:
        """Decide the faults of one accepted connection."""
        with self._lock:
            fired = {
                kind: rule
                for kind in _FAULT_KINDS
                if (rule := self._rules.get(kind)) is not None and rule.fires()
            }
            # Only the first closing fault takes effect; only effective faults count.
            closing = next(
                (k for k in ("refuse", "reset_after_accept", "reset_handshake") if k in fired),
                None,
            )
            for kind in ("delay", closing):
                if kind in fired:
                    self._injected[kind] += 1
        delay = fired.get("delay")
        handshake = fired.get("reset_handshake")
        return _Plan(
            delay=delay.seconds if delay is not None else 0.0,
            refuse=closing == "refuse",
            reset_after_accept=closing == "reset_after_accept",
            reset_handshake=(
                handshake.stage if closing == "reset_handshake" and handshake is not None else None
            ),
        )


def _make_rule(count: int | None, fraction: float | None, seed: int) -> _Rule:
    if count is not None and fraction is not None:
        raise ValueError("give count or fraction, not both")
    if count is None and fraction is None:
        count = 1
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    return _Rule(count=count, fraction=fraction, rng=random.Random(seed))


# --------------------------------------------------------------------------- sessions


class _LoginRefused(Exception):
    """The front answered the client with an ErrorResponse; the connection ends."""


class _Reset(Exception):
    """A fault aborted the connection."""


@dataclass
class _Client:
    """One client connection: the raw socket until the streams take it over."""

    sock: socket.socket
    peer: str
    workgroup: str | None = None  # served on the port the client came to, if routed
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    tls: bool = False
    admitted: bool = False  # passed the idle/resume gate; leaves it when the connection ends

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        else:
            self.sock.close()


@dataclass(frozen=True)
class _Upstream:
    """A PostgreSQL session that reached ReadyForQuery, its startup answers not yet sent."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ready: bytes
    key: bytes | None  # BackendKeyData body (pid + secret), for CancelRequest
    database: str = ""
    user: str = ""


@dataclass
class _Counters:
    connections: int = 0
    logins_ok: int = 0
    logins_refused: int = 0
    sessions_open: int = 0


def _abort_with_rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
    sock.close()


async def _close_without_reset(sock: socket.socket) -> None:
    """Close with a FIN, reading what the client still sends until it closes too.

    Closing at once would make the kernel answer the client's SSLRequest with an
    RST, and the client would see a reset or an EOF depending on timing.
    """
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        while await loop.sock_recv(sock, 4096):
            pass

    try:
        sock.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(drain(), _CLOSE_GRACE * 5)
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        sock.close()


async def _sock_read_exact(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection")
        data += chunk
    return bytes(data)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    length = _INT32.unpack_from(header, 1)[0]
    if length < 4:
        raise ProtocolViolation(f"message length {length} is below the minimum of 4")
    return header[:1], await reader.readexactly(length - 4)


class Front:
    """The sandbox's database port: TLS, Redshift-style logins, a relay to PostgreSQL.

    ``start()`` binds ``host:port`` (port 0 picks a free one, read it from
    :attr:`port`) and returns once listening; ``stop()`` closes the listener and
    every session. The front runs its own asyncio loop in a daemon thread.
    """

    def __init__(
        self,
        *,
        pg_socket_path: str,
        certfile: str,
        keyfile: str,
        passwords: PasswordStore,
        host: str = "127.0.0.1",
        port: int = 0,
        server_version: str = REDSHIFT_SERVER_VERSION,
        require_tls: bool = True,
        handshake_timeout: float = 30.0,
    ) -> None:
        self.pg_socket_path = pg_socket_path
        self.passwords = passwords
        self.host = host
        self.server_version = server_version
        self.require_tls = require_tls
        self.handshake_timeout = handshake_timeout
        self.faults = FrontFaults()
        # A workgroup that sleeps when idle (rsauth.sandbox._idle); off until configured.
        self.idle = IdleResume()
        # COPY/UNLOAD from and to S3 (rsauth.sandbox._copy); None relays every statement as is.
        self.copy_unload: CopyUnload | None = None
        self._requested_port = port
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._tls.load_cert_chain(certfile, keyfile)
        self._tls.sni_callback = self._pick_certificate
        # Custom domains' certificates by server name; read by the TLS handshake (a dict
        # lookup), written by the control plane.
        self._domains: dict[str, ssl.SSLContext] = {}
        # The workgroup served on each port, set by whoever serves workgroups.
        self.routes: dict[int, str] = {}
        self._by_port: dict[int, int] = {}
        # Guards _counters: the loop thread counts while callers read stats().
        self._counter_lock = threading.Lock()
        self._counters = _Counters()
        self._listeners: dict[int, socket.socket] = {}
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accept_tasks: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Backend key data (pid + secret) of live sessions, for CancelRequest; loop thread only.
        self._backend_keys: set[bytes] = set()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Serialises role creation and grants: concurrent first logins of one user.
        self._role_lock = threading.Lock()
        # Users (with their granted roles) already prepared; read without the lock (a dict
        # lookup is atomic), so a login of a known user never waits on another's setup.
        self._prepared: dict[str, tuple[str, ...]] = {}
        # The roles each user holds because a login's tag granted them (not granted in SQL).
        self._tag_roles: dict[str, set[str]] = {}

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The port listened on (still known after stop())."""
        if self._port is None:
            raise RuntimeError("the front is not started")
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ports(self) -> list[int]:
        """Every port listened on, the first one first."""
        return list(self._listeners)

    def _bind(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return listener

    def listen(self, port: int = 0) -> int:
        """Listen on one more port (0: a free one) and return it; OSError when taken."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the front is not started")
        listener = self._bind(port)
        bound = int(listener.getsockname()[1])
        self._listeners[bound] = listener
        asyncio.run_coroutine_threadsafe(self._begin(bound), loop).result()
        log.debug("front listening on %s:%d", self.host, bound)
        return bound

    def add_certificate(self, server_name: str, certfile: str, keyfile: str) -> None:
        """Present this certificate to clients that ask for ``server_name`` (SNI)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
        self._domains[server_name.lower()] = context

    def remove_certificate(self, server_name: str) -> None:
        self._domains.pop(server_name.lower(), None)

    def _pick_certificate(
        self, tls: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        context = self._domains.get((server_name or "").lower())
        if context is not None:
            tls.context = context

    def connections_by_workgroup(self) -> dict[str, int]:
        """Connections accepted on each workgroup's port since start or :meth:`reset`."""
        with self._counter_lock:
            counts = dict(self._by_port)
        result: dict[str, int] = {}
        for port, count in counts.items():
            name = self.routes.get(port, str(port))
            result[name] = result.get(name, 0) + count
        return result

    def start(self) -> Front:
        if self._thread is not None:
            raise RuntimeError("the front is already started")
        listener = self._bind(self._requested_port)
        self._port = int(listener.getsockname()[1])
        self._listeners[self._port] = listener
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="rsauth-front-admin"
        )
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet_exception_handler)
        self._loop = loop
        self.idle.bind(loop)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="rsauth-front", daemon=True)
        self._thread.start()
        started.wait()
        asyncio.run_coroutine_threadsafe(self._begin(self._port), loop).result()
        log.debug("front listening on %s:%d", self.host, self.port)
        return self

    async def _begin(self, port: int) -> None:
        self._accept_tasks[port] = asyncio.get_running_loop().create_task(
            self._accept_loop(port)
        )

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        for listener in self._listeners.values():
            listener.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._loop = self._thread = self._executor = None
        log.debug("front stopped")

    async def _shutdown(self) -> None:
        self.idle.finish_now()
        for accept in self._accept_tasks.values():
            accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accept
        for listener in self._listeners.values():
            listener.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Aborted transports close their sockets in callbacks; let those run.
        for _ in range(3):
            await asyncio.sleep(0)

    def __enter__(self) -> Front:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- counts

    def stats(self) -> dict[str, int]:
        """Counts since start or the last :meth:`reset`.

        ``connections`` accepted, ``logins_ok`` (sessions that reached
        ReadyForQuery), ``logins_refused`` (a login answered with an error, by
        the front or by PostgreSQL), ``sessions_open`` now, and ``fault_<kind>``
        for each injected fault.
        """
        with self._counter_lock:
            counts = {
                "connections": self._counters.connections,
                "logins_ok": self._counters.logins_ok,
                "logins_refused": self._counters.logins_refused,
                "sessions_open": self._counters.sessions_open,
            }
        counts.update({f"fault_{kind}": n for kind, n in self.faults.injected().items()})
        return counts

    def set_idle_resume(self, seconds: float, *, idle_after: float = 60.0) -> None:
        """Sleep after ``idle_after`` seconds without a connection; resume in ``seconds``.

        ``seconds=0`` turns it off. See :class:`rsauth.sandbox._idle.IdleResume`.
        """
        self.idle.configure(seconds, idle_after)

    def reset(self) -> None:
        """Clear every fault and every count (open sessions stay open and counted)."""
        self.faults.reset()
        self.idle.reset_counts()
        with self._counter_lock:
            self._counters = _Counters(sessions_open=self._counters.sessions_open)
            self._by_port.clear()

    def _count(self, name: str, delta: int = 1) -> None:
        with self._counter_lock:
            setattr(self._counters, name, getattr(self._counters, name) + delta)

    # ----------------------------------------------------------------- accept

    async def _accept_loop(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        listener = self._listeners[port]
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError:
                log.debug("accept failed", exc_info=True)
                await asyncio.sleep(0.05)
                continue
            self._count("connections")
            with self._counter_lock:
                self._by_port[port] = self._by_port.get(port, 0) + 1
            # As PostgreSQL does: the relay writes one message at a time, and with Nagle's
            # algorithm each small write after the first would wait for the client's
            # delayed ACK (40 ms) — twice on a connection's first query.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Drawn here, in accept order, so a seeded fraction repeats run to run.
            plan = self.faults.draw()
            task = loop.create_task(
                self._handle(sock, f"{address[0]}", plan, self.routes.get(port))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(
        self, sock: socket.socket, peer: str, plan: _Plan, workgroup: str | None = None
    ) -> None:
        client = _Client(sock, peer, workgroup)
        try:
            if plan.delay:
                log.debug("fault: delaying a connection by %.3fs", plan.delay)
                await asyncio.sleep(plan.delay)
            if plan.refuse:
                log.debug("fault: refusing a connection")
                await _close_without_reset(sock)
                return
            if plan.reset_after_accept:
                log.debug("fault: resetting a connection after accept")
                _abort_with_rst(sock)
                return
            # A connection held while the workgroup resumes gets the resume time on top.
            timeout = self.handshake_timeout + self.idle.seconds
            upstream = await asyncio.wait_for(self._open(client, plan), timeout)
            if upstream is None:
                return
            await self._relay(client, upstream)
        except (_Reset, _LoginRefused):
            pass
        except asyncio.TimeoutError:
            log.debug("client did not finish logging in within %.1fs", self.handshake_timeout)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as exc:
            log.debug("client connection ended: %s", type(exc).__name__)
        except ProtocolViolation as exc:
            log.debug("protocol violation: %s", exc)
        except asyncio.CancelledError:
            client.abort()
            raise
        except Exception:
            log.exception("front session failed")
        finally:
            if client.admitted:
                self.idle.leave()
            await _close_client(client)

    # ----------------------------------------------------------------- startup

    async def _open(self, client: _Client, plan: _Plan) -> _Upstream | None:
        """Negotiate, authenticate and open the PostgreSQL session; None if it ended."""
        body = await self._first_packets(client, plan)
        if body is None:
            return None
        if client.writer is None:  # plaintext, allowed when require_tls is off
            await self._adopt_plain(client)
        params = parse_startup_params(body[4:])
        minor = _INT32.unpack_from(body)[0] & 0xFFFF
        options = [key for key in params if key.startswith("_pq_.")]
        if minor or options:
            # Protocol 3.x with x > 0, or protocol options: say only 3.0 is spoken.
            await _send(client, negotiate_protocol_version(options))
        db_roles = await self._authenticate(client, params)
        return await self._connect_postgres(client, params, db_roles)

    async def _first_packets(self, client: _Client, plan: _Plan) -> bytes | None:
        """Answer SSL/GSS/cancel requests until the startup packet arrives; return its body."""
        loop = asyncio.get_running_loop()
        while True:
            if client.reader is None:
                header = await _sock_read_exact(loop, client.sock, 4)
            else:
                header = await client.reader.readexactly(4)
            length = _INT32.unpack(header)[0]
            if not 8 <= length <= _MAX_STARTUP_PACKET:
                raise ProtocolViolation(f"startup packet length {length} out of range")
            if client.reader is None:
                body = await _sock_read_exact(loop, client.sock, length - 4)
            else:
                body = await client.reader.readexactly(length - 4)
            code = _INT32.unpack_from(body)[0]
            if not client.admitted and (
                code == SSL_REQUEST or code >> 16 == PROTOCOL_3_0 >> 16
            ):
                # A sleeping workgroup answers once it has resumed; the client waits.
                await self.idle.admit()
                client.admitted = True
            if code == SSL_REQUEST:
                if client.tls:
                    raise ProtocolViolation("SSLRequest inside TLS")
                await loop.sock_sendall(client.sock, b"S")
                if plan.reset_handshake is not None:
                    log.debug("fault: resetting a connection at stage %s", plan.reset_handshake)
                    if plan.reset_handshake == "tls":
                        with contextlib.suppress(OSError, asyncio.TimeoutError):
                            await asyncio.wait_for(loop.sock_recv(client.sock, 4096), 5)
                    _abort_with_rst(client.sock)
                    raise _Reset
                await self._start_tls(client)
            elif code == GSSENC_REQUEST:
                if client.writer is None:
                    await loop.sock_sendall(client.sock, b"N")
                else:
                    raise ProtocolViolation("GSSENCRequest inside TLS")
            elif code == CANCEL_REQUEST:
                await self._forward_cancel(body[4:], header + body)
                return None
            elif code >> 16 == PROTOCOL_3_0 >> 16:
                if plan.reset_handshake is not None:
                    log.debug("fault: resetting a plaintext connection after its startup packet")
                    _abort_with_rst(client.sock)
                    raise _Reset
                if not client.tls and self.require_tls:
                    params = parse_startup_params(body[4:])
                    text = SSL_OFF.format(
                        host=client.peer,
                        user=params.get("user", ""),
                        database=params.get("database", params.get("user", "")),
                    )
                    log.debug("refusing a plaintext login")
                    raise await self._refuse(client, "28000", text)
                return body
            else:
                text = (
                    f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
                    "server supports 3.0 to 3.0"
                )
                raise await self._refuse(client, "0A000", text)

    async def _start_tls(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            client.sock,
            ssl=self._tls,
            ssl_handshake_timeout=self.handshake_timeout,
        )
        client.reader = reader
        client.writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        client.tls = True

    async def _adopt_plain(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, client.sock)
        client.reader = reader
        client.writer = asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _forward_cancel(self, key: bytes, packet: bytes) -> None:
        if key not in self._backend_keys:
            log.debug("ignoring a cancel request for an unknown session")
            return
        log.debug("forwarding a cancel request")
        _, writer = await asyncio.open_unix_connection(self.pg_socket_path)
        try:
            writer.write(packet)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _refuse(self, client: _Client, sqlstate: str, text: str) -> _LoginRefused:
        """Send a FATAL error; return the exception that ends the connection."""
        self._count("logins_refused")  # before the client can see the refusal
        await _send(client, error_response("FATAL", sqlstate, text))
        return _LoginRefused()

    async def _authenticate(self, client: _Client, params: Mapping[str, str]) -> tuple[str, ...]:
        """Check the client's password (MD5); return the db_roles of the matching one."""
        assert client.reader is not None
        user = params.get("user", "")
        if not user:
            raise await self._refuse(
                client, "28000", "no PostgreSQL user name specified in startup packet"
            )
        size = len(user.encode())
        if size > MAX_IDENTIFIER_BYTES:
            log.debug("refusing a user name of %d bytes", size)
            raise await self._refuse(client, "42622", NAME_TOO_LONG.format(user=user, size=size))
        salt = secrets.token_bytes(4)
        await _send(client, authentication_request(AUTH_MD5, salt))
        kind, body = await _read_message(client.reader)
        if kind != b"p":
            raise await self._refuse(
                client, "08P01", f"expected password response, got message type {kind!r}"
            )
        answer = body[:-1] if body.endswith(b"\0") else body
        now = self.passwords.now()
        user_bytes = user.encode()
        expired_match = False
        for issued in self.passwords.candidates(user):
            if None not in (issued.workgroup, client.workgroup) and (
                issued.workgroup != client.workgroup
            ):
                continue  # issued for another workgroup: not a password of this one
            expected = md5_response(user_bytes, issued.password.encode(), salt)
            if hmac.compare_digest(expected, answer):
                if not issued.expired(now):
                    log.debug("password accepted for user %s (%s)", user, issued.source)
                    return issued.db_roles
                expired_match = True
        if expired_match:
            log.debug("expired password refused for user %s", user)
            raise await self._refuse(client, "28000", EXPIRED_PASSWORD)
        log.debug("wrong password refused for user %s", user)
        raise await self._refuse(client, "28000", WRONG_PASSWORD.format(user=user))

    def _prepare_role(self, user: str, db_roles: tuple[str, ...]) -> None:
        """Create ``user`` at first login (member of PUBLIC only); give it this login's db_roles.

        Redshift maps the database roles a login's ``RedshiftDbRoles`` tag names when
        the user signs in
        (https://docs.aws.amazon.com/redshift/latest/mgmt/redshift-iam-access-federated-db-roles.html),
        and roles that come with a login are "available during the current session"
        (https://docs.aws.amazon.com/redshift/latest/dg/PG_GET_SESSION_ROLES.html). A
        PostgreSQL role's memberships are not per session, so each login's tag replaces
        the roles an earlier login's tag granted (roles granted in SQL stay): sessions of
        one IAM role with different tags do not inherit each other's roles. (Sessions of
        one user open at the same time see the newest login's roles.)

        Blocking: runs in the front's executor.
        """
        roles = [
            role
            for role in dict.fromkeys(db_roles)
            if role != user and 0 < len(role.encode()) <= MAX_IDENTIFIER_BYTES
        ]
        if self._prepared.get(user) == tuple(roles):
            return
        names = ", ".join(quote_literal(name) for name in [user, *roles])
        with self._role_lock, AdminSession(self.pg_socket_path) as admin:
            # Every name is quoted with quote_literal / quote_ident.
            found = admin.execute(f"select rolname from pg_roles where rolname in ({names})")  # noqa: S608
            existing = {row[0] for row in found.rows}
            if user not in existing:
                log.debug("creating database user %s at first login", user)
                admin.execute(f"create role {quote_ident(user)} login")
            member_of = (  # noqa: S608 - the name is quoted with quote_literal
                "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.roleid"
                " join pg_roles u on u.oid = m.member where u.rolname = "
            ) + quote_literal(user)
            held = {row[0] for row in admin.execute(member_of).rows}
            tagged = self._tag_roles.setdefault(user, set())
            revokes = sorted((tagged - set(roles)) & held)
            grants = [role for role in roles if role in existing and role not in held]
            statements = [f"revoke {quote_ident(r)} from {quote_ident(user)}" for r in revokes]
            statements += [f"grant {quote_ident(r)} to {quote_ident(user)}" for r in grants]
            if statements:
                log.debug("database user %s: %d role(s) granted, %d revoked", user,
                          len(grants), len(revokes))
                admin.execute("; ".join(statements))
            tagged.difference_update(revokes)
            tagged.update(grants)
            if all(role in existing for role in roles):
                self._prepared[user] = tuple(roles)
            else:
                # A role still missing may be created later, so retry then.
                self._prepared.pop(user, None)

    async def _connect_postgres(
        self, client: _Client, params: Mapping[str, str], db_roles: tuple[str, ...]
    ) -> _Upstream:
        loop = asyncio.get_running_loop()
        user = params["user"]
        try:
            await loop.run_in_executor(self._executor, self._prepare_role, user, db_roles)
        except PgError as exc:
            log.warning("could not prepare database user %s: %s", user, exc.sqlstate)
            raise await self._refuse(
                client, exc.sqlstate or "XX000", f"could not prepare user: {exc.fields.get('M')}"
            ) from exc
        except OSError as exc:
            raise await self._refuse(
                client, "57P03", "the sandbox's PostgreSQL is not accepting connections"
            ) from exc
        kept = {k: v for k, v in params.items() if k.lower() in ALLOWED_STARTUP_PARAMETERS}
        dropped = sorted(set(params) - set(kept))
        if dropped:
            log.debug("dropped startup parameters: %s", ", ".join(dropped))
        try:
            pg_reader, pg_writer = await asyncio.open_unix_connection(
                self.pg_socket_path, limit=_CHUNK
            )
        except OSError as exc:
            raise await self._refuse(
                client, "57P03", "the sandbox's PostgreSQL is not accepting connections"
            ) from exc
        try:
            pg_writer.write(startup_packet(kept))
            await pg_writer.drain()
            upstream = await self._read_startup(client, pg_reader, pg_writer)
            return dataclasses.replace(
                upstream, database=kept.get("database") or user, user=user
            )
        except BaseException:
            pg_writer.transport.abort()
            raise

    async def _read_startup(
        self, client: _Client, pg_reader: asyncio.StreamReader, pg_writer: asyncio.StreamWriter
    ) -> _Upstream:
        """Collect PostgreSQL's startup answers up to ReadyForQuery, server_version rewritten.

        A refusal is passed on to the client at once (_LoginRefused); a ready
        session's answers are sent by _relay, which counts it first.
        """
        batch: list[bytes] = []
        key: bytes | None = None
        while True:
            kind, body = await _read_message(pg_reader)
            if kind == b"S":
                name, _ = parse_parameter_status(body)
                if name == "server_version":
                    batch.append(parameter_status(name, self.server_version))
                    continue
            elif kind == b"K":
                key = body
            elif kind == b"R" and _INT32.unpack_from(body)[0] != 0:
                # PostgreSQL must trust the front; anything else is a sandbox bug.
                code = _INT32.unpack_from(body)[0]
                log.error("PostgreSQL asked the front for authentication (code %d)", code)
                raise await self._refuse(
                    client, "XX000", "the sandbox's PostgreSQL asked for a login"
                )
            elif kind == b"E":
                fields = parse_error(body)
                log.debug("PostgreSQL refused the session: %s", fields.get("C"))
                batch.append(message(kind, body))
                self._count("logins_refused")
                await _send(client, b"".join(batch))
                raise _LoginRefused
            batch.append(message(kind, body))
            if kind == b"Z":
                return _Upstream(pg_reader, pg_writer, b"".join(batch), key)

    # ----------------------------------------------------------------- relay

    async def _relay(self, client: _Client, pg: _Upstream) -> None:
        assert client.reader is not None
        assert client.writer is not None
        self._count("logins_ok")
        self._count("sessions_open")
        if pg.key is not None:
            self._backend_keys.add(pg.key)
        try:
            await _send(client, pg.ready)
            if self.copy_unload is None:
                upstream = asyncio.ensure_future(_pump(client.reader, pg.writer))
                downstream = asyncio.ensure_future(_pump(pg.reader, client.writer))
            else:
                pid = _INT32.unpack_from(pg.key)[0] if pg.key is not None else 0
                session = self.copy_unload.session(pg.database, pg.user, pid)
                upstream = asyncio.ensure_future(
                    session.client_to_server(client.reader, pg.writer, client.writer)
                )
                downstream = asyncio.ensure_future(
                    session.server_to_client(pg.reader, client.writer)
                )
            try:
                done, _ = await asyncio.wait(
                    {upstream, downstream}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (upstream, downstream):
                    task.cancel()
                await asyncio.gather(upstream, downstream, return_exceptions=True)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, ConnectionError | OSError):
                    log.debug("relay ended: %s", type(exc).__name__)
        finally:
            if pg.key is not None:
                self._backend_keys.discard(pg.key)
            self._count("sessions_open", -1)
            pg.writer.transport.abort()


async def _send(client: _Client, data: bytes) -> None:
    if client.writer is None:
        await asyncio.get_running_loop().sock_sendall(client.sock, data)
        return
    client.writer.write(data)
    await client.writer.drain()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy whole messages from ``reader`` to ``writer``, one write per read batch.

    Message boundaries are found (not copied) so that a feature that must see
    single messages (COPY, say) can hook in here; a partial message waits for
    the rest of its bytes.
    """
    pending = bytearray()
    need = 0  # bytes pending must hold before another complete message can exist
    while True:
        chunk = await reader.read(_CHUNK)
        if not chunk:
            break
        if not pending:
            end = complete_prefix(chunk)
            if end:
                writer.write(chunk if end == len(chunk) else chunk[:end])
            if end < len(chunk):
                pending += chunk[end:]
                need = _needed(pending)
        else:
            pending += chunk
            if len(pending) < need:
                continue
            end = complete_prefix(pending)
            if end:
                writer.write(bytes(pending[:end]))
                del pending[:end]
            need = _needed(pending)
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


def _needed(pending: bytearray) -> int:
    if len(pending) < 5:
        return 5
    return 1 + int(_INT32.unpack_from(pending, 1)[0])


async def _close_client(client: _Client) -> None:
    """Close the client's side: TLS close_notify, then abort whatever is left.

    Like PostgreSQL, the front does not wait long for the client's answering
    close_notify (asyncio would wait 30 s); an abort is what frees the socket.
    """
    writer = client.writer
    if writer is None:
        client.sock.close()
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_GRACE)
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:
        writer.transport.abort()


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Log what asyncio reports about dying client transports at debug level, not error."""
    exc = context.get("exception")
    if isinstance(exc, OSError | ssl.SSLError | ConnectionError):
        log.debug("transport error: %s", type(exc).__name__)
        return
    log.warning(
        "front event loop: %s",
        context.get("message"),
        exc_info=exc if isinstance(exc, BaseException) else None,
    )
