"""How the ``rsauth`` command prints: a login in each format, and result rows.

Every function here is pure (text in, text out). Each credential format
escapes what its consumer needs: shell quoting for ``env``, percent-encoding
for ``uri``, ``\\:`` and ``\\\\`` for ``pgpass``. Only ``table`` is for people,
and it is the only one that masks the password. The machine formats refuse a
value holding a control character: a newline in a pgpass field would start a
second entry, and no consumer of the others expects one.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import shlex
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from rsauth._cli._context import CommandError
from rsauth._config import control_characters
from rsauth._credentials import Credentials, describe_expiry
from rsauth._driver import trusted_ca_file

__all__ = [
    "CREDENTIAL_FORMATS",
    "ROW_FORMATS",
    "format_credentials",
    "format_rows",
    "key_value_table",
    "pgpass_line",
    "refuse_control_characters",
]

MASK = "[secure]"


def key_value_table(rows: Sequence[tuple[str, str]]) -> str:
    """Two aligned columns, one ``name  value`` pair per line."""
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# -- credentials ------------------------------------------------------------------------


def _credentials_table(credentials: Credentials, sslrootcert: str | None) -> str:
    rows = [
        ("user", credentials.user),
        ("password", f"{MASK}  (printed by --format env, json, uri or pgpass)"),
        ("host", credentials.host),
        ("port", str(credentials.port)),
        ("database", credentials.database),
        ("workgroup", credentials.workgroup or "-"),
        ("method", credentials.method),
        ("expires", describe_expiry(credentials.expires_at, credentials.expires_in)),
    ]
    return key_value_table(rows)


def _credentials_json(credentials: Credentials, sslrootcert: str | None) -> str:
    data = credentials.as_dict(include_password=True)
    expires_at = credentials.expires_at
    expires_in = credentials.expires_in
    data["expires_at"] = expires_at.isoformat() if expires_at is not None else None
    data["expires_in"] = round(expires_in) if expires_in is not None else None
    data["sslmode"] = "verify-full"
    data["sslrootcert"] = sslrootcert
    return json.dumps(data, indent=2)


def _credentials_env(credentials: Credentials, sslrootcert: str | None) -> str:
    env = credentials.as_env(sslrootcert=sslrootcert, environ={})
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items())


def _credentials_uri(credentials: Credentials, sslrootcert: str | None) -> str:
    userinfo = f"{quote(credentials.user, safe='')}:{quote(credentials.password, safe='')}"
    host = f"[{credentials.host}]" if ":" in credentials.host else credentials.host
    query = {"sslmode": "verify-full", "sslrootcert": sslrootcert or trusted_ca_file()}
    return (
        f"postgresql://{userinfo}@{host}:{credentials.port}/"
        f"{quote(credentials.database, safe='')}?{urlencode(query, quote_via=quote)}"
    )


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_line(credentials: Credentials) -> str:
    """``host:port:database:user:password``, each field escaped as libpq reads it."""
    fields = (
        credentials.host,
        str(credentials.port),
        credentials.database,
        credentials.user,
        credentials.password,
    )
    return ":".join(_pgpass_field(field) for field in fields)


def _credentials_pgpass(credentials: Credentials, sslrootcert: str | None) -> str:
    return pgpass_line(credentials)


def refuse_control_characters(
    credentials: Credentials, fmt: str, sslrootcert: str | None = None
) -> None:
    """Raise, naming the field (never its value), if one holds a control character."""
    values = {
        "user": credentials.user,
        "password": credentials.password,
        "host": credentials.host,
        "database": credentials.database,
        "sslrootcert": sslrootcert or "",
    }
    for name, value in values.items():
        if control_characters().search(value):
            raise CommandError(
                f"the login's {name} holds a control character (newline, NUL or another "
                f"character below U+0020 or from U+007F to U+009F), which cannot go into "
                f"{fmt} output; fix the {name} where it comes from (for a secret, its JSON)"
            )


CREDENTIAL_FORMATS: dict[str, Callable[[Credentials, str | None], str]] = {
    "table": _credentials_table,
    "json": _credentials_json,
    "env": _credentials_env,
    "uri": _credentials_uri,
    "pgpass": _credentials_pgpass,
}


def format_credentials(credentials: Credentials, fmt: str, *, sslrootcert: str | None) -> str:
    """``credentials`` in format ``fmt`` (a key of :data:`CREDENTIAL_FORMATS`)."""
    if fmt in {"env", "uri", "pgpass"}:
        refuse_control_characters(credentials, fmt, sslrootcert)
    return CREDENTIAL_FORMATS[fmt](credentials, sslrootcert)


# -- rows -------------------------------------------------------------------------------


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_value(value: object) -> Any:
    # Numbers of type numeric stay strings so that no digit is lost.
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return _text(value)


def _unique(columns: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for column in columns:
        seen[column] = seen.get(column, 0) + 1
        names.append(column if seen[column] == 1 else f"{column}_{seen[column]}")
    return names


def _is_numeric(values: Sequence[object]) -> bool:
    present = [value for value in values if value is not None]
    return bool(present) and all(
        isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)
        for value in present
    )


def _rows_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[("NULL" if value is None else _text(value)) for value in row] for row in rows]
    numeric = [_is_numeric([row[i] for row in rows]) for i in range(len(columns))]
    widths = [
        max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return " | ".join(parts).rstrip()

    out = [line(columns), "-+-".join("-" * width for width in widths)]
    out += [line(row) for row in cells]
    out.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(out)


def _rows_csv(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_text(value) for value in row] for row in rows)
    return buffer.getvalue().rstrip("\n")


def _rows_json(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    names = _unique(columns)
    records = [
        {name: _json_value(value) for name, value in zip(names, row, strict=True)}
        for row in rows
    ]
    return json.dumps(records, indent=2)


ROW_FORMATS: dict[str, Callable[[Sequence[str], Sequence[Sequence[object]]], str]] = {
    "table": _rows_table,
    "csv": _rows_csv,
    "json": _rows_json,
}


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[object]], fmt: str) -> str:
    """A result set in format ``fmt`` (a key of :data:`ROW_FORMATS`)."""
    return ROW_FORMATS[fmt](columns, rows)
