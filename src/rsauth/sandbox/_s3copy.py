"""Data formats of the sandbox's COPY and UNLOAD: S3 objects in, rows out, and back.

COPY: each source object (text, CSV, JSON or Parquet, optionally GZIP/BZIP2)
becomes rows of text values, which :func:`encode_copy_rows` turns into what
PostgreSQL's ``COPY … FROM STDIN`` (text format) reads. Each row keeps where
it came from (object URL and line), so a load error can say so, as
``stl_load_errors`` does on Redshift. Empty fields follow Redshift: NULL for
non-character columns, an empty string for character columns unless
EMPTYASNULL.

UNLOAD: rows as PostgreSQL's text output plus the column types become the
object bodies Redshift writes (pipe-delimited text by default, CSV, JSON lines
or Parquet). pyarrow is imported only for Parquet.
"""

from __future__ import annotations

import bz2
import csv
import datetime
import decimal
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rsauth.sandbox._copysql import CopyStatement, UnloadStatement


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    category: str  # pg_type.typcategory: "S" string, "N" numeric, "D" date/time, "B" bool, ...
    type_name: str = ""

    @property
    def is_string(self) -> bool:
        return self.category == "S"


@dataclass(frozen=True)
class SourceRow:
    url: str
    line: int
    values: list[str | None]
    raw: str


class LoadError(Exception):
    """A row Redshift would reject, described as stl_load_errors describes it."""

    def __init__(
        self, *, url: str, line: int, column: str, code: int, reason: str, raw_line: str,
        raw_value: str = "",
    ) -> None:
        super().__init__(reason)
        self.url = url
        self.line = line
        self.column = column
        self.code = code
        self.reason = reason
        self.raw_line = raw_line
        self.raw_value = raw_value


class FormatError(Exception):
    """An object that cannot be read at all (not gzip, not Parquet, not JSON …)."""


def decompress(data: bytes, compression: str | None, url: str) -> bytes:
    try:
        if compression == "gzip":
            return gzip.decompress(data)
        if compression == "bzip2":
            return bz2.decompress(data)
    except (OSError, EOFError, ValueError) as exc:
        raise FormatError(
            f"{compression.upper()} decompression failed for {url}: {exc}"  # type: ignore[union-attr]
        ) from exc
    return data


# --------------------------------------------------------------------------- COPY readers


def read_rows(
    stmt: CopyStatement, url: str, data: bytes, columns: Sequence[Column],
    json_paths: list[str] | None = None,
) -> Iterator[SourceRow]:
    """The rows of one source object, values still text (None for NULL)."""
    data = decompress(data, stmt.compression, url)
    if stmt.format == "parquet":
        yield from _read_parquet(url, data, columns)
        return
    text = data.decode("utf-8", errors="replace")
    if stmt.format == "json":
        yield from _read_json(stmt, url, text, columns, json_paths)
    elif stmt.format == "csv":
        yield from _read_csv(stmt, url, text, columns)
    else:
        yield from _read_text(stmt, url, text, columns)


def _null_rules(
    stmt: CopyStatement, column: Column, value: str, quoted: bool = False
) -> str | None:
    null_as = stmt.null_as if stmt.null_as is not None else "\\N"
    if not quoted and value == null_as:
        return None
    if stmt.trim_blanks and column.is_string:
        value = value.rstrip(" ")
    if value == "":
        return None if stmt.empty_as_null or not column.is_string else ""
    if value.strip() == "" and (stmt.blanks_as_null or not column.is_string):
        return None
    return value


def _fit(
    stmt: CopyStatement, url: str, line: int, raw: str, fields: list[str],
    columns: Sequence[Column], quoted: list[bool] | None = None,
) -> SourceRow:
    if len(fields) > len(columns):
        raise LoadError(
            url=url, line=line, column=columns[-1].name if columns else "", code=1202,
            reason="Extra column(s) found", raw_line=raw,
        )
    if len(fields) < len(columns) and not stmt.fill_record:
        missing = columns[len(fields)]
        raise LoadError(
            url=url, line=line, column=missing.name, code=1214, reason="Delimiter not found",
            raw_line=raw,
        )
    values: list[str | None] = []
    for index, column in enumerate(columns):
        if index >= len(fields):
            values.append(None)
            continue
        values.append(_null_rules(stmt, column, fields[index], bool(quoted and quoted[index])))
    return SourceRow(url, line, values, raw)


def _read_text(
    stmt: CopyStatement, url: str, text: str, columns: Sequence[Column]
) -> Iterator[SourceRow]:
    delimiter = stmt.delimiter or "|"
    lines = _logical_lines(text, stmt.escape)
    for number, line in lines:
        if number <= stmt.ignore_header:
            continue
        if line == "" and stmt.ignore_blank_lines:
            continue
        fields = _split_text(line, delimiter, stmt.escape, stmt.remove_quotes)
        if len(fields) == len(columns) + 1 and fields[-1] == "":
            fields.pop()  # a trailing delimiter, as in the Developer Guide's venue_noseats.txt
        yield _fit(stmt, url, number, line, fields, columns)


def _logical_lines(text: str, escape: bool) -> list[tuple[int, str]]:
    """(first physical line number, line) pairs; with ESCAPE a backslash-newline continues."""
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()
    out: list[tuple[int, str]] = []
    index = 0
    while index < len(physical):
        start = index + 1
        line = physical[index].removesuffix("\r")
        while escape and _ends_with_escape(line) and index + 1 < len(physical):
            index += 1
            line = line + "\n" + physical[index].removesuffix("\r")
        out.append((start, line))
        index += 1
    return out


def _ends_with_escape(line: str) -> bool:
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _split_text(line: str, delimiter: str, escape: bool, remove_quotes: bool) -> list[str]:
    if not escape and not remove_quotes:
        return line.split(delimiter)
    fields: list[str] = []
    current: list[str] = []
    in_quotes = False
    i = 0
    while i < len(line):
        ch = line[i]
        if escape and ch == "\\" and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        if remove_quotes and ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and line.startswith(delimiter, i):
            fields.append("".join(current))
            current = []
            i += len(delimiter)
            continue
        else:
            current.append(ch)
        i += 1
    fields.append("".join(current))
    return fields


def _read_csv(
    stmt: CopyStatement, url: str, text: str, columns: Sequence[Column]
) -> Iterator[SourceRow]:
    delimiter = stmt.delimiter or ","
    physical = text.splitlines(keepends=True)
    last_line = 0
    rows = csv.reader(io.StringIO(text), delimiter=delimiter, quotechar=stmt.quote, strict=True)
    while True:
        try:
            fields = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            raise LoadError(
                url=url, line=last_line + 1, column="", code=1214,
                reason=f"Invalid quote formatting for CSV: {exc}", raw_line="",
            ) from exc
        start, last_line = last_line + 1, rows.line_num
        raw = "".join(physical[start - 1 : last_line]).rstrip("\r\n")
        if start <= stmt.ignore_header:
            continue
        if not fields:  # a blank line
            continue
        quoted = _quoted_fields(raw, delimiter, stmt.quote, len(fields))
        yield _fit(stmt, url, start, raw, fields, columns, quoted)


def _quoted_fields(raw: str, delimiter: str, quote: str, count: int) -> list[bool]:
    """Which fields of a CSV record were quoted (a quoted \\N is a string, not NULL)."""
    flags: list[bool] = []
    at_start = True
    in_quotes = False
    for i, ch in enumerate(raw):
        if at_start:
            flags.append(ch == quote)
            at_start = False
        if ch == quote:
            in_quotes = not in_quotes
        elif ch == delimiter[0] and not in_quotes and raw.startswith(delimiter, i):
            at_start = True
    if at_start:
        flags.append(False)
    return (flags + [False] * count)[:count]


def _read_json(
    stmt: CopyStatement, url: str, text: str, columns: Sequence[Column],
    json_paths: list[str] | None,
) -> Iterator[SourceRow]:
    decoder = json.JSONDecoder(parse_float=str, parse_int=str)
    ignore_case = stmt.json_paths == "auto ignorecase"
    pos = 0
    size = len(text)
    while True:
        while pos < size and text[pos].isspace():
            pos += 1
        if pos >= size:
            return
        line = text.count("\n", 0, pos) + 1
        try:
            document, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise LoadError(
                url=url, line=line, column="", code=1224,
                reason=f"Invalid JSON: {exc.msg}", raw_line=text[pos : pos + 200],
            ) from exc
        raw = text[pos:end]
        pos = end
        if json_paths is not None:
            values = [_json_text(_json_path(document, path)) for path in json_paths]
        elif not isinstance(document, dict):
            raise LoadError(
                url=url, line=line, column="", code=1224,
                reason="Invalid JSONPath format: Member is not an object.", raw_line=raw[:1024],
            )
        else:
            lookup = (
                {key.lower(): value for key, value in document.items()}
                if ignore_case
                else document
            )
            values = [
                _json_text(lookup.get(column.name.lower() if ignore_case else column.name))
                for column in columns
            ]
        if len(values) != len(columns):
            raise LoadError(
                url=url, line=line, column="", code=1202,
                reason="Number of jsonpaths and the number of columns should match.",
                raw_line=raw[:1024],
            )
        yield SourceRow(url, line, values, raw[:1024])


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


_MISSING = object()


def _json_path(document: Any, path: str) -> Any:
    """Evaluate a JSONPaths expression of Redshift's subset: $['a'], $.a, $[0], chained."""
    import re

    if not path.startswith("$"):
        raise FormatError(f"Invalid JSONPath format: {path}")
    current = document
    steps = re.findall(r"\.([A-Za-z_]\w*)|\[['\"]([^'\"]*)['\"]\]|\[(\d+)\]", path[1:])
    for name, quoted, index in steps:
        key: Any = name or quoted
        if index:
            if not isinstance(current, list) or int(index) >= len(current):
                return None
            current = current[int(index)]
        elif isinstance(current, dict):
            current = current.get(key)
        else:
            return None
    return current


def parse_json_paths(data: bytes, url: str) -> list[str]:
    try:
        document = json.loads(data)
        paths = document["jsonpaths"]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise TypeError
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(
            f"Invalid JSONPaths file {url}: it must hold {{\"jsonpaths\": [...]}}"
        ) from exc
    return paths


def _read_parquet(url: str, data: bytes, columns: Sequence[Column]) -> Iterator[SourceRow]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends
        raise FormatError(f"File '{url}' is not a valid Parquet file: {exc}") from exc
    if table.num_columns != len(columns):
        raise FormatError(
            f"File '{url}' has {table.num_columns} column(s) but the COPY loads "
            f"{len(columns)}: for Parquet the numbers of columns must match"
        )
    lists = [table.column(i).to_pylist() for i in range(table.num_columns)]
    for row in range(table.num_rows):
        values = [_python_text(values[row]) for values in lists]
        yield SourceRow(url, row + 1, values, "")


def _python_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def encode_copy_rows(rows: Sequence[SourceRow]) -> bytes:
    """PostgreSQL COPY text format: tab-separated, \\N for NULL, backslash escapes."""
    out: list[str] = []
    for row in rows:
        out.append(
            "\t".join(
                "\\N"
                if value is None
                else value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace(
                    "\r", "\\r"
                )
                for value in row.values
            )
        )
        out.append("\n")
    return "".join(out).encode()


# --------------------------------------------------------------------------- UNLOAD writers

# PostgreSQL type OIDs UNLOAD writes as typed values (JSON, Parquet).
_BOOL, _INT8, _INT2, _INT4, _FLOAT4, _FLOAT8, _NUMERIC = 16, 20, 21, 23, 700, 701, 1700
_DATE, _TIMESTAMP, _TIMESTAMPTZ = 1082, 1114, 1184


@dataclass(frozen=True)
class ResultColumn:
    name: str
    type_oid: int
    type_modifier: int


def unload_body(
    stmt: UnloadStatement, columns: Sequence[ResultColumn], rows: Sequence[Sequence[str | None]]
) -> bytes:
    if stmt.format == "parquet":
        return _parquet_body(columns, rows)
    if stmt.format == "json":
        body = "".join(
            json.dumps(
                {c.name: _typed(c, v) for c, v in zip(columns, row, strict=True)},
                separators=(",", ":"), default=str,
            )
            + "\n"
            for row in rows
        ).encode()
    elif stmt.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=stmt.delimiter or ",", lineterminator="\n")
        if stmt.header:
            writer.writerow([c.name for c in columns])
        for row in rows:
            writer.writerow([stmt.null_as if v is None else v for v in row])
        body = buffer.getvalue().encode()
    else:
        delimiter = stmt.delimiter or "|"
        lines: list[str] = []
        if stmt.header:
            lines.append(delimiter.join(c.name for c in columns))
        for row in rows:
            fields = []
            for value in row:
                text = stmt.null_as if value is None else value
                if stmt.escape and value is not None:
                    for special in ("\\", "\n", "\r", delimiter, '"', "'"):
                        text = text.replace(special, "\\" + special)
                if stmt.add_quotes:
                    text = '"' + text + '"'
                fields.append(text)
            lines.append(delimiter.join(fields))
        body = "".join(line + "\n" for line in lines).encode()
    if stmt.compression == "gzip":
        return gzip.compress(body)
    if stmt.compression == "bzip2":
        return bz2.compress(body)
    return body


def _typed(column: ResultColumn, value: str | None) -> Any:
    if value is None:
        return None
    oid = column.type_oid
    if oid == _BOOL:
        return value == "t"
    if oid in (_INT2, _INT4, _INT8):
        return int(value)
    if oid in (_FLOAT4, _FLOAT8):
        return float(value)
    if oid == _NUMERIC:
        return decimal.Decimal(value)
    return value


def _parquet_body(columns: Sequence[ResultColumn], rows: Sequence[Sequence[str | None]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for index, column in enumerate(columns):
        arrow_type, convert = _arrow_type(pa, column)
        values = [None if row[index] is None else convert(row[index]) for row in rows]
        arrays.append(pa.array(values, type=arrow_type))
    table = pa.Table.from_arrays(arrays, names=[c.name for c in columns])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _arrow_type(pa: Any, column: ResultColumn) -> tuple[Any, Any]:
    oid = column.type_oid
    if oid == _BOOL:
        return pa.bool_(), lambda v: v == "t"
    if oid == _INT2:
        return pa.int16(), int
    if oid == _INT4:
        return pa.int32(), int
    if oid == _INT8:
        return pa.int64(), int
    if oid == _FLOAT4:
        return pa.float32(), float
    if oid == _FLOAT8:
        return pa.float64(), float
    if oid == _NUMERIC and column.type_modifier >= 4:
        precision = ((column.type_modifier - 4) >> 16) & 0xFFFF
        scale = (column.type_modifier - 4) & 0xFFFF
        return pa.decimal128(precision, scale), decimal.Decimal
    if oid == _DATE:
        return pa.date32(), datetime.date.fromisoformat
    if oid == _TIMESTAMP:
        return pa.timestamp("us"), _timestamp
    if oid == _TIMESTAMPTZ:
        return pa.timestamp("us", tz="UTC"), _timestamptz
    return pa.string(), str


def _timestamp(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def _timestamptz(value: str) -> datetime.datetime:
    # PostgreSQL writes +00 (hours only); fromisoformat wants +00:00.
    if len(value) > 3 and value[-3] in "+-" and value[-2:].isdigit():
        value += ":00"
    return datetime.datetime.fromisoformat(value).astimezone(datetime.timezone.utc)
