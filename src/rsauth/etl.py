"""COPY and UNLOAD with IAM roles: built safely, checked against the namespace, then run.

::

    import rsauth
    from rsauth import etl

    conn = rsauth.connect(workgroup="analytics")
    rows = etl.copy(conn, "staging.sales", "s3://acme-etl/sales/2024-06-01.csv", ignore_header=1)
    result = etl.unload(conn, "select * from sales where region = 'EU'", "s3://acme-etl/out/eu_")
    conn.commit()

:func:`copy_sql` and :func:`unload_sql` only build the statement: identifiers
are quoted where SQL needs it, literals escaped the way Redshift reads them
(``'`` and ``\\`` doubled, as ``QUOTE_LITERAL`` does), S3 URIs and role ARNs
validated, and ``IAM_ROLE default`` written unquoted. No AWS key ever goes
into the SQL: the options that would put one there are refused, because a
statement ends up in Redshift's query history, in driver logs and in error
messages.

:func:`copy` and :func:`unload` first check the role against the workgroup's
namespace (``GetWorkgroup`` → ``GetNamespace``, cached by the Broker):
``default`` needs a default IAM role, an ARN (the first of a chain) must be
associated. A connection rsauth opened remembers its Broker and workgroup;
for another one pass ``workgroup=`` (and ``broker=``), or ``check_role=False``.
The statement runs in the connection's current transaction: ``commit()`` to
keep a load (an autocommit connection keeps it at once); after a failure,
Redshift has aborted that transaction and it needs a ``rollback()``.

Options are keyword arguments named after Redshift's, in snake case; the
table :data:`OPTIONS` says which statement and format accepts each.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from redshift_connector.error import Error as DriverError

from rsauth._driver import server_error
from rsauth._errors import (
    ConfigurationError,
    ConnectError,
    IamRoleError,
    LoadError,
    python_only,
)

if TYPE_CHECKING:
    from rsauth._broker import Broker
    from rsauth._roles import NamespaceRoles

__all__ = [
    "FORMATS",
    "OPTIONS",
    "Option",
    "UnloadResult",
    "copy",
    "copy_sql",
    "unload",
    "unload_sql",
]

logger = logging.getLogger("rsauth")

FORMATS: Final = ("csv", "json", "parquet")
"""The data formats ``copy`` and ``unload`` write: ``format=`` takes one of these."""

# --------------------------------------------------------------------------- the option table


@dataclass(frozen=True)
class Option:
    """One Redshift option: its SQL keyword, the Python value it takes, where it is accepted.

    ``kind`` is one of ``flag`` (``True`` writes the keyword, ``False`` leaves it out),
    ``on_off`` (``True``/``False`` → ``ON``/``OFF``), ``count`` (a whole number ≥ 0),
    ``char`` (one ASCII character), ``text`` (a string literal), ``region``, ``size``
    (megabytes as an int, or a string such as ``"1 GB"``), ``json_paths`` (``"auto"``,
    ``"auto ignorecase"`` or the ``s3://`` URI of a JSONPaths file) and ``manifest``
    (``True``, or ``"verbose"`` for UNLOAD). ``copy``/``unload``: the formats each
    statement accepts the option with (empty: not an option of that statement).
    """

    keyword: str
    kind: str
    copy: frozenset[str]
    unload: frozenset[str]


_NONE: Final[frozenset[str]] = frozenset()
_CSV: Final = frozenset({"csv"})
_ROWS: Final = frozenset({"csv", "json"})
_ALL: Final = frozenset(FORMATS)

# The single table of options: name → (keyword, value kind, COPY formats, UNLOAD formats).
OPTIONS: Final[Mapping[str, Option]] = {
    "json_paths": Option("JSON", "json_paths", frozenset({"json"}), _NONE),
    "quote_as": Option("QUOTE AS", "char", _CSV, _NONE),
    "delimiter": Option("DELIMITER", "char", _CSV, _CSV),
    "header": Option("HEADER", "flag", _NONE, _CSV),
    "ignore_header": Option("IGNOREHEADER", "count", _CSV, _NONE),
    "null_as": Option("NULL AS", "text", _CSV, _CSV),
    "empty_as_null": Option("EMPTYASNULL", "flag", _ROWS, _NONE),
    "blanks_as_null": Option("BLANKSASNULL", "flag", _ROWS, _NONE),
    "fill_record": Option("FILLRECORD", "flag", _CSV, _NONE),
    "trim_blanks": Option("TRIMBLANKS", "flag", _ROWS, _NONE),
    "ignore_blank_lines": Option("IGNOREBLANKLINES", "flag", _CSV, _NONE),
    "truncate_columns": Option("TRUNCATECOLUMNS", "flag", _ROWS, _NONE),
    "accept_any_date": Option("ACCEPTANYDATE", "flag", _ROWS, _NONE),
    "dateformat": Option("DATEFORMAT", "text", _ROWS, _NONE),
    "timeformat": Option("TIMEFORMAT", "text", _ROWS, _NONE),
    "max_error": Option("MAXERROR", "count", _ROWS, _NONE),
    "explicit_ids": Option("EXPLICIT_IDS", "flag", _ROWS, _NONE),
    "noload": Option("NOLOAD", "flag", _ALL, _NONE),
    "comp_update": Option("COMPUPDATE", "on_off", _ALL, _NONE),
    "stat_update": Option("STATUPDATE", "on_off", _ALL, _NONE),
    "gzip": Option("GZIP", "flag", _ROWS, _ROWS),
    "bzip2": Option("BZIP2", "flag", _ROWS, _ROWS),
    "zstd": Option("ZSTD", "flag", _ROWS, _ROWS),
    "extension": Option("EXTENSION", "text", _NONE, _ALL),
    "manifest": Option("MANIFEST", "manifest", _ALL, _ALL),
    "allow_overwrite": Option("ALLOWOVERWRITE", "flag", _NONE, _ALL),
    "cleanpath": Option("CLEANPATH", "flag", _NONE, _ALL),
    "parallel": Option("PARALLEL", "on_off", _NONE, _ALL),
    "max_file_size": Option("MAXFILESIZE", "size", _NONE, _ALL),
    "row_group_size": Option("ROWGROUPSIZE", "size", _NONE, frozenset({"parquet"})),
    "region": Option("REGION", "region", _ALL, _ALL),
}
"""Every option ``copy`` and ``unload`` take, by keyword argument name."""

# Options that would write an AWS secret into the statement.
_REFUSED: Final = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "credentials",
        "with_credentials",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "token",
        "master_symmetric_key",
    }
)
_NO_KEYS = (
    "rsauth.etl never writes AWS keys into SQL: the statement is kept in Redshift's query "
    "history (SYS_QUERY_HISTORY, STL_QUERY), in driver logs and in error messages. Associate "
    "an IAM role with the namespace and pass iam_role=\"default\" or iam_role=\"<role ARN>\""
)
# An access key id, or a credentials string, anywhere in a value.
_KEY_LIKE = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|aws_secret_access_key\s*=|aws_access_key_id\s*=", re.I
)

_COMPRESSIONS: Final = ("gzip", "bzip2", "zstd")
_MAX_CHAIN = 10

# Amazon Redshift's reserved words (Database Developer Guide, "Reserved words"), with a few
# newer ones and PostgreSQL's own: a bare identifier among them is quoted.
_RESERVED: Final = frozenset(
    """
    AES128 AES256 ALL ALLOWOVERWRITE ANALYSE ANALYZE AND ANY ARRAY AS ASC AUTHORIZATION AZ64
    BACKUP BETWEEN BINARY BLANKSASNULL BOTH BYTEDICT BZIP2 CASE CAST CHECK COLLATE COLUMN
    CONSTRAINT CREATE CREDENTIALS CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP
    CURRENT_USER CURRENT_USER_ID DEFAULT DEFERRABLE DEFLATE DEFRAG DELTA DELTA32K DESC
    DISABLE DISTINCT DO ELSE EMPTYASNULL ENABLE ENCODE ENCRYPT ENCRYPTION END EXCEPT EXPLICIT
    FALSE FOR FOREIGN FREEZE FROM FULL GLOBALDICT256 GLOBALDICT64K GRANT GROUP GZIP HAVING
    IDENTITY IGNORE ILIKE IN INITIALLY INNER INTERSECT INTERVAL INTO IS ISNULL JOIN LANGUAGE
    LEADING LEFT LIKE LIMIT LOCALTIME LOCALTIMESTAMP LUN LUNS LZO LZOP MINUS MOSTLY13
    MOSTLY16 MOSTLY32 MOSTLY8 NATURAL NEW NOT NOTNULL NULL NULLS OFF OFFLINE OFFSET OID OLD
    ON ONLY OPEN OR ORDER OUTER OVERLAPS PARALLEL PARTITION PERCENT PERMISSIONS PIVOT PLACING
    PRIMARY RAW READRATIO RECOVER REFERENCES REJECTLOG RESORT RESPECT RESTORE RIGHT SELECT
    SESSION_USER SIMILAR SNAPSHOT SOME SYSDATE SYSTEM TABLE TAG TDES TEXT255 TEXT32K THEN
    TIMESTAMP TO TOP TRAILING TRUE TRUNCATECOLUMNS UNION UNIQUE UNNEST UNPIVOT USER USING
    VERBOSE WALLET WHEN WHERE WITH WITHOUT
    ASYMMETRIC CURRENT_CATALOG CURRENT_ROLE CURRENT_SCHEMA FETCH LATERAL RETURNING SYMMETRIC
    VARIADIC WINDOW
    """.split()  # noqa: SIM905 - a word list, laid out as the documentation prints it
)

# --------------------------------------------------------------------------- building blocks

_BARE = re.compile(r"[a-z_][a-z0-9_$]*")
_UNQUOTED = re.compile(r"[^\W\d][\w$]*")
_MAX_IDENTIFIER_BYTES = 127
_ROLE_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII
)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}", re.ASCII)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(MB|GB)", re.I | re.ASCII)


def _literal(value: str) -> str:
    """A Redshift string literal holding exactly ``value``.

    Redshift reads a backslash in a literal as an escape (``QUOTE_LITERAL`` doubles
    both ``'`` and ``\\``); a tab is written ``\\t``, as the COPY and UNLOAD examples do.
    """
    if "\0" in value:
        raise ConfigurationError("a NUL character cannot be part of a SQL string literal")
    escaped = value.replace("\\", "\\\\").replace("'", "''").replace("\t", "\\t")
    return f"'{escaped}'"


def _fold(name: str) -> str:
    """SQL's case folding of an unquoted identifier: ASCII letters only."""
    return "".join(ch.lower() if ch.isascii() else ch for ch in name)


def _identifier(name: str, what: str) -> str:
    """``name`` (an exact identifier) as SQL text: bare when SQL reads it back unchanged."""
    if not name:
        raise ConfigurationError(f"{what}: an identifier cannot be empty")
    if not name.isprintable():
        raise ConfigurationError(
            f"{what}: {name!r} holds a control character (newline, tab, ...); Redshift "
            "identifiers are printable UTF-8 only"
        )
    if len(name.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ConfigurationError(
            f"{what}: {name[:40]!r}... is longer than Redshift's {_MAX_IDENTIFIER_BYTES} bytes"
        )
    if _BARE.fullmatch(name) and name.upper() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def _parse_name(text: object, what: str, *, max_parts: int) -> list[str]:
    """A SQL name as written (``schema.table``, ``"My Schema"."t"``) → its exact parts."""
    if not isinstance(text, str) or not text:
        raise ConfigurationError(f"{what}={text!r}: expected a non-empty string such as 'sales'")
    parts: list[str] = []
    i = 0
    while True:
        if text.startswith('"', i):
            pieces: list[str] = []
            j = i + 1
            while True:
                close = text.find('"', j)
                if close < 0:
                    raise ConfigurationError(f"{what}={text!r}: unterminated double quote")
                pieces.append(text[j:close])
                if text.startswith('"', close + 1):
                    pieces.append('"')
                    j = close + 2
                    continue
                i = close + 1
                break
            parts.append("".join(pieces))
        else:
            match = _UNQUOTED.match(text, i)
            if match is None:
                raise ConfigurationError(
                    f"{what}={text!r}: not a valid name; unquoted parts are letters, digits, "
                    "'_' and '$' not starting with a digit; write others in double quotes "
                    "('\"my table\"') or as schema.table"
                )
            parts.append(_fold(match.group()))
            i = match.end()
        if i == len(text):
            break
        if text[i] != ".":
            raise ConfigurationError(
                f"{what}={text!r}: unexpected {text[i]!r} after {text[:i]!r}; names are "
                "separated by '.', special characters go inside double quotes"
            )
        i += 1
    if len(parts) > max_parts:
        raise ConfigurationError(f"{what}={text!r}: at most {max_parts} dotted part(s)")
    return parts


def _table(table: object) -> str:
    return ".".join(_identifier(part, "table") for part in _parse_name(table, "table", max_parts=3))


def _columns(columns: Sequence[str] | None) -> str:
    if columns is None:
        return ""
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise ConfigurationError(
            f"columns={columns!r}: expected a list of column names, e.g. ['id', 'name']"
        )
    if not columns:
        raise ConfigurationError("columns=[]: leave it out (None) to load every column")
    names = [
        _identifier(_parse_name(column, "columns", max_parts=1)[0], "columns")
        for column in columns
    ]
    return " (" + ", ".join(names) + ")"


def _s3_uri(value: object, what: str) -> str:
    """A validated ``s3://bucket/key`` URI (the key may be empty, a prefix, or an object)."""
    if not isinstance(value, str) or not value.startswith("s3://"):
        raise ConfigurationError(f"{what}={value!r}: expected an S3 URI 's3://bucket/key'")
    bucket, _, key = value[len("s3://") :].partition("/")
    if not (
        _BUCKET.fullmatch(bucket)
        and ".." not in bucket
        and not _IPV4.fullmatch(bucket)
        and not bucket.startswith(("xn--", "sthree-"))
        and not bucket.endswith(("-s3alias", "--ol-s3"))
    ):
        raise ConfigurationError(
            f"{what}={value!r}: {bucket!r} is not a valid S3 bucket name (3 to 63 lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit, not "
            "an IP address)"
        )
    if len(key.encode()) > 1024:
        raise ConfigurationError(f"{what}={value[:60]!r}...: an S3 key is at most 1024 bytes")
    if not key.isprintable():
        raise ConfigurationError(
            f"{what}={value!r}: the key holds a control character (newline, tab, ...)"
        )
    return value


# --------------------------------------------------------------------------- IAM roles


@dataclass(frozen=True)
class _Role:
    default: bool
    chain: tuple[str, ...] = ()

    @property
    def sql(self) -> str:
        return "IAM_ROLE default" if self.default else "IAM_ROLE " + _literal(",".join(self.chain))

    @property
    def first(self) -> str:
        return "default" if self.default else self.chain[0]


def _role(iam_role: object) -> _Role:
    if iam_role is None:
        raise ConfigurationError(f"iam_role=None: an IAM role is required. {_NO_KEYS}")
    if isinstance(iam_role, str):
        if iam_role.strip().lower() == "default":
            return _Role(default=True)
        arns = [part.strip() for part in iam_role.split(",")]
    elif isinstance(iam_role, Sequence) and all(isinstance(arn, str) for arn in iam_role):
        arns = [arn.strip() for arn in iam_role]
    else:
        raise ConfigurationError(
            f"iam_role={iam_role!r}: expected \"default\", a role ARN, or a list of role ARNs"
        )
    if not arns or not 1 <= len(arns) <= _MAX_CHAIN:
        raise ConfigurationError(
            f"iam_role: a role chain holds 1 to {_MAX_CHAIN} role ARNs, got {len(arns)}"
        )
    for arn in arns:
        if arn.lower() == "default":
            raise ConfigurationError("iam_role: \"default\" cannot be part of a role chain")
        if not _ROLE_ARN.fullmatch(arn):
            raise ConfigurationError(
                f"iam_role: {arn!r} is not an IAM role ARN; expected "
                "'arn:aws:iam::123456789012:role/RedshiftCopy' (12-digit account id)"
            )
    return _Role(default=False, chain=tuple(arns))


# --------------------------------------------------------------------------- options


def _accepted(statement: str, fmt: str) -> list[str]:
    return sorted(
        name for name, option in OPTIONS.items() if fmt in getattr(option, statement)
    )


def _unknown(name: str, statement: str, fmt: str) -> ConfigurationError:
    if name.lower() in _REFUSED:
        return ConfigurationError(f"{name}= is refused: {_NO_KEYS}")
    close = difflib.get_close_matches(name, OPTIONS, n=1)
    hint = f" (did you mean {close[0]}=?)" if close else ""
    return ConfigurationError(
        f"{statement.upper()}: unknown option {name}={hint}; accepted with format={fmt!r}: "
        + ", ".join(_accepted(statement, fmt))
    )


def _render(name: str, option: Option, value: object, statement: str) -> str | None:
    """The option's SQL, or None when the value leaves it out; raises for a wrong type."""
    keyword, kind = option.keyword, option.kind

    def wrong(expected: str) -> ConfigurationError:
        return ConfigurationError(f"{name}={value!r}: expected {expected} ({keyword})")

    if kind == "flag":
        if not isinstance(value, bool):
            raise wrong("True or False")
        return keyword if value else None
    if kind == "on_off":
        if not isinstance(value, bool):
            raise wrong("True (ON) or False (OFF)")
        return f"{keyword} {'ON' if value else 'OFF'}"
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise wrong("a whole number, 0 or more")
        return f"{keyword} {value}"
    if kind == "char":
        if not (isinstance(value, str) and len(value) == 1 and value.isascii()) or (
            value in "\0\n\r"
        ):
            raise wrong("one ASCII character other than NUL, newline or carriage return")
        return f"{keyword} {_literal(value)}"
    if kind == "text":
        if not isinstance(value, str):
            raise wrong("a string")
        return f"{keyword} {_literal(value)}"
    if kind == "region":
        if not isinstance(value, str) or not _REGION.fullmatch(value):
            raise wrong("an AWS region such as 'us-east-1'")
        return f"{keyword} {_literal(value)}"
    if kind == "size":
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return f"{keyword} {value} MB"
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise wrong("megabytes as a whole number, or a string such as '1 GB' or '100 MB'")
        return f"{keyword} {match.group(1)} {match.group(2).upper()}"
    if kind == "json_paths":
        if value in ("auto", "auto ignorecase"):
            return f"{keyword} {_literal(str(value))}"
        return f"{keyword} {_literal(_s3_uri(value, name))}"
    if kind == "manifest":
        if value == "verbose" and statement == "unload":
            return "MANIFEST VERBOSE"
        if not isinstance(value, bool):
            raise wrong("True or False" + (", or 'verbose'" if statement == "unload" else ""))
        return keyword if value else None
    raise AssertionError(f"unknown option kind {kind!r}")


def _clauses(statement: str, fmt: object, options: Mapping[str, object]) -> list[str]:
    if fmt not in FORMATS:
        raise ConfigurationError(f"format={fmt!r}: accepted: {', '.join(map(repr, FORMATS))}")
    assert isinstance(fmt, str)
    for name in options:
        if name not in OPTIONS:
            raise _unknown(name, statement, fmt)
        allowed = getattr(OPTIONS[name], statement)
        if fmt not in allowed:
            if not allowed:
                other = "UNLOAD" if statement == "copy" else "COPY"
                raise ConfigurationError(
                    f"{name}= is an {other} option, not a {statement.upper()} one; "
                    f"{statement.upper()} accepts with format={fmt!r}: "
                    + ", ".join(_accepted(statement, fmt))
                )
            raise ConfigurationError(
                f"{name}= is not accepted by {statement.upper()} with format={fmt!r} "
                f"(only with {', '.join(sorted(allowed))}); accepted with {fmt!r}: "
                + ", ".join(_accepted(statement, fmt))
            )
    compressed = [name for name in _COMPRESSIONS if options.get(name)]
    if len(compressed) > 1:
        raise ConfigurationError(f"{' and '.join(compressed)}: choose one compression")
    if options.get("allow_overwrite") and options.get("cleanpath"):
        raise ConfigurationError("allow_overwrite and cleanpath cannot be used together")
    for name, value in options.items():
        if isinstance(value, str) and _KEY_LIKE.search(value):
            raise ConfigurationError(f"{name}= looks like it holds an AWS key: {_NO_KEYS}")

    # The format first (QUOTE AS belongs to CSV, the JSONPaths to JSON), then the options
    # in the order they were given.
    if fmt == "json" and statement == "copy":
        paths = options.get("json_paths", "auto")
        head = _render("json_paths", OPTIONS["json_paths"], paths, statement) or ""
    elif fmt == "parquet" and statement == "copy":
        head = "FORMAT AS PARQUET"
    else:
        head = fmt.upper()
    if "quote_as" in options:
        quote = _render("quote_as", OPTIONS["quote_as"], options["quote_as"], statement)
        head += f" {quote}"
    clauses = [head]
    for name, value in options.items():
        if name in ("json_paths", "quote_as"):
            continue
        rendered = _render(name, OPTIONS[name], value, statement)
        if rendered is not None:
            clauses.append(rendered)
    return clauses


# --------------------------------------------------------------------------- building SQL


def copy_sql(
    table: str,
    source: str,
    *,
    iam_role: str | Sequence[str] = "default",
    format: str = "csv",
    columns: Sequence[str] | None = None,
    **options: Any,
) -> str:
    """``COPY table [(columns)] FROM 's3://…' IAM_ROLE … <format> <options>``, safe to run.

    ``table`` is a SQL name (``sales``, ``staging.sales``, ``"Sales 2024"``): unquoted
    parts fold to lowercase as in SQL. ``iam_role`` is ``"default"`` (the namespace's
    default role, written unquoted), a role ARN, or a chain (a list, or ``"arn1,arn2"``;
    up to 10). ``format``: ``"csv"``, ``"json"`` or ``"parquet"``. ``options``: see
    :data:`OPTIONS`. Raises :class:`ConfigurationError` for anything malformed.
    """
    role = _role(iam_role)
    head = f"COPY {_table(table)}{_columns(columns)}"
    clauses = _clauses("copy", format, options)
    lines = [head, f"FROM {_literal(_s3_uri(source, 'source'))}", role.sql, *clauses]
    return "\n".join(lines)


def unload_sql(
    query: str,
    destination: str,
    *,
    iam_role: str | Sequence[str] = "default",
    format: str = "csv",
    **options: Any,
) -> str:
    """``UNLOAD ('query') TO 's3://…' IAM_ROLE … <format> <options>``, safe to run.

    ``query`` is any SELECT; it becomes a string literal (quotes and backslashes
    escaped), so it is written exactly as you would run it. ``destination`` is the
    ``s3://bucket/prefix`` the files are named after. See :func:`copy_sql` for
    ``iam_role`` and ``format``, :data:`OPTIONS` for the options.
    """
    role = _role(iam_role)
    if not isinstance(query, str) or not query.strip():
        raise ConfigurationError(f"query={query!r}: expected a SELECT statement")
    if _KEY_LIKE.search(query):
        raise ConfigurationError(f"query looks like it holds an AWS key: {_NO_KEYS}")
    clauses = _clauses("unload", format, options)
    target = _s3_uri(destination, "destination")
    lines = [f"UNLOAD ({_literal(query)})", f"TO {_literal(target)}", role.sql, *clauses]
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class UnloadResult:
    """What an UNLOAD wrote.

    ``rows``: the record count Redshift reported (``-1`` if it reported none).
    ``files``: the ``s3://`` URIs written — from the manifest with ``manifest=``,
    otherwise the objects S3 lists under the prefix with UNLOAD's names
    (``<prefix>0000_part_00…``, ``<prefix>000…``); with ``allow_overwrite`` older
    parts of the same names may be among them. ``None`` when S3 could not be
    read with the caller's credentials (the UNLOAD itself succeeded).
    ``manifest``: the manifest's URI with ``manifest=``, else ``None``.
    """

    rows: int
    files: tuple[str, ...] | None
    manifest: str | None = None


_LOADED = re.compile(r"Load into table '.*' completed, (\d+) record\(s\) loaded successfully")
_UNLOADED = re.compile(r"UNLOAD completed, (\d+) record\(s\) unloaded successfully")
_PART = re.compile(r"\d{3,4}(?:_part_\d{2,})?(?:\.[^/]+)?")
# Redshift's refusals that are about the IAM role, not the data.
_ROLE_REFUSALS = (
    "not authorized to get credentials of role",
    "no default iam role",
    "is not authorized to assume iam role",
    "iam_role default was given",
)


def copy(
    connection: Any,
    table: str,
    source: str,
    *,
    iam_role: str | Sequence[str] = "default",
    format: str = "csv",
    columns: Sequence[str] | None = None,
    workgroup: str | None = None,
    broker: Broker | None = None,
    check_role: bool = True,
    **options: Any,
) -> int:
    """Run :func:`copy_sql` on ``connection``; returns the number of rows loaded.

    The count is Redshift's own (its ``Load into table … N record(s) loaded``
    notice, or the command tag), ``-1`` if the server reported neither. Before
    running, the role is checked against the namespace (see the module doc);
    ``check_role=False`` skips that. Raises :class:`IamRoleError` for a role the
    namespace cannot use, :class:`LoadError` when Redshift refuses or aborts the
    load, :class:`ConnectError` when the connection fails.
    """
    _require_redshift_connector(connection, "copy")
    sql = copy_sql(table, source, iam_role=iam_role, format=format, columns=columns, **options)
    role = _role(iam_role)
    if check_role:
        _check_role(connection, role, workgroup=workgroup, broker=broker)
    what = f"COPY into {table} from {source}"
    notices, rowcount = _execute(connection, sql, what)
    for text in reversed(notices):
        match = _LOADED.search(text)
        if match:
            return int(match.group(1))
    return rowcount if rowcount >= 0 else -1


def unload(
    connection: Any,
    query: str,
    destination: str,
    *,
    iam_role: str | Sequence[str] = "default",
    format: str = "csv",
    workgroup: str | None = None,
    broker: Broker | None = None,
    check_role: bool = True,
    s3_client: Any = None,
    **options: Any,
) -> UnloadResult:
    """Run :func:`unload_sql` on ``connection``; returns an :class:`UnloadResult`.

    The role is checked as for :func:`copy`. The files are listed with
    ``s3_client`` (default: an S3 client of the connection's Broker, as the
    identity that logged in). Raises like :func:`copy`.
    """
    _require_redshift_connector(connection, "unload")
    sql = unload_sql(query, destination, iam_role=iam_role, format=format, **options)
    role = _role(iam_role)
    if check_role:
        _check_role(connection, role, workgroup=workgroup, broker=broker)
    notices, _ = _execute(connection, sql, f"UNLOAD to {destination}")
    rows = -1
    for text in reversed(notices):
        match = _UNLOADED.search(text)
        if match:
            rows = int(match.group(1))
            break
    manifest = destination + "manifest" if options.get("manifest") else None
    files = _written(destination, manifest, s3_client or _s3_client(connection, broker))
    return UnloadResult(rows=rows, files=files, manifest=manifest)


def _require_redshift_connector(connection: Any, what: str) -> None:
    """Refuse a psycopg connection: the loaded-rows count and the errors are read from
    ``redshift_connector``'s notices and exceptions."""
    if type(connection).__module__.split(".")[0] == "psycopg" or any(
        cls.__module__.split(".")[0] == "psycopg" for cls in type(connection).__mro__
    ):
        raise ConfigurationError(
            f"rsauth.etl.{what} needs a redshift_connector connection (rsauth.connect or "
            "rsauth.connect_async), not a psycopg one: it reads Redshift's load notices and "
            "errors through redshift_connector"
        )


def _execute(connection: Any, sql: str, what: str) -> tuple[list[str], int]:
    """Run ``sql``; the notices it raised (their messages) and the cursor's rowcount."""
    notices = getattr(connection, "notices", None)
    last = notices[-1] if notices else None
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        rowcount = int(getattr(cursor, "rowcount", -1))
    except DriverError as exc:
        raise _load_error(exc, what) from exc
    finally:
        cursor.close()
    fresh = list(notices) if notices is not None else []
    for index in range(len(fresh) - 1, -1, -1):
        if fresh[index] is last:
            fresh = fresh[index + 1 :]
            break
    messages = []
    for notice in fresh:
        text = notice.get(b"M", b"") if isinstance(notice, Mapping) else b""
        messages.append(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
    return messages, rowcount


def _load_error(exc: DriverError, what: str) -> Exception:
    fields = server_error(exc)
    if fields is None:
        return ConnectError(
            f"{what}: the connection failed ({type(exc).__name__}: {exc}); the statement may "
            "or may not have run"
        )
    message = fields.get("M", "error")
    code = fields.get("C", "?")
    detail = " ".join(fields.get("D", "").split())
    text = f"{what} failed: {message} (SQLSTATE {code})"
    if detail:
        text += f"; detail: {detail}"
    if any(phrase in message.lower() for phrase in _ROLE_REFUSALS):
        return IamRoleError(
            f"{text}. Check that the role is associated with the namespace (rsauth doctor) and "
            "that its trust policy lets Redshift assume it: a statement allowing "
            '{"Service": "redshift.amazonaws.com"} the action sts:AssumeRole (the commonest '
            "cause of this refusal)"
        )
    return LoadError(
        text + python_only(". The transaction is aborted: roll back before the next statement")
    )


# --------------------------------------------------------------------------- the role check


@dataclass(frozen=True)
class _Target:
    broker: Broker
    workgroup: str
    region: str | None = None
    profile: str | None = None
    role_arn: str | None = None

    def roles(self, *, fresh: bool = False) -> NamespaceRoles:
        return self.broker.namespace_roles(
            workgroup=self.workgroup,
            region=self.region,
            profile=self.profile,
            role_arn=self.role_arn,
            fresh=fresh,
        )


def _target(connection: Any, workgroup: str | None, broker: Broker | None) -> _Target:
    from rsauth._api import default_broker
    from rsauth._broker import connection_origin

    origin = connection_origin(connection)
    if origin is not None and origin.workgroup and workgroup in (None, origin.workgroup):
        return _Target(
            broker or origin.broker, origin.workgroup, origin.region, origin.profile,
            origin.role_arn,
        )
    if workgroup is None:
        raise ConfigurationError(
            "cannot check the IAM role against the namespace: this connection was not opened "
            "by rsauth with workgroup=; pass workgroup="
            + python_only(" (and broker=), or check_role=False")
        )
    return _Target(broker or (origin.broker if origin else None) or default_broker(), workgroup)


def _check_role(
    connection: Any, role: _Role, *, workgroup: str | None, broker: Broker | None
) -> None:
    target = _target(connection, workgroup, broker)
    facts = target.roles()
    if _role_problem(role, facts, target) is None:
        return
    # A cached answer may be stale (a role associated since): ask once more before failing.
    facts = target.roles(fresh=True)
    problem = _role_problem(role, facts, target)
    if problem is not None:
        raise IamRoleError(problem)


def _role_problem(role: _Role, facts: NamespaceRoles, target: _Target) -> str | None:
    where = f"namespace {facts.namespace!r} (workgroup {target.workgroup!r})"
    associated = ", ".join(facts.roles) or "none"
    if role.default:
        if facts.default_role:
            return None
        return (
            f"IAM_ROLE default needs a default IAM role, but {where} has none; roles "
            f"associated: {associated}. Set one (aws redshift-serverless update-namespace "
            f"--namespace-name {facts.namespace} --default-iam-role-arn ARN --iam-roles ARN "
            "[the others to keep]: the two are updated together) or pass iam_role= one of the "
            "associated roles"
        )
    if role.first in facts.roles:
        return None
    chain = " (the first role of the chain)" if len(role.chain) > 1 else ""
    default = f"; default: {facts.default_role}" if facts.default_role else ""
    return (
        f"IAM role {role.first}{chain} is not associated with {where}; roles associated: "
        f"{associated}{default}. Associate it (aws redshift-serverless update-namespace "
        f"--namespace-name {facts.namespace} --iam-roles {role.first} [and every role to "
        "keep: the list replaces the current one] --default-iam-role-arn "
        f"{facts.default_role or role.first}: the two are updated together) or use one of those"
    )


# --------------------------------------------------------------------------- what UNLOAD wrote


def _s3_client(connection: Any, broker: Broker | None) -> Any:
    """An S3 client as the identity the connection logged in with (or the environment's)."""
    from rsauth._broker import connection_origin
    from rsauth._sessions import SessionKey

    origin = connection_origin(connection)
    owner = broker or (origin.broker if origin else None)
    try:
        if owner is not None and origin is not None and origin.region:
            key = SessionKey(origin.profile, origin.region, origin.role_arn, ())
            return owner._sessions.session(key).client("s3", region_name=origin.region)
        import boto3

        return boto3.client("s3")
    except (BotoCoreError, ConfigurationError) as exc:
        logger.warning("UNLOAD: cannot list the files written (no S3 client: %s)", exc)
        return None


def _written(destination: str, manifest: str | None, s3: Any) -> tuple[str, ...] | None:
    if s3 is None:
        return None
    bucket, _, prefix = destination[len("s3://") :].partition("/")
    try:
        if manifest is not None:
            body = s3.get_object(Bucket=bucket, Key=prefix + "manifest")["Body"].read()
            return tuple(str(entry["url"]) for entry in json.loads(body)["entries"])
        found: list[str] = []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                rest = item["Key"][len(prefix) :]
                if _PART.fullmatch(rest):
                    found.append(f"s3://{bucket}/{item['Key']}")
        return tuple(sorted(found))
    except (ClientError, BotoCoreError, KeyError, ValueError, TypeError) as exc:
        logger.warning(
            "UNLOAD to %s succeeded, but listing the files written failed: %s",
            destination,
            type(exc).__name__,
        )
        return None


# The command line's option values, read with the table above.
def _parse_option(name: str, text: str) -> object:
    """``name=text`` from a command line as the value :data:`OPTIONS` expects for ``name``."""
    option = OPTIONS.get(name)
    if option is None:
        raise _unknown(name, "copy" if name not in _accepted("unload", "csv") else "unload", "csv")
    kind = option.kind
    lowered = text.strip().lower()
    converters: dict[str, Callable[[], object]] = {
        "flag": lambda: _as_bool(name, lowered),
        "on_off": lambda: _as_bool(name, lowered),
        "count": lambda: _as_count(name, text),
        "manifest": lambda: "verbose" if lowered == "verbose" else _as_bool(name, lowered),
        "size": lambda: int(text) if _ascii_digits(text) else text,
    }
    convert = converters.get(kind)
    return convert() if convert is not None else text


def _as_bool(name: str, text: str) -> bool:
    if text in ("", "true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigurationError(f"{name}={text!r}: expected true or false")


def _ascii_digits(text: str) -> bool:
    # str.isdigit() holds for '²' (int() refuses it) and for '٣' (int() reads it as 3).
    return text.isascii() and text.isdigit()


def _as_count(name: str, text: str) -> int:
    if not _ascii_digits(text.strip()):
        raise ConfigurationError(f"{name}={text!r}: expected a whole number, 0 or more")
    return int(text)
