"""The ``rsauth`` command (also ``python -m rsauth``).

Subcommands: ``credentials``, ``sql``, ``psql``, ``whoami``, ``copy``,
``unload``, ``doctor`` and ``sandbox``. Exit codes: 0 done, 1 failed, 2 usage
error (a malformed option or ``RSAUTH_*`` variable). An error is one line on
stderr; ``--debug`` adds the traceback and rsauth's DEBUG log lines (which never
hold a secret).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

from rsauth._cli._commands import run_credentials, run_psql, run_sandbox, run_sql, run_whoami
from rsauth._cli._context import (
    COMMON_OPTIONS,
    CommandError,
    Context,
    UsageError,
    cli_wording,
)
from rsauth._cli._doctor import run_doctor
from rsauth._cli._etl import (
    COPY_EPILOG,
    UNLOAD_EPILOG,
    add_etl_arguments,
    run_copy,
    run_unload,
)
from rsauth._cli._formats import CREDENTIAL_FORMATS, ROW_FORMATS
from rsauth._cli._proxy import PROXY_SUMMARY, run_proxy
from rsauth._config import METHODS
from rsauth._errors import RsauthError

__all__ = ["build_parser", "main"]

PROG = "rsauth"

# Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_Handler = Callable[[argparse.Namespace, Context], int]

_DESCRIPTION = """\
Log in to Amazon Redshift Serverless without handling a password: IAM temporary
credentials, the admin secret in Secrets Manager, or a superuser role, fetched
and cached the way rsauth.connect() does it."""

_EPILOG = """\
examples:
  rsauth doctor --workgroup analytics          why can this machine not log in?
  rsauth whoami --workgroup analytics          who am I in AWS and in the database?
  eval "$(rsauth credentials --format env)"    PGHOST, PGUSER, PGPASSWORD, ... for libpq tools
  rsauth sql "select current_user"             run one statement, print the rows
  rsauth psql -- -c "select 1"                 psql with the login in its environment

Options not given come from RSAUTH_WORKGROUP, RSAUTH_DATABASE, RSAUTH_METHOD,
RSAUTH_DURATION, RSAUTH_SECRET_ID, RSAUTH_ROLE_ARN and the AWS_* variables.
Exit codes: 0 ok, 1 failed, 2 usage error."""

_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "credentials": (
        "print a login (the password masked unless a machine format is asked for)",
        """\
examples:
  rsauth credentials --workgroup analytics                 who, where, until when (masked)
  eval "$(rsauth credentials --format env)"                export PGHOST ... PGSSLROOTCERT
  psql "$(rsauth credentials --format uri)"                a percent-encoded postgresql:// URI
  rsauth credentials --write-pgpass                        into ~/.pgpass (or $PGPASSFILE), 0600
  rsauth credentials --format json | jq .expires_at        everything, for programs

table (the default) masks the password; env, json, uri and pgpass print it.
--write-pgpass replaces this login's earlier entry and keeps the file private;
prefer it to appending "--format pgpass" output with >>, which makes a file
other users can read under the usual umask (and libpq then ignores it). An
IAM login expires (--duration): run it again to replace the entry.

env and uri also set PGSSLMODE=verify-full and PGSSLROOTCERT (SSL_CERT_FILE, else
the Redshift CA bundle redshift_connector ships): libpq ignores SSL_CERT_FILE and
otherwise defaults to a mode that does not check the server. pgpass holds no TLS
settings: stderr names the PGSSLMODE and PGSSLROOTCERT psql needs besides.""",
    ),
    "sql": (
        "run one statement and print the rows",
        """\
examples:
  rsauth sql "select current_user, current_database()"
  rsauth sql "select * from sales limit 10" --format csv > sales.csv
  rsauth sql - --format json < report.sql

The statement runs in autocommit mode (DDL, INSERT and VACUUM take effect).""",
    ),
    "psql": (
        "run psql with the login in its environment (never on its command line)",
        """\
examples:
  rsauth psql --workgroup analytics
  rsauth psql -- -c "select current_user"      arguments after -- go to psql
  rsauth psql --method secret -- -f setup.sql""",
    ),
    "whoami": (
        "show the AWS identity, the database user it maps to, and whether it is a superuser",
        """\
examples:
  rsauth whoami --workgroup analytics
  rsauth whoami --role-arn arn:aws:iam::123456789012:role/etl""",
    ),
    "copy": (
        "load a table from S3 with COPY, the IAM role checked against the namespace first",
        COPY_EPILOG,
    ),
    "unload": (
        "write a query's result to S3 with UNLOAD, the IAM role checked first",
        UNLOAD_EPILOG,
    ),
    "doctor": (
        "check, step by step, everything a login needs",
        """\
Checks, in order: region, AWS credentials, caller identity, workgroup found and
AVAILABLE, endpoint resolves and accepts connections, TLS verifies,
GetCredentials permitted, admin secret readable, default IAM role set, and a
real login. The login connects and runs one query: it resumes a sleeping
Serverless workgroup, whose compute is billed; --no-login skips it. Each line
is ✓ (passed), ✗ (failed, with what to do), ! (a note: not needed for this
login method) or - (skipped: a check it needs failed).
Exits 1 when a required check failed.

examples:
  rsauth doctor --workgroup analytics
  rsauth doctor --workgroup analytics --method secret
  rsauth doctor --workgroup analytics --role-arn arn:aws:iam::123456789012:role/etl
  rsauth doctor --workgroup analytics --no-login   no connection: nothing billed""",
    ),
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("login options (as for rsauth.connect)")
    for name, text in COMMON_OPTIONS:
        flag = "--" + name.replace("_", "-")
        if name == "method":
            group.add_argument(
                flag, choices=[m for m in METHODS if m != "password"], help=text
            )
        else:
            metavar = {
                "duration": "SECONDS", "resume_timeout": "SECONDS", "custom_domain": "DOMAIN"
            }.get(name, name.upper())
            group.add_argument(flag, dest=name, metavar=metavar, help=text)
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on failure, print the traceback; log rsauth's DEBUG lines to stderr",
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's parser, by name."""
    from rsauth import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {__version__} (Python {sys.version.split()[0]})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="on failure, print the traceback; log rsauth's DEBUG lines to stderr",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (summary, epilog) in _SUBCOMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(sub)
        parsers[name] = sub
    parsers["credentials"].add_argument(
        "--format",
        choices=list(CREDENTIAL_FORMATS),
        default="table",
        help="table (default, password masked), json, env, uri or pgpass",
    )
    parsers["credentials"].add_argument(
        "--write-pgpass",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="merge the login into libpq's password file, kept private (0600): FILE, "
        "else $PGPASSFILE, else ~/.pgpass; prints no password",
    )
    parsers["doctor"].add_argument(
        "--no-login",
        action="store_true",
        help="skip the real login (it resumes a sleeping workgroup and costs compute)",
    )
    parsers["sql"].add_argument("statement", help="the SQL statement, or - to read it from stdin")
    parsers["sql"].add_argument(
        "--format", choices=list(ROW_FORMATS), default="table", help="table (default), csv or json"
    )
    parsers["psql"].add_argument(
        "--psql", default="psql", metavar="PATH", help="the psql program (default: psql on PATH)"
    )
    parsers["psql"].add_argument(
        "psql_args", nargs="*", metavar="-- PSQL_ARGS", help="arguments for psql, after --"
    )
    add_etl_arguments(parsers["copy"], "copy")
    add_etl_arguments(parsers["unload"], "unload")
    parsers["sandbox"] = commands.add_parser(
        "sandbox",
        add_help=False,
        help="run the local Redshift Serverless sandbox (python -m rsauth.sandbox)",
        description="The same as python -m rsauth.sandbox (rsauth sandbox --help: its options).",
    )
    parsers["proxy"] = commands.add_parser(
        "proxy", add_help=False, help=PROXY_SUMMARY, description="rsauth proxy --help: its options."
    )
    return parser, parsers


_HANDLERS: dict[str, _Handler] = {
    "credentials": run_credentials,
    "sql": run_sql,
    "psql": run_psql,
    "whoami": run_whoami,
    "doctor": lambda args, context: run_doctor(context, login=not args.no_login),
    "copy": run_copy,
    "unload": run_unload,
}


@contextlib.contextmanager
def _logging_to_stderr(debug: bool) -> Iterator[None]:
    """rsauth's WARNINGs (DEBUG lines too with --debug) on stderr, for this run only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rsauth: %(levelname)s: %(message)s"))
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger = logging.getLogger("rsauth")
    level = logger.level
    logger.addHandler(handler)
    if debug:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rsauth`` command; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser()
    args, extra = parser.parse_known_args(arguments)  # exits 2 on a usage error, 0 on --help
    debug = bool(getattr(args, "debug", False))
    command: str = args.command
    if command == "sandbox":
        return _guarded(lambda: run_sandbox(extra), command, debug)
    if command == "proxy":
        with _logging_to_stderr(debug or "--debug" in extra):
            return _guarded(lambda: run_proxy(extra), command, debug)
    if extra:
        hint = "; put psql's own arguments after --" if command == "psql" else ""
        parsers[command].error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    options = {name: getattr(args, name) for name, _ in COMMON_OPTIONS}

    def run() -> int:
        context = Context(options)
        try:
            return _HANDLERS[command](args, context)
        finally:
            context.close()

    with _logging_to_stderr(debug):
        return _guarded(run, command, debug)


def _guarded(run: Callable[[], int], command: str, debug: bool) -> int:
    """Run a subcommand; an error becomes one line on stderr and an exit code."""
    try:
        return run()
    except UsageError as exc:
        return _fail(f"{PROG} {command}: error: {exc}", EXIT_USAGE, debug)
    except (RsauthError, CommandError) as exc:
        return _fail(f"{PROG} {command}: error: {cli_wording(exc)}", EXIT_FAILED, debug)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        hint = "" if debug else "; run again with --debug for the traceback"
        return _fail(f"{PROG} {command}: unexpected error: {text}{hint}", EXIT_FAILED, debug)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(" ".join(message.split()), file=sys.stderr)
    return code
