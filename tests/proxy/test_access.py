"""Who may connect: only the local user running the proxy, or a client with the local password."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rsauth.proxy import Proxy
from tests.proxy.conftest import ProxyFactory
from tests.proxy.helpers import error_of, login_raw

psycopg = pytest.importorskip("psycopg")

NOBODY = 65534
needs_root = pytest.mark.skipif(
    not hasattr(os, "getuid") or os.getuid() != 0, reason="runs a client as nobody: needs root"
)


def as_nobody(client: Callable[[], Any]) -> Any:
    """Run ``client`` in a forked child as uid 65534 (nobody); return what it returned."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, send the result back
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                result: Any = client()
            except BaseException as exc:
                result = f"{type(exc).__name__}: {exc}"
            with os.fdopen(write, "wb") as pipe:
                pickle.dump(result, pipe)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)  # noqa: S301 - from our own forked child


def test_the_proxy_user_is_let_in_on_tcp(proxy: Proxy) -> None:
    messages = login_raw(("127.0.0.1", proxy.port))
    assert messages[-1][0] == b"Z"
    assert not proxy.password_required


@needs_root
def test_another_uid_is_refused_on_tcp(proxy: Proxy) -> None:
    messages = as_nobody(lambda: login_raw(("127.0.0.1", proxy.port)))
    assert isinstance(messages, list), messages
    fields = error_of(messages)
    assert fields["C"] == "28000"
    assert fields["M"].startswith("rsauth proxy:")
    assert f"uid {NOBODY}" in fields["M"]
    # The proxy goes on serving its own user.
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"


@needs_root
def test_another_uid_is_refused_on_the_unix_socket(make_proxy: ProxyFactory) -> None:
    # Under /tmp itself: nobody cannot traverse pytest's private tmp_path.
    parent = Path(tempfile.mkdtemp(prefix="rsauth-proxy-test-"))
    directory = parent / "sock"
    proxy = make_proxy(address=None, unix_socket=directory)
    path = proxy.unix_socket_path
    assert path is not None
    assert (directory.stat().st_mode & 0o777) == 0o700
    assert login_raw(str(path))[-1][0] == b"Z"
    # The 0700 directory keeps others out; open it (S103, on purpose) to reach the uid
    # check behind it.
    os.chmod(parent, 0o755)  # noqa: S103
    os.chmod(directory, 0o755)  # noqa: S103
    os.chmod(path, 0o777)  # noqa: S103
    try:
        messages = as_nobody(lambda: login_raw(str(path)))
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    assert isinstance(messages, list), messages
    fields = error_of(messages)
    assert fields["C"] == "28000"
    assert "rsauth proxy: only uid 0" in fields["M"]


def test_a_unix_socket_directory_open_to_others_is_refused(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o755)  # noqa: S103 - the permissive directory under test
    with pytest.raises(ValueError, match="open to other users"):
        make_proxy(address=None, unix_socket=directory)


@needs_root
def test_allow_any_local_user_lets_others_in_with_a_warning(
    make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = make_proxy(allow_any_local_user=True)
    assert any("any local user may connect" in r.getMessage() for r in caplog.records)
    messages = as_nobody(lambda: login_raw(("127.0.0.1", proxy.port)))
    assert isinstance(messages, list), messages
    assert messages[-1][0] == b"Z"


def _reachable_address() -> str:
    """A non-loopback address of this machine (for a listener that must ask a password)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP connect
            address = str(probe.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


def test_a_non_loopback_address_needs_the_local_password(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    address = _reachable_address()
    password_file = tmp_path / "local-password"
    password_file.write_text("correct horse\n")
    proxy = make_proxy(address=address, local_password_file=password_file)
    assert proxy.password_required
    base = f"host={address} port={proxy.port} user=anyone dbname=dev connect_timeout=30"
    # Over TLS the password travels as cleartext inside TLS; without, as MD5.
    for mode in ("require", "disable"):
        with psycopg.connect(f"{base} sslmode={mode} password='correct horse'") as connection:
            assert connection.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="rsauth proxy: wrong local password"):
            psycopg.connect(f"{base} sslmode={mode} password=wrong")


def test_a_generated_local_password_is_written_0600(make_proxy: ProxyFactory) -> None:
    address = _reachable_address()
    proxy = make_proxy(address=address)
    path = proxy.local_password_path
    assert path is not None
    assert (path.stat().st_mode & 0o777) == 0o600
    assert f"local password file: {path}" in proxy.describe()
    password = path.read_text().strip()
    info = f"host={address} port={proxy.port} user=me dbname=dev sslmode=require"
    with psycopg.connect(f"{info} password={password}") as connection:
        assert connection.execute("select 1").fetchone() == (1,)


def test_on_loopback_the_uid_check_replaces_the_password(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    password_file = tmp_path / "local-password"
    password_file.write_text("unused here\n")
    proxy = make_proxy(local_password_file=password_file)
    assert not proxy.password_required
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"
