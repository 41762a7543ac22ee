"""``rsauth copy`` and ``rsauth unload``: rsauth.etl from a shell, committed as they run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rsauth import etl
from rsauth._broker import Broker
from rsauth._cli._context import Context, UsageError, cli_wording
from rsauth._errors import ConfigurationError

__all__ = ["add_etl_arguments", "run_copy", "run_unload"]

COPY_EPILOG = """\
examples:
  rsauth copy staging.sales s3://acme-etl/sales/2024-06-01.csv -o ignore_header=1
  rsauth copy sales s3://acme-etl/sales/ --format parquet \
      --iam-role arn:aws:iam::123456789012:role/etl
  rsauth copy events s3://acme-etl/events.manifest --format json -o manifest -o gzip
  rsauth copy sales s3://acme-etl/sales/ -o ignore_header=1 --print-sql     the SQL only

Before running, the IAM role is checked against the workgroup's namespace (default:
its default IAM role). Options are rsauth.etl's (-o NAME=VALUE, a bare NAME is true),
named after Redshift's in snake case. The load is committed when it succeeds."""

UNLOAD_EPILOG = """\
examples:
  rsauth unload "select * from sales where region = 'EU'" s3://acme-etl/out/eu_ -o header
  rsauth unload "select * from sales" s3://acme-etl/out/sales_ --format parquet -o manifest
  rsauth unload - s3://acme-etl/out/report_ -o parallel=off < report.sql

Prints the number of rows and the files written (from the manifest with -o manifest)."""


def add_etl_arguments(parser: argparse.ArgumentParser, statement: str) -> None:
    if statement == "copy":
        parser.add_argument("table", help="the table to load, e.g. sales or staging.sales")
        parser.add_argument("source", help="s3://bucket/key: an object, a prefix or a manifest")
        parser.add_argument(
            "--columns", metavar="A,B,...", help="load these columns only, in the file's order"
        )
    else:
        parser.add_argument("query", help="the SELECT to unload, or - to read it from stdin")
        parser.add_argument("destination", help="s3://bucket/prefix the files are named after")
    parser.add_argument(
        "--iam-role",
        default="default",
        metavar="ROLE",
        help="default (the namespace's default IAM role), a role ARN, or ARN1,ARN2 (a chain)",
    )
    parser.add_argument("--format", choices=list(etl.FORMATS), default="csv")
    parser.add_argument(
        "-o",
        "--option",
        dest="etl_options",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="a COPY/UNLOAD option, e.g. ignore_header=1, gzip, null_as=NULL (repeatable)",
    )
    parser.add_argument(
        "--no-check-role",
        dest="check_role",
        action="store_false",
        help="do not check the IAM role against the namespace first",
    )
    parser.add_argument(
        "--print-sql", action="store_true", help="print the statement and exit (no login)"
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in args.etl_options:
        name, _, value = item.partition("=")
        options[name.strip()] = etl._parse_option(name.strip(), value)
    return options


def _checked(build: Any) -> str:
    """The statement, or a usage error (exit code 2) for a malformed option."""
    try:
        sql: str = build()
    except ConfigurationError as exc:
        raise UsageError(cli_wording(exc)) from exc
    return sql


def run_copy(args: argparse.Namespace, context: Context) -> int:
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    try:
        options = _options(args)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from exc
    sql = _checked(lambda: etl.copy_sql(args.table, args.source, iam_role=args.iam_role,
                                        format=args.format, columns=columns, **options))
    if args.print_sql:
        print(sql)
        return 0
    with Broker() as broker, broker.connect(**context.arguments) as connection:
        rows = etl.copy(connection, args.table, args.source, iam_role=args.iam_role,
                        format=args.format, columns=columns, check_role=args.check_role,
                        **options)
        connection.commit()
    count = "an unreported number of" if rows < 0 else str(rows)
    print(f"{count} row(s) loaded into {args.table} from {args.source}")
    return 0


def run_unload(args: argparse.Namespace, context: Context) -> int:
    query: str = sys.stdin.read() if args.query == "-" else args.query
    try:
        options = _options(args)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from exc
    sql = _checked(lambda: etl.unload_sql(query, args.destination, iam_role=args.iam_role,
                                          format=args.format, **options))
    if args.print_sql:
        print(sql)
        return 0
    with Broker() as broker, broker.connect(**context.arguments) as connection:
        result = etl.unload(connection, query, args.destination, iam_role=args.iam_role,
                            format=args.format, check_role=args.check_role, **options)
        connection.commit()
    rows = "an unreported number of" if result.rows < 0 else str(result.rows)
    print(f"{rows} row(s) unloaded to {args.destination}")
    if result.manifest:
        print(f"manifest {result.manifest}")
    if result.files is None:
        print("rsauth: the files written could not be listed (no S3 access)", file=sys.stderr)
    for url in result.files or ():
        print(url)
    return 0
