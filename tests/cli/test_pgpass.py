"""``rsauth credentials --write-pgpass``: libpq's password file, private, merged, atomic.

The rules come from https://www.postgresql.org/docs/current/libpq-pgpass.html:
one ``host:port:database:user:password`` line per login, ``:`` and ``\\``
escaped with ``\\``, the first matching line wins, lines starting with ``#``
are comments, and on Unix a file readable by group or others is ignored.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsauth._cli._context import CommandError
from rsauth._cli._pgpass import default_pgpass_path, write_pgpass
from rsauth.sandbox import Sandbox
from tests.cli.conftest import Cli
from tests.cli.test_cli_formats import _pgpass_fields, credentials

PSQL = shutil.which("psql")
HOST = "wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common default umask, under which a plain ``>>`` makes a world-readable file."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def entries(path: Path) -> list[list[str]]:
    return [_pgpass_fields(line) for line in path.read_text().splitlines()
            if line and not line.startswith("#")]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_is_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "pgpass"
    write_pgpass(path, credentials("s3cret"))
    assert mode(path) == 0o600
    assert entries(path) == [[HOST, "5439", "dev", "IAM:alice", "s3cret"]]


def test_an_earlier_entry_for_the_same_login_is_replaced_and_others_kept(
    tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "pgpass"
    path.write_text(
        "# my logins\n"
        "other.example.com:5432:app:bob:bobs\n"
        f"{HOST}:5439:dev:IAM\\:alice:old-one\n"
        "*:*:*:*:fallback\n"
    )
    path.chmod(0o600)
    result = write_pgpass(path, credentials("new-one"))
    assert result.replaced == 1
    lines = path.read_text().splitlines()
    assert lines[0] == "# my logins"
    # The new entry comes before every other one: libpq uses the first line that matches.
    assert entries(path) == [
        [HOST, "5439", "dev", "IAM:alice", "new-one"],
        ["other.example.com", "5432", "app", "bob", "bobs"],
        ["*", "*", "*", "*", "fallback"],
    ]
    write_pgpass(path, credentials("newer", database="sales"))
    assert [entry[2] for entry in entries(path)] == ["sales", "dev", "app", "*"]


def test_colons_and_backslashes_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    password = "a:b\\c:\\"
    write_pgpass(path, credentials(password, database="d:b\\x"))
    assert entries(path) == [[HOST, "5439", "d:b\\x", "IAM:alice", password]]
    write_pgpass(path, credentials("again", database="d:b\\x"))
    assert entries(path) == [[HOST, "5439", "d:b\\x", "IAM:alice", "again"]]


@pytest.mark.parametrize("field", ["password", "user", "database", "host"])
@pytest.mark.parametrize("bad", ["\n", "\r", "\0", "\x1b", "\x7f"])
def test_a_control_character_is_refused_naming_the_field(
    tmp_path: Path, field: str, bad: str
) -> None:
    path = tmp_path / "pgpass"
    path.write_text("other.example.com:5432:app:bob:bobs\n")
    path.chmod(0o600)
    value = f"x{bad}*:*:*:*:injected"
    with pytest.raises(CommandError) as caught:
        write_pgpass(path, credentials(**{"password": "s3cret", field: value}))
    message = str(caught.value)
    assert field in message
    assert "injected" not in message
    assert "s3cret" not in message
    assert path.read_text() == "other.example.com:5432:app:bob:bobs\n", "left as it was"
    assert sorted(os.listdir(tmp_path)) == ["pgpass"]


def test_a_file_others_could_read_is_replaced_by_a_private_one_with_a_warning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pgpass"
    path.write_text("other.example.com:5432:app:bob:bobs\n")
    path.chmod(0o644)
    result = write_pgpass(path, credentials("s3cret"))
    assert mode(path) == 0o600
    assert result.was_exposed
    assert len(entries(path)) == 2


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user needs root")
def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    path.write_text("other.example.com:5432:app:bob:bobs\n")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(CommandError, match="another user"):
        write_pgpass(path, credentials("s3cret"))
    assert path.stat().st_uid == 65534
    assert path.read_text() == "other.example.com:5432:app:bob:bobs\n"


def test_a_failed_write_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pgpass"
    path.write_text("other.example.com:5432:app:bob:bobs\n")
    path.chmod(0o600)

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(CommandError, match="pgpass"):
        write_pgpass(path, credentials("s3cret"))
    assert path.read_text() == "other.example.com:5432:app:bob:bobs\n"
    assert sorted(os.listdir(tmp_path)) == ["pgpass"], "no temporary file left behind"


def test_a_symlinked_file_is_written_through_the_link(tmp_path: Path) -> None:
    (tmp_path / "dotfiles").mkdir()
    real = tmp_path / "dotfiles" / "pgpass"
    real.write_text("")
    real.chmod(0o600)
    link = tmp_path / ".pgpass"
    link.symlink_to(real)
    write_pgpass(link, credentials("s3cret"))
    assert link.is_symlink()
    assert entries(real)[0][-1] == "s3cret"


def test_the_default_file_is_pgpassfile_else_home(tmp_path: Path) -> None:
    assert default_pgpass_path({"PGPASSFILE": str(tmp_path / "p")}) == tmp_path / "p"
    assert default_pgpass_path({"HOME": str(tmp_path)}) == tmp_path / ".pgpass"


# -- the command, against the sandbox ---------------------------------------------------


def test_write_pgpass_then_psql_logs_in_with_it(
    cli: Cli, sandbox: Sandbox, tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "pgpass"
    result = cli("credentials", "--write-pgpass", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", "the password goes into the file only"
    assert str(path) in result.stderr
    assert mode(path) == 0o600
    [entry] = entries(path)
    assert entry[:4] == ["localhost", str(sandbox.port), "dev", "IAM:sandbox-admin"]
    assert entry[4] not in result.stderr
    if PSQL is None:
        pytest.skip("the PostgreSQL client is not installed")
    env = {
        **os.environ,
        "PGPASSFILE": str(path),
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": sandbox.env["SSL_CERT_FILE"],
    }
    logged_in = subprocess.run(
        [PSQL, "-X", "-w", "-At", "-h", "localhost", "-p", str(sandbox.port),
         "-U", "IAM:sandbox-admin", "-d", "dev", "-c", "select current_user"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert logged_in.returncode == 0, logged_in.stderr
    assert logged_in.stdout.strip() == "IAM:sandbox-admin"


def test_write_pgpass_without_a_file_uses_pgpassfile(
    cli: Cli, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "from-env"
    result = cli("credentials", "--write-pgpass", extra_env={"PGPASSFILE": str(path)})
    assert result.returncode == 0, result.stderr
    assert entries(path)[0][3] == "IAM:sandbox-admin"


def test_write_pgpass_with_a_machine_format_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    result = cli("credentials", "--format", "env", "--write-pgpass", str(tmp_path / "p"))
    assert result.returncode == 2
    assert "--write-pgpass" in result.stderr
    assert not (tmp_path / "p").exists()
