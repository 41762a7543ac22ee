"""The grammar of Redshift's ``COPY … FROM 's3://…'`` and ``UNLOAD ('…') TO 's3://…'``.

The wire front hands statements here only after a cheap check
(:func:`may_need_rewrite`); everything else never reaches the parser. The
parser knows Redshift's options (``AWS Redshift Database Developer Guide``,
"COPY", "UNLOAD"), keeps them in plain dataclasses and raises
:class:`SqlError` with PostgreSQL's ``syntax error at or near "…"`` for what
it cannot read. ``$n`` parameters of the extended protocol are replaced by
quoted literals (:func:`bind_parameters`) before a statement is parsed for
execution.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

# A statement needs the slow path when it starts with COPY or UNLOAD, or mentions S3 or
# DEFAULT_IAM_ROLE anywhere (a multi-statement simple query: BEGIN; COPY ...).
_LEADING = re.compile(rb"(?:\s+|--[^\n]*\n?|/\*.*?\*/)*", re.S)
_KEYWORD = re.compile(rb"(?i)(copy|unload)\b")
_ANYWHERE = re.compile(rb"(?i)s3://|default_iam_role")


def may_need_rewrite(sql: bytes) -> bool:
    """Cheap check on a Query/Parse SQL text: could it hold COPY/UNLOAD or DEFAULT_IAM_ROLE()?"""
    start = _LEADING.match(sql)
    if _KEYWORD.match(sql, start.end() if start else 0):
        return True
    return _ANYWHERE.search(sql) is not None


class SqlError(Exception):
    """A statement the sandbox cannot run: SQLSTATE and Redshift-style message."""

    def __init__(self, message: str, sqlstate: str = "42601", detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "string", "number", "param", "ident" (quoted), "punct"
    text: str  # the value (unescaped for strings and quoted identifiers)
    raw: str  # the source text


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "\\": "\\", "'": "'"}


def _read_string(sql: str, pos: int) -> tuple[str, int]:
    """A '…' literal starting at ``pos``: '' and \\' escape a quote, \\t \\n \\r \\0 \\\\ too."""
    out: list[str] = []
    i = pos + 1
    while i < len(sql):
        ch = sql[i]
        if ch == "'":
            if sql.startswith("'", i + 1):
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(sql):
            nxt = sql[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            else:  # \N and friends stay as written
                out.append(ch + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    raise SqlError("unterminated quoted string at or near " + _near(sql[pos:]))


def _near(text: str) -> str:
    return '"' + text[:40] + '"'


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    i, size = 0, len(sql)
    while i < size:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = size if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise SqlError("unterminated /* comment at or near " + _near(sql[i:]))
            i = end + 2
        elif ch == "'":
            text, end = _read_string(sql, i)
            tokens.append(Token("string", text, sql[i:end]))
            i = end
        elif ch == '"':
            end = i + 1
            parts: list[str] = []
            while True:
                close = sql.find('"', end)
                if close < 0:
                    raise SqlError("unterminated quoted identifier at or near " + _near(sql[i:]))
                parts.append(sql[end:close])
                if sql.startswith('"', close + 1):
                    parts.append('"')
                    end = close + 2
                    continue
                break
            tokens.append(Token("ident", "".join(parts), sql[i : close + 1]))
            i = close + 1
        elif ch == "$" and i + 1 < size and sql[i + 1].isdigit():
            match = re.compile(r"\$\d+").match(sql, i)
            assert match is not None
            tokens.append(Token("param", match.group()[1:], match.group()))
            i = match.end()
        elif ch.isdigit():
            match = re.compile(r"\d+(?:\.\d+)?").match(sql, i)
            assert match is not None
            tokens.append(Token("number", match.group(), match.group()))
            i = match.end()
        elif ch.isalpha() or ch == "_":
            match = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*").match(sql, i)
            assert match is not None
            tokens.append(Token("word", match.group().lower(), match.group()))
            i = match.end()
        else:
            tokens.append(Token("punct", ch, ch))
            i += 1
    return tokens


def split_statements(sql: str) -> list[str]:
    """Split on top-level semicolons (outside quotes and comments); empty pieces dropped."""
    pieces: list[str] = []
    start = i = 0
    size = len(sql)
    while i < size:
        ch = sql[i]
        if ch == "'":
            i = _read_string(sql, i)[1]
        elif ch == '"':
            end = sql.find('"', i + 1)
            i = size if end < 0 else end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = size if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = size if end < 0 else end + 2
        elif ch == ";":
            pieces.append(sql[start:i])
            i += 1
            start = i
        else:
            i += 1
    pieces.append(sql[start:])
    return [piece for piece in pieces if tokenize(piece)]


# --------------------------------------------------------------------------- rewriting

_DEFAULT_ROLE_CALL = re.compile(r"(?i)\bdefault_iam_role\s*\(\s*\)")


def rewrite_default_iam_role(sql: str, arn: str | None) -> str:
    """Replace each DEFAULT_IAM_ROLE() outside literals by the namespace's default role."""
    value = "NULL" if arn is None else "'" + arn.replace("'", "''") + "'"
    replacement = f"(SELECT {value}::varchar AS default_iam_role)"
    return _outside_literals(sql, lambda text: _DEFAULT_ROLE_CALL.sub(replacement, text))


def bind_parameters(sql: str, values: list[str | None]) -> str:
    """Replace ``$n`` outside literals by the n-th value as a quoted literal (NULL for None)."""

    def literal(match: re.Match[str]) -> str:
        index = int(match.group()[1:]) - 1
        if not 0 <= index < len(values):
            raise SqlError(f"there is no parameter {match.group()}", "42P02")
        value = values[index]
        return "NULL" if value is None else "'" + value.replace("'", "''") + "'"

    return _outside_literals(sql, lambda text: re.sub(r"\$\d+", literal, text))


def _outside_literals(sql: str, change: object) -> str:
    assert callable(change)
    out: list[str] = []
    plain_start = i = 0
    size = len(sql)
    while i < size:
        ch = sql[i]
        if ch in "'\"" or sql.startswith("--", i) or sql.startswith("/*", i):
            out.append(change(sql[plain_start:i]))
            if ch == "'":
                end = _read_string(sql, i)[1]
            elif ch == '"':
                close = sql.find('"', i + 1)
                end = size if close < 0 else close + 1
            elif ch == "-":
                close = sql.find("\n", i)
                end = size if close < 0 else close + 1
            else:
                close = sql.find("*/", i + 2)
                end = size if close < 0 else close + 2
            out.append(sql[i:end])
            i = plain_start = end
        else:
            i += 1
    out.append(change(sql[plain_start:]))
    return "".join(out)


# --------------------------------------------------------------------------- statements


@dataclass
class Authorization:
    """How the statement reaches S3: ``default``, role ARNs (a chain) or keys; empty if none."""

    default_role: bool = False
    roles: list[str] = field(default_factory=list)
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @property
    def given(self) -> bool:
        return self.default_role or bool(self.roles) or self.access_key_id is not None


@dataclass
class CopyStatement:
    table: str  # SQL text of the (possibly qualified, quoted) table name, as PostgreSQL reads it
    table_name: str  # its last part, unquoted, for messages
    columns: list[str]
    source: str  # s3://bucket/key-or-prefix
    auth: Authorization
    format: str = "text"  # text | csv | json | parquet
    delimiter: str | None = None
    quote: str = '"'
    null_as: str | None = None
    ignore_header: int = 0
    compression: str | None = None  # gzip | bzip2
    manifest: bool = False
    json_paths: str | None = None  # 'auto', 'auto ignorecase' or s3://… JSONPaths file
    empty_as_null: bool = False
    blanks_as_null: bool = False
    ignore_blank_lines: bool = False
    remove_quotes: bool = False
    escape: bool = False
    fill_record: bool = False
    trim_blanks: bool = False
    noload: bool = False


@dataclass
class UnloadStatement:
    query: str
    target: str  # s3://bucket/prefix
    auth: Authorization
    format: str = "text"  # text | csv | json | parquet
    delimiter: str | None = None
    header: bool = False
    parallel: bool = True
    allow_overwrite: bool = False
    clean_path: bool = False
    compression: str | None = None  # gzip | bzip2
    manifest: bool = False
    manifest_verbose: bool = False
    null_as: str = ""
    add_quotes: bool = False
    escape: bool = False
    extension: str | None = None


class _Parser:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.tokens = tokenize(sql)
        self.pos = 0

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def next(self) -> Token:
        token = self.peek()
        if token is None:
            raise SqlError("syntax error at end of input")
        self.pos += 1
        return token

    def error(self, token: Token | None = None) -> SqlError:
        token = token if token is not None else self.peek()
        if token is None:
            return SqlError("syntax error at end of input")
        return SqlError(f'syntax error at or near "{token.raw}"')

    def word(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text in words:
            self.pos += 1
            return True
        return False

    def expect_word(self, *words: str) -> str:
        token = self.next()
        if token.kind != "word" or token.text not in words:
            raise self.error(token)
        return token.text

    def punct(self, char: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == char:
            self.pos += 1
            return True
        return False

    def expect_punct(self, char: str) -> None:
        token = self.next()
        if token.kind != "punct" or token.text != char:
            raise self.error(token)

    def string(self) -> str:
        token = self.next()
        if token.kind != "string":
            raise self.error(token)
        return token.text

    def number(self) -> int:
        token = self.next()
        if token.kind == "string" and token.text.isdigit():
            return int(token.text)
        if token.kind != "number" or not token.text.isdigit():
            raise self.error(token)
        return int(token.text)

    def optional_as(self) -> None:
        self.word("as")

    def at_end(self) -> bool:
        while self.punct(";"):
            pass
        return self.peek() is None

    # -- shared pieces ----------------------------------------------------------------

    def table_name(self) -> tuple[str, str]:
        parts: list[Token] = []
        while True:
            token = self.next()
            if token.kind not in ("word", "ident"):
                raise self.error(token)
            parts.append(token)
            if not self.punct("."):
                break
        text = ".".join(
            part.raw if part.kind == "word" else '"' + part.text.replace('"', '""') + '"'
            for part in parts
        )
        last = parts[-1]
        return text, last.text

    def column_list(self) -> list[str]:
        columns: list[str] = []
        if not self.punct("("):
            return columns
        while True:
            token = self.next()
            if token.kind not in ("word", "ident"):
                raise self.error(token)
            columns.append(token.text)
            if self.punct(")"):
                return columns
            self.expect_punct(",")

    def options(
        self, auth: Authorization, formats: tuple[str, ...]
    ) -> Iterator[tuple[str, Token]]:
        """The option keywords up to the end of the statement, with their tokens (for errors).

        Authorization clauses met on the way are read into ``auth``;
        ``FORMAT [AS] x`` yields ``x`` (one of ``formats``).
        """
        while not self.at_end():
            if self.authorization(auth):
                continue
            word = self.next()
            if word.kind != "word":
                raise self.error(word)
            if word.text == "format":
                self.optional_as()
                yield self.expect_word(*formats), word
            else:
                yield word.text, word

    def authorization(self, auth: Authorization) -> bool:
        """One authorization clause, if the next token starts one."""
        if self.word("iam_role"):
            if self.word("default"):
                auth.default_role = True
            else:
                auth.roles = self.string().split(",")
            return True
        if self.word("access_key_id"):
            self.optional_as()
            auth.access_key_id = self.string()
            return True
        if self.word("secret_access_key"):
            self.optional_as()
            auth.secret_access_key = self.string()
            return True
        if self.word("session_token"):
            self.optional_as()
            auth.session_token = self.string()
            return True
        if self.word("with"):
            if not self.word("credentials"):
                raise self.error()
            self._credentials(auth)
            return True
        if self.word("credentials"):
            self._credentials(auth)
            return True
        return False

    def _credentials(self, auth: Authorization) -> None:
        self.optional_as()
        text = self.string()
        pairs = dict(
            part.split("=", 1) for part in text.split(";") if "=" in part
        )
        pairs = {key.strip().lower(): value.strip() for key, value in pairs.items()}
        if "aws_iam_role" in pairs:
            auth.roles = pairs["aws_iam_role"].split(",")
        elif "aws_access_key_id" in pairs:
            auth.access_key_id = pairs["aws_access_key_id"]
            auth.secret_access_key = pairs.get("aws_secret_access_key")
            auth.session_token = pairs.get("token")
        else:
            raise SqlError(
                "Invalid credentials. Must be of the format: credentials "
                "'aws_iam_role=...' or "
                "'aws_access_key_id=...;aws_secret_access_key=...[;token=...]'",
                "XX000",
            )


# Options the sandbox accepts and ignores: they tune Redshift's storage, statistics or
# error tolerance, not what a successful load puts in the table.
_COPY_IGNORED_FLAGS = frozenset(
    {"acceptanydate", "explicit_ids", "roundec", "truncatecolumns", "serializetojson"}
)
_COPY_IGNORED_VALUES = frozenset(
    {"dateformat", "timeformat", "region", "encoding", "maxerror", "comprows", "readratio"}
)
_UNSUPPORTED = (
    "the sandbox does not support {what} (rsauth.sandbox: see docs/sandbox.md, COPY and "
    "UNLOAD statements)"
)


def _unsupported(what: str) -> SqlError:
    return SqlError(_UNSUPPORTED.format(what=what), "0A000")



# COPY options that take no value: the keyword and the statement field it turns on.
_COPY_FLAGS = {
    "manifest": "manifest",
    "emptyasnull": "empty_as_null",
    "blanksasnull": "blanks_as_null",
    "ignoreblanklines": "ignore_blank_lines",
    "removequotes": "remove_quotes",
    "escape": "escape",
    "fillrecord": "fill_record",
    "trimblanks": "trim_blanks",
    "noload": "noload",
}

def parse_copy(sql: str) -> CopyStatement:
    p = _Parser(sql)
    p.expect_word("copy")
    table, table_name = p.table_name()
    columns = p.column_list()
    p.expect_word("from")
    token = p.next()
    if token.kind != "string":
        raise p.error(token)
    if not token.text.startswith("s3://"):
        scheme = token.text.split("://", 1)[0] if "://" in token.text else "a file"
        raise _unsupported(f"COPY from {scheme}: only Amazon S3 (s3://) sources")
    stmt = CopyStatement(table, table_name, columns, token.text, Authorization())
    formats = ("csv", "json", "parquet", "avro", "orc", "fixedwidth", "shapefile")
    for name, word in p.options(stmt.auth, formats):
        if name == "csv":
            stmt.format = "csv"
            if p.word("quote"):
                p.optional_as()
                stmt.quote = p.string()
        elif name == "json":
            stmt.format = "json"
            p.optional_as()
            nxt = p.peek()
            stmt.json_paths = p.string() if nxt is not None and nxt.kind == "string" else "auto"
            if stmt.json_paths not in ("auto", "auto ignorecase") and not (
                stmt.json_paths.startswith("s3://")
            ):
                raise _unsupported(f"JSON '{stmt.json_paths}'")
        elif name == "parquet":
            stmt.format = "parquet"
        elif name in ("avro", "orc", "fixedwidth", "shapefile"):
            raise _unsupported(f"COPY format {name.upper()}")
        elif name == "delimiter":
            p.optional_as()
            stmt.delimiter = p.string()
        elif name == "ignoreheader":
            p.optional_as()
            stmt.ignore_header = p.number()
        elif name == "null":
            p.optional_as()
            stmt.null_as = p.string()
        elif name in ("gzip", "bzip2"):
            stmt.compression = name
        elif name in ("lzop", "zstd"):
            raise _unsupported(f"{name.upper()} compression")
        elif name in _COPY_FLAGS:
            setattr(stmt, _COPY_FLAGS[name], True)
        elif name in ("encrypted", "master_symmetric_key"):
            raise _unsupported("client-side encryption (ENCRYPTED, MASTER_SYMMETRIC_KEY)")
        elif name == "acceptinvchars":
            p.optional_as()
            nxt = p.peek()
            if nxt is not None and nxt.kind == "string":
                p.next()
        elif name in ("compupdate", "statupdate"):
            p.word("on", "off", "true", "false", "preset")
        elif name in _COPY_IGNORED_FLAGS:
            pass
        elif name in _COPY_IGNORED_VALUES:
            p.optional_as()
            p.next()
        else:
            raise p.error(word)
    if stmt.format in ("json", "parquet") and stmt.delimiter is not None:
        raise SqlError(f"DELIMITER argument is not supported for {stmt.format.upper()} based COPY")
    return stmt


def parse_unload(sql: str) -> UnloadStatement:
    p = _Parser(sql)
    p.expect_word("unload")
    p.expect_punct("(")
    query = p.string()
    p.expect_punct(")")
    p.expect_word("to")
    target = p.string()
    if not target.startswith("s3://"):
        raise SqlError(f"Invalid S3 location: {target}", "XX000")
    stmt = UnloadStatement(query, target, Authorization())
    for name, word in p.options(stmt.auth, ("csv", "json", "parquet")):
        if name in ("csv", "json", "parquet"):
            stmt.format = name
        elif name == "partition":
            raise _unsupported("UNLOAD … PARTITION BY")
        elif name == "fixedwidth":
            raise _unsupported("UNLOAD … FIXEDWIDTH")
        elif name == "manifest":
            stmt.manifest = True
            stmt.manifest_verbose = p.word("verbose")
        elif name == "header":
            stmt.header = True
        elif name == "delimiter":
            p.optional_as()
            stmt.delimiter = p.string()
        elif name in ("gzip", "bzip2"):
            stmt.compression = name
        elif name == "zstd":
            raise _unsupported("ZSTD compression")
        elif name == "addquotes":
            stmt.add_quotes = True
        elif name == "null":
            p.optional_as()
            stmt.null_as = p.string()
        elif name == "escape":
            stmt.escape = True
        elif name == "allowoverwrite":
            stmt.allow_overwrite = True
        elif name == "cleanpath":
            stmt.clean_path = True
        elif name == "parallel":
            stmt.parallel = not p.word("off", "false")
            if stmt.parallel:
                p.word("on", "true")
        elif name in ("maxfilesize", "rowgroupsize"):
            p.optional_as()
            p.number()
            p.word("mb", "gb")
        elif name == "extension":
            stmt.extension = p.string().lstrip(".")
        elif name == "region":
            p.optional_as()
            p.string()
        elif name == "kms_key_id":
            p.string()
        elif name == "encrypted":
            p.word("auto")
        else:
            raise p.error(word)
    if stmt.allow_overwrite and stmt.clean_path:
        raise SqlError("Cannot use both ALLOWOVERWRITE and CLEANPATH options together.")
    if stmt.format == "parquet" and (stmt.header or stmt.delimiter or stmt.add_quotes):
        raise SqlError("HEADER, DELIMITER and ADDQUOTES are not supported with PARQUET")
    return stmt


def statement_kind(sql: str) -> str | None:
    """``"copy"`` for COPY … FROM '<literal>' or $n, ``"unload"``, else None (passed through)."""
    try:
        tokens = tokenize(sql)
    except SqlError:
        return None
    if not tokens or tokens[0].kind != "word":
        return None
    first = tokens[0].text
    if first == "unload":
        return "unload"
    if first != "copy":
        return None
    depth = 0
    for index, token in enumerate(tokens[1:], start=1):
        if token.kind == "punct" and token.text == "(":
            depth += 1
        elif token.kind == "punct" and token.text == ")":
            depth -= 1
        elif depth == 0 and token.kind == "word" and token.text in ("from", "to"):
            if token.text == "to" or index + 1 >= len(tokens):
                return None
            source = tokens[index + 1]
            return "copy" if source.kind in ("string", "param") else None
    return None
