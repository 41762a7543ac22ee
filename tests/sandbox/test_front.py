"""The sandbox's wire front, met through redshift_connector directly (not rsauth).

A real PostgreSQL behind the front, a throwaway CA trusted through
``SSL_CERT_FILE``, ``sslmode="verify-full"`` throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import select
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("trustme")
pytest.importorskip("redshift_connector")

import redshift_connector
import trustme
from redshift_connector.core import Connection
from redshift_connector.error import InterfaceError, OperationalError, ProgrammingError

from rsauth.sandbox._front import EXPIRED_PASSWORD, Front
from rsauth.sandbox._passwords import IssuedPassword, PasswordStore
from rsauth.sandbox._pgwire import CANCEL_REQUEST, GSSENC_REQUEST, SSL_REQUEST
from rsauth.sandbox._postgres import PostgresNotFound, PostgresServer

DATABASE = "dev"


@dataclass
class Env:
    pg: PostgresServer
    front: Front
    passwords: PasswordStore
    workdir: Path
    ca: trustme.CA

    def connect(self, user: str, password: str, **kwargs: Any) -> Connection:
        options: dict[str, Any] = {
            "host": "localhost",
            "port": self.front.port,
            "database": DATABASE,
            "ssl": True,
            "sslmode": "verify-full",
        }
        options.update(kwargs)
        return redshift_connector.connect(user=user, password=password, **options)

    def issue(
        self, user: str, password: str, *, ttl: float = 900, roles: tuple[str, ...] = ()
    ) -> None:
        self.passwords.add(IssuedPassword(user, password, time.time() + ttl, roles))


def _write_cert(ca: trustme.CA, names: list[str], directory: Path) -> tuple[str, str]:
    cert = ca.issue_cert(*names)
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(certfile), append=index > 0)
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    # Not tmp_path: pytest's base dir is private to root, and PostgreSQL runs as
    # "nobody" when the tests run as root.
    workdir = Path(tempfile.mkdtemp(prefix="rsauth-front-test-"))
    try:
        pg = PostgresServer(workdir)
    except PostgresNotFound as exc:
        shutil.rmtree(workdir)
        pytest.skip(str(exc))
    with warnings.catch_warnings():
        # AdminSession.__init__ leaks its socket when PostgreSQL is not up yet, as
        # PostgresServer.start() polls (reported; remove once AdminSession closes it).
        warnings.simplefilter("ignore", ResourceWarning)
        pg.start()
    front: Front | None = None
    try:
        with pg.admin() as admin:
            admin.execute(f"create database {DATABASE}")
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
        certfile, keyfile = _write_cert(ca, ["localhost", "127.0.0.1"], workdir)
        passwords = PasswordStore()
        front = Front(
            pg_socket_path=pg.socket_path, certfile=certfile, keyfile=keyfile, passwords=passwords
        ).start()
        yield Env(pg, front, passwords, workdir, ca)
    finally:
        if front is not None:
            front.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _front_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Per test: the conftest's clean environment removes SSL_CERT_* first.
    monkeypatch.setenv("SSL_CERT_FILE", str(env.workdir / "ca.pem"))
    env.front.reset()


def query(conn: Connection, sql: str) -> list[Any]:
    cursor = conn.cursor()
    cursor.execute(sql)
    return list(cursor.fetchall())


E = TypeVar("E", bound=Exception)


def refused(env: Env, exc_type: type[E], user: str, password: str, **kwargs: Any) -> E:
    """Connect expecting ``exc_type``; close the socket the driver leaves open.

    redshift_connector raises a refused login (and "Server refuses SSL")
    without closing its socket; closing it here keeps ResourceWarnings, which
    the test run turns into errors, pointing at real leaks only.
    """
    with pytest.raises(exc_type) as excinfo:
        env.connect(user, password, **kwargs)
    close_driver_socket(excinfo.value)
    return excinfo.value


def close_driver_socket(exc: BaseException) -> None:
    traceback = exc.__traceback__
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        if isinstance(owner, Connection):
            # The buffered file holds the socket open: close it first.
            for name in ("_sock", "_usock"):
                with contextlib.suppress(AttributeError, OSError):
                    getattr(owner, name).close()
        traceback = traceback.tb_next


def error_of(exc: Exception) -> dict[str, str]:
    fields = exc.args[0]
    assert isinstance(fields, dict), exc.args
    return fields


# --------------------------------------------------------------------------- logins


def test_login_creates_user_at_first_login(env: Env) -> None:
    env.issue("IAM:alice", "alice-pw-1")
    with env.connect("IAM:alice", "alice-pw-1") as conn:
        assert query(conn, "select current_user") == [["IAM:alice"]]
        assert query(conn, "select usesuper from pg_user where usename = current_user") == [[False]]
        # Member of PUBLIC only.
        assert query(
            conn,
            "select count(*) from pg_auth_members m join pg_roles u on u.oid = m.member"
            " where u.rolname = current_user",
        ) == [[0]]
    assert env.front.stats()["logins_ok"] == 1


def test_two_passwords_of_one_user_both_work(env: Env) -> None:
    env.issue("IAM:bob", "bob-pw-1")
    env.issue("IAM:bob", "bob-pw-2")
    for password in ("bob-pw-1", "bob-pw-2", "bob-pw-1"):
        with env.connect("IAM:bob", password) as conn:
            assert query(conn, "select current_user") == [["IAM:bob"]]


def test_wrong_password_is_refused_with_redshifts_text(env: Env) -> None:
    env.issue("IAM:carol", "carol-pw")
    exc = refused(env, InterfaceError, "IAM:carol", "not-the-password")
    fields = error_of(exc)
    assert fields["C"] == "28000"
    assert fields["S"] == "FATAL"
    assert fields["M"] == 'password authentication failed for user "IAM:carol"'
    assert env.front.stats()["logins_refused"] == 1


def test_unknown_user_gets_the_same_answer(env: Env) -> None:
    exc = refused(env, InterfaceError, "IAM:nobody-here", "whatever")
    assert error_of(exc)["M"] == 'password authentication failed for user "IAM:nobody-here"'


def test_expired_password_is_refused_with_redshifts_text(env: Env) -> None:
    env.issue("IAM:dave", "dave-old", ttl=-1)
    env.issue("IAM:dave", "dave-new")
    exc = refused(env, InterfaceError, "IAM:dave", "dave-old")
    fields = error_of(exc)
    assert (fields["C"], fields["M"]) == ("28000", EXPIRED_PASSWORD)
    assert fields["M"] == "IAM Authentication token has expired"
    with env.connect("IAM:dave", "dave-new"):
        pass


def test_open_session_survives_its_password_expiring(env: Env) -> None:
    env.issue("IAM:erin", "erin-pw")
    with env.connect("IAM:erin", "erin-pw") as conn:
        assert env.passwords.expire("IAM:erin") == 1
        exc = refused(env, InterfaceError, "IAM:erin", "erin-pw")
        assert error_of(exc)["M"] == EXPIRED_PASSWORD
        assert query(conn, "select current_user") == [["IAM:erin"]]


def test_db_roles_are_granted_when_they_exist(env: Env) -> None:
    with env.pg.admin() as admin:
        admin.execute("create role analysts; create role loaders")
    env.issue("IAMR:etl", "etl-pw", roles=("analysts", "loaders", "no_such_role"))
    with env.connect("IAMR:etl", "etl-pw") as conn:
        rows = query(
            conn,
            "select r.rolname from pg_auth_members m"
            " join pg_roles r on r.oid = m.roleid join pg_roles u on u.oid = m.member"
            " where u.rolname = current_user order by 1",
        )
    assert rows == [["analysts"], ["loaders"]]
    # A second login grants again without complaint.
    with env.connect("IAMR:etl", "etl-pw") as conn:
        assert query(conn, "select pg_has_role('analysts', 'member')") == [[True]]


def test_server_version_parses_as_redshifts(env: Env) -> None:
    env.issue("IAM:frank", "frank-pw")
    with env.connect("IAM:frank", "frank-pw") as conn:
        assert str(conn._server_version) == "8.0.2"
        statuses = dict(conn.parameter_statuses)
        assert statuses[b"server_version"] == b"8.0.2"


def test_startup_parameters_are_filtered_not_lost(env: Env) -> None:
    # The driver sends client_protocol_version, driver_version, os_version, ...:
    # the login working shows they were dropped; application_name is kept.
    env.issue("IAM:grace", "grace-pw")
    with env.connect("IAM:grace", "grace-pw", application_name="front-test") as conn:
        assert query(conn, "show application_name") == [["front-test"]]


def test_unknown_database_gets_postgresqls_error(env: Env) -> None:
    env.issue("IAM:heidi", "heidi-pw")
    exc = refused(env, ProgrammingError, "IAM:heidi", "heidi-pw", database="nope")
    fields = error_of(exc)
    assert (fields["C"], fields["M"]) == ("3D000", 'database "nope" does not exist')


def test_user_name_over_63_bytes_is_refused_clearly(env: Env) -> None:
    user = "IAMR:" + "r" * 64
    env.issue(user, "long-pw")
    exc = refused(env, ProgrammingError, user, "long-pw")
    fields = error_of(exc)
    assert fields["C"] == "42622"
    assert "63 bytes" in fields["M"]
    assert "127" in fields["M"]


def test_plaintext_login_is_refused(env: Env) -> None:
    env.issue("IAM:ivan", "ivan-pw")
    exc = refused(env, InterfaceError, "IAM:ivan", "ivan-pw", ssl=False)
    fields = error_of(exc)
    assert fields["C"] == "28000"
    assert fields["M"].endswith("SSL off")


def test_wrong_hostname_is_refused_by_verify_full(env: Env) -> None:
    certdir = env.workdir / "localhost-only"
    certdir.mkdir()
    certfile, keyfile = _write_cert(env.ca, ["localhost"], certdir)
    with Front(
        pg_socket_path=env.pg.socket_path,
        certfile=certfile,
        keyfile=keyfile,
        passwords=env.passwords,
    ) as front:
        env.issue("IAM:judy", "judy-pw")
        exc = refused(env, InterfaceError, "IAM:judy", "judy-pw", host="127.0.0.1", port=front.port)
        assert exc.args[0] == "communication error"
        assert isinstance(exc.args[1], ssl.SSLCertVerificationError)
        # The same front is fine under the name its certificate carries.
        with env.connect("IAM:judy", "judy-pw", port=front.port) as conn:
            assert query(conn, "select 1") == [[1]]


def test_large_messages_cross_both_ways(env: Env) -> None:
    # Larger than the relay's read size, so messages arrive in pieces.
    env.issue("IAM:lars", "lars-pw")
    big = "x" * 3_000_000
    with env.connect("IAM:lars", "lars-pw") as conn:
        cursor = conn.cursor()
        cursor.execute("select length(%s), md5(%s)", (big, big))
        digest = hashlib.md5(big.encode(), usedforsecurity=False).hexdigest()
        assert list(cursor.fetchall()) == [[len(big), digest]]
        assert query(conn, "select length(repeat('y', 5000000))") == [[5_000_000]]
        rows = query(conn, "select repeat('z', 100) from generate_series(1, 20000)")
        assert len(rows) == 20_000


def test_gssenc_is_declined_then_tls_offered(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.front.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, GSSENC_REQUEST))
        assert sock.recv(1) == b"N"
        sock.sendall(struct.pack("!ii", 8, SSL_REQUEST))
        assert sock.recv(1) == b"S"


def test_stats_count_connections_and_logins(env: Env) -> None:
    env.issue("IAM:stan", "stan-pw")
    with env.connect("IAM:stan", "stan-pw"):
        assert env.front.stats()["sessions_open"] == 1
    refused(env, InterfaceError, "IAM:stan", "wrong")
    stats = env.front.stats()
    assert stats["connections"] == 2
    assert stats["logins_ok"] == 1
    assert stats["logins_refused"] == 1
    env.front.reset()
    assert env.front.stats()["connections"] == 0


def test_plaintext_allowed_when_tls_is_not_required(env: Env) -> None:
    with Front(
        pg_socket_path=env.pg.socket_path,
        certfile=str(env.workdir / "cert.pem"),
        keyfile=str(env.workdir / "key.pem"),
        passwords=env.passwords,
        require_tls=False,
    ) as front:
        env.issue("IAM:pat", "pat-pw")
        with env.connect("IAM:pat", "pat-pw", ssl=False, port=front.port) as conn:
            assert query(conn, "select current_user") == [["IAM:pat"]]
        # A newer minor protocol with an option: told 3.0, then asked for the password.
        startup = struct.pack("!i", (3 << 16) | 2) + b"user\0IAM:pat\0_pq_.x\0y\0\0"
        with socket.create_connection(("127.0.0.1", front.port), timeout=5) as sock:
            sock.sendall(struct.pack("!i", len(startup) + 4) + startup)
            reply = b""
            while len(reply) < 5 + 15 + 9:
                reply += sock.recv(100)
        assert reply[:5] == b"v" + struct.pack("!i", 19)
        assert reply[5:20] == struct.pack("!ii", 0, 1) + b"_pq_.x\0"
        assert reply[20:29] == b"R" + struct.pack("!ii", 12, 5)


SLEEP_STATEMENT = "select pg_sleep(20)"


def _sleep_is_running(env: Env) -> bool:
    with env.pg.admin() as admin:
        rows = admin.execute(
            "select count(*) from pg_stat_activity "
            "where state = 'active' and query = 'select pg_sleep(20)'"
        ).rows
    return rows[0][0] == "1"


def test_cancel_request_reaches_postgresql(env: Env) -> None:
    env.issue("IAM:kim", "kim-pw")
    with env.connect("IAM:kim", "kim-pw") as conn:
        key = conn._backend_key_data
        assert key is not None
        packet = struct.pack("!ii", 16, CANCEL_REQUEST) + key

        def cancel() -> None:
            # Cancel only once PostgreSQL is running the statement, so the cancel hits it.
            deadline = time.monotonic() + 30  # a deadlock guard, not a timing check
            while not _sleep_is_running(env) and time.monotonic() < deadline:
                time.sleep(0.02)
            with socket.create_connection(("127.0.0.1", env.front.port)) as sock:
                sock.sendall(packet)
                sock.recv(1)

        thread = threading.Thread(target=cancel)
        thread.start()
        with pytest.raises(ProgrammingError) as excinfo:
            query(conn, SLEEP_STATEMENT)
        thread.join()
        # 57014 query_canceled: the statement was stopped, not finished or failed otherwise.
        assert error_of(excinfo.value)["C"] == "57014"
        assert not _sleep_is_running(env)


def test_no_password_in_any_log_line(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rsauth")
    env.issue("IAM:leak", "secret-leak-pw-1")
    env.issue("IAM:leak", "secret-leak-pw-2", ttl=-1)
    with env.connect("IAM:leak", "secret-leak-pw-1"):
        pass
    for password in ("secret-leak-pw-2", "wrong-secret-leak"):
        refused(env, InterfaceError, "IAM:leak", password)
    env.front.faults.reset_handshake()
    refused(env, InterfaceError, "IAM:leak", "secret-leak-pw-1")
    records = [r for r in caplog.records if r.name.startswith("rsauth")]
    assert records, "the front logs its events at debug level"
    text = "\n".join(r.getMessage() for r in records)
    assert "secret-leak" not in text
    assert "md5" not in text


# --------------------------------------------------------------------------- faults


def test_refuse_surfaces_as_interface_error(env: Env) -> None:
    env.issue("IAM:mallory", "m-pw")
    env.front.faults.refuse(count=2)
    for _ in range(2):
        # The front closes at once; the driver reads no "S" and says so.
        exc = refused(env, InterfaceError, "IAM:mallory", "m-pw")
        assert exc.args == ("Server refuses SSL",)
    with env.connect("IAM:mallory", "m-pw"):
        pass
    stats = env.front.stats()
    assert stats["fault_refuse"] == 2
    assert stats["connections"] == 3


def test_reset_after_accept_surfaces_as_connection_reset(env: Env) -> None:
    env.issue("IAM:niaj", "n-pw")
    env.front.faults.reset_after_accept()
    exc = refused(env, InterfaceError, "IAM:niaj", "n-pw")
    assert exc.args[0] == "communication error"
    assert isinstance(exc.args[1], ConnectionResetError | BrokenPipeError)
    assert env.front.stats()["fault_reset_after_accept"] == 1
    with env.connect("IAM:niaj", "n-pw"):
        pass


@pytest.mark.parametrize("stage", ["tls", "ssl_answer"])
def test_reset_mid_handshake_surfaces_as_connection_reset(env: Env, stage: Any) -> None:
    env.issue("IAM:olivia", "o-pw")
    env.front.faults.reset_handshake(stage=stage)
    exc = refused(env, InterfaceError, "IAM:olivia", "o-pw")
    assert exc.args[0] == "communication error"
    assert isinstance(exc.args[1], ConnectionResetError | BrokenPipeError)
    assert env.front.stats()["fault_reset_handshake"] == 1
    with env.connect("IAM:olivia", "o-pw"):
        pass


def test_delay_holds_the_answer_to_the_ssl_request(env: Env) -> None:
    env.issue("IAM:peggy", "p-pw")
    env.front.faults.delay(600, count=1)
    with socket.create_connection(("127.0.0.1", env.front.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, SSL_REQUEST))
        # Accepted, and no answer yet: the delayed connection is held, not refused.
        readable, _, _ = select.select([sock], [], [], 0.5)
        assert readable == []
        assert env.front.stats()["fault_delay"] == 1
    # The rule fired once; the next login goes through undelayed.
    with env.connect("IAM:peggy", "p-pw") as conn:
        assert query(conn, "select current_user") == [["IAM:peggy"]]
    assert env.front.stats()["fault_delay"] == 1


def test_delay_beyond_the_driver_timeout_is_a_timeout(env: Env) -> None:
    env.issue("IAM:peggy", "p-pw")
    env.front.faults.delay(1.5)
    exc = refused(env, OperationalError, "IAM:peggy", "p-pw", timeout=1)
    assert exc.args[0] == "connection time out"
    assert isinstance(exc.args[1], TimeoutError)


def _refusal_pattern(env: Env, seed: int) -> list[bool]:
    env.front.reset()
    env.front.faults.refuse(fraction=0.5, seed=seed)
    pattern = []
    for _ in range(12):
        try:
            with env.connect("IAM:rupert", "r-pw"):
                pattern.append(False)
        except InterfaceError as exc:
            close_driver_socket(exc)
            pattern.append(True)
    assert env.front.stats()["fault_refuse"] == sum(pattern)
    return pattern


def test_seeded_fraction_repeats(env: Env) -> None:
    env.issue("IAM:rupert", "r-pw")
    first = _refusal_pattern(env, seed=7)
    assert first == _refusal_pattern(env, seed=7)
    assert any(first)
    assert not all(first)
    assert first != _refusal_pattern(env, seed=8)


def test_faults_validate_their_arguments(env: Env) -> None:
    faults = env.front.faults
    with pytest.raises(ValueError, match="not both"):
        faults.refuse(count=1, fraction=0.5)
    with pytest.raises(ValueError, match="fraction"):
        faults.refuse(fraction=1.5)
    with pytest.raises(ValueError, match="count"):
        faults.delay(1, count=0)
    faults.refuse(count=3)
    assert faults.active() == ["refuse"]
    env.front.reset()
    assert faults.active() == []


def test_stop_closes_listener_and_sessions(env: Env) -> None:
    front = Front(
        pg_socket_path=env.pg.socket_path,
        certfile=str(env.workdir / "cert.pem"),
        keyfile=str(env.workdir / "key.pem"),
        passwords=env.passwords,
    ).start()
    port = front.port
    env.issue("IAM:sybil", "s-pw")
    conn = env.connect("IAM:sybil", "s-pw", port=port)
    assert front.stats()["sessions_open"] == 1
    front.stop()
    assert not front.running
    with pytest.raises(InterfaceError):
        query(conn, "select 1")
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_each_login_carries_the_roles_of_its_own_tag(env: Env) -> None:
    with env.pg.admin() as admin:
        admin.execute("create role tag_admins; create role tag_readers")
    membership = (
        "select r.rolname from pg_auth_members m"
        " join pg_roles r on r.oid = m.roleid join pg_roles u on u.oid = m.member"
        " where u.rolname = current_user order by 1"
    )
    env.issue("IAMR:shared", "alice-pw", roles=("tag_admins",))
    env.issue("IAMR:shared", "bob-pw", roles=("tag_readers",))
    with env.connect("IAMR:shared", "alice-pw") as conn:
        assert query(conn, membership) == [["tag_admins"]]
    # Another session of the same role, another tag: alice's roles are not bob's.
    with env.connect("IAMR:shared", "bob-pw") as conn:
        assert query(conn, membership) == [["tag_readers"]]
    with env.connect("IAMR:shared", "alice-pw") as conn:
        assert query(conn, membership) == [["tag_admins"]]
    # Roles granted in SQL are the administrator's, not a tag's: they stay.
    with env.pg.admin() as admin:
        admin.execute('grant tag_readers to "IAMR:shared"')
    with env.connect("IAMR:shared", "alice-pw") as conn:
        assert query(conn, membership) == [["tag_admins"], ["tag_readers"]]
