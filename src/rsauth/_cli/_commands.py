"""The subcommands other than ``doctor``: credentials, sql, psql, whoami and sandbox."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from redshift_connector.error import Error as DriverError

from rsauth._broker import Broker, connection_origin
from rsauth._cli._context import CommandError, Context, UsageError, ca_file
from rsauth._cli._formats import (
    format_credentials,
    format_rows,
    key_value_table,
    refuse_control_characters,
)
from rsauth._cli._pgpass import default_pgpass_path, write_pgpass
from rsauth._credentials import Credentials, describe_expiry, describe_remaining
from rsauth._driver import server_error

__all__ = ["run_credentials", "run_psql", "run_sandbox", "run_sql", "run_whoami"]

WHOAMI_QUERY = "select current_user, usesuper from pg_user where usename = current_user"


def _say(message: str, stream: TextIO | None = None) -> None:
    print(message, file=stream or sys.stdout, flush=True)


def run_credentials(args: argparse.Namespace, context: Context) -> int:
    if args.write_pgpass is not None and args.format != "table":
        raise UsageError("--write-pgpass writes the file and prints no login; leave out --format")
    with Broker() as broker:
        credentials = broker.credentials(**context.arguments)
    if args.write_pgpass is not None:
        return _write_pgpass(args.write_pgpass, credentials)
    sslrootcert = ca_file()
    _say(format_credentials(credentials, args.format, sslrootcert=sslrootcert))
    if args.format != "table":
        # Machine formats keep stdout clean; the expiry goes to the terminal.
        expiry = describe_expiry(credentials.expires_at, credentials.expires_in)
        _say(f"rsauth: {credentials.method} login for {credentials.user}, expires {expiry}",
             sys.stderr)
    if args.format == "pgpass":
        # A pgpass line holds no TLS settings; libpq has no default root certificate.
        _say(f"rsauth: psql also needs PGSSLMODE=verify-full PGSSLROOTCERT={sslrootcert}",
             sys.stderr)
    return 0


def _write_pgpass(file: str, credentials: Credentials) -> int:
    path = Path(file) if file else default_pgpass_path(os.environ)
    done = write_pgpass(path, credentials)
    if done.was_exposed:
        _say(f"rsauth: WARNING: {str(path)!r} was readable by other users (libpq ignored it); "
             "it is now 0600, but the passwords it held may have been read", sys.stderr)
    expiry = describe_expiry(credentials.expires_at, credentials.expires_in)
    action = "replaced its entry" if done.replaced else "added an entry"
    _say(f"rsauth: {action} in {str(path)!r} for {credentials.user} on {credentials.host}:"
         f"{credentials.port}/{credentials.database}; {credentials.method} login, "
         f"expires {expiry}", sys.stderr)
    return 0


def _statement(args: argparse.Namespace) -> str:
    statement: str = args.statement
    if statement == "-":
        statement = sys.stdin.read()
    if not statement.strip():
        raise CommandError("the statement is empty; pass it as an argument, or '-' to read stdin")
    return statement


def _execute(connection: Any, statement: str) -> tuple[list[str] | None, list[Any], int]:
    cursor = connection.cursor()
    try:
        cursor.execute(statement)
        if cursor.description is None:
            return None, [], cursor.rowcount
        columns = [str(column[0]) for column in cursor.description]
        return columns, [list(row) for row in cursor.fetchall()], cursor.rowcount
    except DriverError as exc:
        fields = server_error(exc)
        if fields is None:
            raise
        raise CommandError(
            f"the database refused the statement: {fields.get('M', 'error')} "
            f"(SQLSTATE {fields.get('C', '?')})"
        ) from exc
    finally:
        cursor.close()


def run_sql(args: argparse.Namespace, context: Context) -> int:
    statement = _statement(args)
    with Broker() as broker, broker.connect(**context.arguments) as connection:
        # One statement, committed as it runs (DDL and VACUUM included).
        connection.autocommit = True
        columns, rows, rowcount = _execute(connection, statement)
    if columns is None:
        affected = f"; {rowcount} row(s) affected" if rowcount >= 0 else ""
        _say(f"rsauth: the statement returned no rows{affected}", sys.stderr)
        return 0
    _say(format_rows(columns, rows, args.format))
    return 0


def run_psql(args: argparse.Namespace, context: Context) -> int:
    psql = shutil.which(args.psql)
    if psql is None and os.sep in args.psql:
        raise CommandError(
            f"--psql {args.psql!r} does not exist or is not executable; pass the path of the "
            "psql program, or leave --psql out to use psql on PATH"
        )
    if psql is None:
        raise CommandError(
            f"{args.psql!r} was not found on PATH; install the PostgreSQL client (Debian/Ubuntu: "
            "apt-get install postgresql-client, macOS: brew install libpq), pass --psql PATH, "
            "or use: eval \"$(rsauth credentials --format env)\""
        )
    with Broker() as broker:
        credentials = broker.credentials(**context.arguments)
    refuse_control_characters(credentials, "psql's environment", ca_file())
    env = dict(os.environ)
    # The login goes into the child's environment only, never onto its command line.
    env.update(credentials.as_env(sslrootcert=ca_file(), environ={}))
    argv = [psql, *args.psql_args]
    expiry = describe_remaining(credentials.expires_in)
    _say(f"rsauth: psql as {credentials.user} on {credentials.host}:{credentials.port}/"
         f"{credentials.database} ({credentials.method} login, expires {expiry})", sys.stderr)
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(psql, argv, env)  # noqa: S606 - psql found on PATH, arguments as given
    return subprocess.call(argv, env=env)  # noqa: S603 - psql from PATH, our own arguments


def run_whoami(args: argparse.Namespace, context: Context) -> int:
    identity = context.caller_identity()
    with Broker() as broker:
        with broker.connect(**context.arguments) as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(WHOAMI_QUERY)
                row = cursor.fetchone()
            finally:
                cursor.close()
            origin = connection_origin(connection)
        credentials = broker.credentials(**context.arguments)
    user = str(row[0]) if row else "?"
    superuser = bool(row and row[1] is True)
    rows = [
        ("AWS identity", identity["Arn"]),
        ("AWS account", identity["Account"]),
        ("database user", user),
        ("method", origin.method if origin is not None else credentials.method),
        ("superuser", "yes" if superuser else "no"),
        ("workgroup", credentials.workgroup or "-"),
        ("database", credentials.database),
        ("endpoint", f"{credentials.host}:{credentials.port}"),
        ("login expires", describe_expiry(credentials.expires_at, credentials.expires_in)),
    ]
    _say(key_value_table(rows))
    return 0


def run_sandbox(argv: Sequence[str]) -> int:
    try:
        from rsauth.sandbox.__main__ import main as sandbox_main
    except ImportError as exc:
        raise CommandError(
            f"the sandbox needs the 'sandbox' extra: pip install 'rsauth[sandbox]' ({exc})"
        ) from exc
    return sandbox_main(list(argv), prog="rsauth sandbox")
