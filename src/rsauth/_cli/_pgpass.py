"""``rsauth credentials --write-pgpass``: merge a login into libpq's password file.

The file's rules, from https://www.postgresql.org/docs/current/libpq-pgpass.html:
it is ``$PGPASSFILE``, else ``~/.pgpass`` (``%APPDATA%\\postgresql\\pgpass.conf``
on Windows); one ``hostname:port:database:username:password`` line per entry,
``:`` and ``\\`` escaped with ``\\``; the first line that matches a connection
is used; lines starting with ``#`` are comments; and on Unix libpq ignores
the file when group or others may read it.

So the new entry replaces every earlier one for the same host, port, database
and user, and goes before all other entries (a wildcard line above it would
otherwise win). The file is rewritten whole: a private temporary file in the
same directory, flushed to disk, then renamed over the old one, so a crash
leaves either the old file or the new one, never half of either, and the
result is 0600 whatever the umask. A file that others could read is replaced
the same way (not refused): libpq was ignoring it, and the warning says its
passwords may have been read.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rsauth._cli._context import CommandError
from rsauth._cli._formats import pgpass_line, refuse_control_characters
from rsauth._credentials import Credentials

__all__ = ["PgpassWrite", "default_pgpass_path", "write_pgpass"]

_PRIVATE = 0o600


@dataclass(frozen=True)
class PgpassWrite:
    """What :func:`write_pgpass` did."""

    path: Path
    replaced: int
    was_exposed: bool


def default_pgpass_path(environ: Mapping[str, str]) -> Path:
    """The file libpq reads: ``$PGPASSFILE``, else the per-user default."""
    if environ.get("PGPASSFILE"):
        return Path(environ["PGPASSFILE"])
    if os.name == "nt" and environ.get("APPDATA"):
        return Path(environ["APPDATA"], "postgresql", "pgpass.conf")
    home = environ.get("HOME")
    return Path(home, ".pgpass") if home else Path.home() / ".pgpass"


def _fields(line: str) -> list[str]:
    """A line's fields as libpq reads them: ``\\`` takes the next character literally."""
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def _is_entry(line: str) -> bool:
    return bool(line.strip()) and not line.startswith("#")


def merge(text: str, credentials: Credentials) -> tuple[str, int]:
    """``text`` with the login's entry first among the entries; and how many it replaced."""
    key = [credentials.host, str(credentials.port), credentials.database, credentials.user]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    kept = [line for line in lines if not (_is_entry(line) and _fields(line)[:4] == key)]
    at = next((i for i, line in enumerate(kept) if _is_entry(line)), len(kept))
    kept.insert(at, pgpass_line(credentials))
    return "\n".join(kept) + "\n", len(lines) + 1 - len(kept)


def write_pgpass(path: Path, credentials: Credentials) -> PgpassWrite:
    """Merge the login into the password file at ``path``, which ends up 0600."""
    refuse_control_characters(credentials, "pgpass")
    # Through a symbolic link (dotfiles kept elsewhere) to the file it names.
    target = Path(os.path.realpath(path))
    try:
        before: os.stat_result | None = target.stat()
    except FileNotFoundError:
        before = None
    except OSError as exc:
        raise CommandError(f"cannot read the pgpass file {str(path)!r}: {exc.strerror}") from exc
    text = ""
    if before is not None:
        if not stat.S_ISREG(before.st_mode):
            raise CommandError(f"the pgpass file {str(path)!r} is not a regular file")
        if hasattr(os, "geteuid") and before.st_uid != os.geteuid():
            raise CommandError(
                f"the pgpass file {str(path)!r} belongs to another user (uid {before.st_uid}); "
                "run rsauth as that user, or pass --write-pgpass FILE"
            )
        try:
            text = target.read_bytes().decode("utf-8", "surrogateescape")
        except OSError as exc:
            raise CommandError(
                f"cannot read the pgpass file {str(path)!r}: {exc.strerror}"
            ) from exc
    merged, replaced = merge(text, credentials)
    try:
        _replace_atomically(target, merged.encode("utf-8", "surrogateescape"))
    except OSError as exc:
        raise CommandError(
            f"cannot write the pgpass file {str(path)!r}: {exc.strerror or exc}; "
            "it was left as it was"
        ) from exc
    exposed = before is not None and bool(before.st_mode & 0o077) and os.name != "nt"
    return PgpassWrite(path=path, replaced=replaced, was_exposed=exposed)


def _replace_atomically(target: Path, data: bytes) -> None:
    # mkstemp creates the file 0600 whatever the umask; fchmod says so again.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), _PRIVATE)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if os.name == "posix":  # the rename itself survives a crash once the directory is synced
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
