"""COPY and UNLOAD with IAM roles, executed inside the client's own PostgreSQL session.

The wire front relays PostgreSQL messages both ways; with a :class:`CopyUnload`
hook it relays each session through a :class:`CopySession` instead, which
forwards everything untouched except:

- a simple Query ('Q') or Parse ('P') whose SQL starts with COPY or UNLOAD or
  mentions ``s3://`` or ``DEFAULT_IAM_ROLE`` (a cheap check; nothing else is
  parsed). ``DEFAULT_IAM_ROLE()`` is replaced by the namespace's default role
  and the statement goes on to PostgreSQL; ``COPY … FROM 's3://…'`` and
  ``UNLOAD ('…') TO 's3://…'`` are executed by the sandbox;
- the Bind/Describe/Execute/Close messages that name such a statement or its
  portal.

Executing needs the PostgreSQL session to itself, so the session first waits
until PostgreSQL has answered every Query/Sync sent before (each answer ends
with ReadyForQuery, counted on the way back), then captures what PostgreSQL
sends until the client's batch ends. Inside, it speaks the extended protocol
with Flush, never Sync, so the load joins the client's transaction: it reads
the table's columns, drives ``COPY … FROM STDIN`` (CopyInResponse, CopyData,
CopyDone) for COPY, or runs the query for UNLOAD, and answers the client with
a NoticeResponse, CommandComplete and, at the end of the batch, PostgreSQL's
own ReadyForQuery. A refusal decided by the sandbox (a role, a missing
object, a bad row) first makes PostgreSQL fail a statement on purpose, so an
open transaction block is aborted as Redshift aborts it; the client sees
Redshift's text (SQLSTATE XX000).

Authorization and S3 go through a :class:`CopyBackend` (the sandbox wires one
over its control plane and moto); its calls block and run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from rsauth.sandbox._copysql import (
    Authorization,
    CopyStatement,
    SqlError,
    UnloadStatement,
    bind_parameters,
    may_need_rewrite,
    parse_copy,
    parse_unload,
    rewrite_default_iam_role,
    split_statements,
    statement_kind,
)
from rsauth.sandbox._pgwire import (
    PgError,
    ProtocolViolation,
    cstr,
    data_row,
    error_fields,
    message,
    parse_error,
)
from rsauth.sandbox._s3copy import (
    Column,
    FormatError,
    LoadError,
    ResultColumn,
    SourceRow,
    encode_copy_rows,
    parse_json_paths,
    read_rows,
    unload_body,
)
from rsauth.sandbox._sysviews import LoadErrorRow
from rsauth.sandbox._version import redshift_show

log = logging.getLogger("rsauth.sandbox.copy")

_CHUNK = 256 * 1024
_COPY_DATA_CHUNK = 64 * 1024
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_INT64 = struct.Struct("!q")

# Redshift's texts. SQLSTATE XX000 is what Redshift answers load and S3 errors with.
# Serverless points at sys_load_error_detail, provisioned clusters at stl_load_errors
# (https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_ERROR_DETAIL.html; the text as
# public Serverless sessions show it).
LOAD_FAILED = (
    "Load into table '{table}' failed. Check 'sys_load_error_detail' system table for details."
)
LOAD_DONE = "Load into table '{table}' completed, {rows} record(s) loaded successfully."
UNLOAD_DONE = "UNLOAD completed, {rows} record(s) unloaded successfully."
# Serverless's answer for a role not associated with the namespace, or one whose trust
# policy does not let Redshift assume it (SANDBOX-SPEC.md, "COPY / UNLOAD").
NOT_AUTHORIZED = "Not authorized to get credentials of role {arn}"
# The service principals Redshift assumes a COPY/UNLOAD role as. The trust policy that
# https://docs.aws.amazon.com/redshift/latest/mgmt/authorizing-redshift-service.html shows
# names redshift.amazonaws.com; roles made for Serverless also name
# redshift-serverless.amazonaws.com. Either one is accepted here (unverified: whether
# Serverless needs one in particular).
REDSHIFT_SERVICES = ("redshift.amazonaws.com", "redshift-serverless.amazonaws.com")
# (unverified) Serverless's texts for these are not public; the provisioned form of the first.
CHAIN_REFUSED = "User {principal} is not authorized to assume IAM Role {arn}"
NO_DEFAULT_ROLE = (
    "IAM_ROLE default was given, but namespace {namespace} has no default IAM role: set one "
    "with UpdateNamespace(iamRoles=[...], defaultIamRoleArn=...) or name a role ARN"
)
NO_CREDENTIALS = (
    "COPY and UNLOAD need authorization: IAM_ROLE default, IAM_ROLE '<role ARN>', "
    "ACCESS_KEY_ID … SECRET_ACCESS_KEY …, or CREDENTIALS"
)
MIXED_CREDENTIALS = (
    "IAM_ROLE can't be used with ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN or CREDENTIALS"
)
BAD_ROLE_ARN = "Invalid IAM role ARN: '{arn}'"
CHAIN_TOO_LONG = "A role chain holds at most 10 roles, got {count}"
PREFIX_MISSING = "The specified S3 prefix '{prefix}' does not exist"
UNLOAD_NOT_EMPTY = (
    "Specified unload destination on S3 is not empty. Consider using a different bucket / "
    "prefix, manually removing the target files in S3, or using the ALLOWOVERWRITE option."
)
S3_EXCEPTION = (
    "S3ServiceException:{message},Status {status},Error {code},Rid {rid},ExtRid {rid},CanRetry 1"
)

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_COPY_WHERE = re.compile(r"COPY [^,]+, line (\d+)(?:, column ([^:]+))?")


class S3Error(Exception):
    """What S3 answered: its error code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class NamespaceRoles:
    namespace: str
    default_role: str | None
    roles: tuple[str, ...]


class CopyBackend(Protocol):
    """What COPY and UNLOAD need from the rest of the sandbox. Calls may block."""

    def namespace_roles(self, database: str) -> NamespaceRoles: ...

    def role_trusts(self, role_arn: str, principal: str) -> bool:
        """Whether ``role_arn``'s trust policy lets ``principal`` assume it.

        ``principal`` is an ARN or a service principal (``redshift.amazonaws.com``).
        """
        ...

    def record_load_error(self, database: str, row: LoadErrorRow) -> None:
        """Keep a failed load's row in ``database``'s sys_load_error_detail."""
        ...

    def check_access_key(self, access_key_id: str, secret: str, token: str | None) -> str | None:
        """None when the keys are valid, else S3's error code for them."""
        ...

    def list_objects(self, bucket: str, prefix: str) -> list[str]: ...

    def get_object(self, bucket: str, key: str) -> bytes: ...

    def put_object(self, bucket: str, key: str, body: bytes) -> None: ...

    def delete_objects(self, bucket: str, keys: list[str]) -> None: ...


class CopyUnload:
    """The front's hook: one :class:`CopySession` per database session."""

    def __init__(self, backend: CopyBackend) -> None:
        self.backend = backend

    def session(self, database: str, user: str = "", session_id: int = 0) -> CopySession:
        return CopySession(self.backend, database, user, session_id)


# --------------------------------------------------------------------------- errors


class _Failed(Exception):
    """The statement failed and the client has its ErrorResponse."""


class RedshiftError(Exception):
    def __init__(self, text: str, sqlstate: str = "XX000", detail: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.sqlstate = sqlstate
        self.detail = detail


def _detail(error: str, code: int, context: str, location: str) -> str:
    rule = "  -----------------------------------------------"
    return (
        f"\n{rule}\n  error:  {error}\n  code:      {code}\n  context:   {context}\n"
        f"  query:     0\n  location:  {location}\n  process:   padbmaster [pid=0]\n{rule}\n"
    )


def _s3_error(exc: S3Error, context: str) -> RedshiftError:
    text = S3_EXCEPTION.format(
        message=exc.message, status=exc.status, code=exc.code, rid="SANDBOX0000000000"
    )
    return RedshiftError(text, detail=_detail(text, 8001, context, "s3_utility.cpp:0"))


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise RedshiftError(f"Invalid S3 location: {url}")
    return bucket, key


def _error_message(severity: str, sqlstate: str, text: str, detail: str | None = None) -> bytes:
    fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", text)]
    if detail:
        fields.append(("D", detail))
    return message(b"E", error_fields(fields))


def _notice(text: str) -> bytes:
    return message(b"N", error_fields([("S", "INFO"), ("V", "INFO"), ("C", "00000"), ("M", text)]))


def _complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


# --------------------------------------------------------------------------- wire helpers


def _scan(data: bytes | bytearray, end_limit: int) -> tuple[int, int]:
    """(end of the last complete message, ReadyForQuery count) in ``data[:end_limit]``."""
    offset = 0
    ready = 0
    while offset + 5 <= end_limit:
        length = _INT32.unpack_from(data, offset + 1)[0]
        if length < 4:
            raise ProtocolViolation(f"message length {length} is below the minimum of 4")
        end = offset + 1 + length
        if end > end_limit:
            break
        if data[offset] == 0x5A:  # 'Z'
            ready += 1
        offset = end
    return offset, ready


def _sql_of(kind: bytes, data: bytes, start: int, stop: int) -> bytes:
    if kind == b"P":  # skip the statement name
        start = data.index(b"\0", start, stop) + 1
    return data[start:stop]


def _cstring(body: bytes, offset: int) -> tuple[bytes, int]:
    end = body.index(b"\0", offset)
    return body[offset:end], end + 1


def _parse_message(name: bytes, sql: str, types: Sequence[int] = ()) -> bytes:
    body = name + b"\0" + cstr(sql) + _INT16.pack(len(types))
    body += b"".join(_INT32.pack(t) for t in types)
    return message(b"P", body)


def _bind_message(params: Sequence[str | None]) -> bytes:
    body = b"\0\0" + _INT16.pack(0) + _INT16.pack(len(params))
    for value in params:
        if value is None:
            body += _INT32.pack(-1)
        else:
            data = value.encode()
            body += _INT32.pack(len(data)) + data
    body += _INT16.pack(0)  # every result column as text
    return message(b"B", body)


_DESCRIBE_PORTAL = message(b"D", b"P\0")
_EXECUTE = message(b"E", b"\0" + _INT32.pack(0))
_FLUSH = message(b"H")
_SYNC = message(b"S")
_PARSE_COMPLETE = message(b"1")
_BIND_COMPLETE = message(b"2")
_CLOSE_COMPLETE = message(b"3")
_NO_DATA = message(b"n")
# A statement that fails at Parse: how the sandbox makes PostgreSQL abort a transaction.
_POISON = _parse_message(
    b"rsauth_sandbox_abort", "SELECT pg_catalog.rsauth_sandbox_statement_failed()"
)


def _row_description(body: bytes) -> list[ResultColumn]:
    count = _INT16.unpack_from(body)[0]
    offset = 2
    columns: list[ResultColumn] = []
    for _ in range(count):
        name, offset = _cstring(body, offset)
        _table, _attr, type_oid, _size, modifier, _fmt = struct.unpack_from("!ihihih", body, offset)
        offset += 18
        columns.append(ResultColumn(name.decode(), type_oid, modifier))
    return columns


def _decode_parameter(data: bytes, fmt: int, oid: int) -> str:
    if fmt == 0:
        return data.decode()
    if oid == 16:
        return "true" if data[:1] == b"\1" else "false"
    if oid in (20, 21, 23) and len(data) in (2, 4, 8):
        return str(int.from_bytes(data, "big", signed=True))
    if oid == 700:
        return repr(struct.unpack("!f", data)[0])
    if oid == 701:
        return repr(struct.unpack("!d", data)[0])
    return data.decode(errors="replace")


@dataclass
class _Prepared:
    sql: str
    kind: str  # "copy" | "unload"
    types: list[int]


@dataclass
class _Portal:
    prepared: _Prepared
    params: list[str | None] = field(default_factory=list)
    done: bool = False


# --------------------------------------------------------------------------- the session


class CopySession:
    """One client's session: two relay coroutines sharing the interception state."""

    def __init__(
        self, backend: CopyBackend, database: str, user: str = "", session_id: int = 0
    ) -> None:
        self.backend = backend
        self.database = database
        self.user = user
        self.session_id = session_id  # the PostgreSQL backend's pid, Redshift's session id
        # Query/Sync messages passed to PostgreSQL, and ReadyForQuery passed back.
        self._syncs_sent = 0
        self._syncs_answered = 0
        self._progress = asyncio.Event()
        # Set while the session owns PostgreSQL's answers; the downstream relay queues them.
        self._capture: asyncio.Queue[tuple[bytes, bytes] | None] | None = None
        self._dirty = False  # extended messages passed since the last Sync
        self._exclusive = False
        self._batch_failed = False  # an error in the client's batch: skip to its Sync
        self._pg_failed = False  # PostgreSQL skips messages until a Sync
        self._forwarded: list[bytes] = []  # client messages PostgreSQL still has to answer
        self._statements: dict[bytes, _Prepared] = {}
        self._portals: dict[bytes, _Portal] = {}
        self._client: asyncio.StreamWriter | None = None
        self._pg: asyncio.StreamWriter | None = None
        self._closed = False

    # -- relays ------------------------------------------------------------------------

    async def server_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """PostgreSQL → client: whole chunks when passing through, messages when captured."""
        pending = b""
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    break
                data = pending + chunk if pending else chunk
                end, ready = _scan(data, len(data))
                if end:
                    capture = self._capture
                    if capture is None:
                        writer.write(data if end == len(data) else data[:end])
                        if ready:
                            self._syncs_answered += ready
                            self._progress.set()
                    else:
                        offset = 0
                        while offset < end:
                            length = _INT32.unpack_from(data, offset + 1)[0]
                            kind = data[offset : offset + 1]
                            capture.put_nowait((kind, data[offset + 5 : offset + 1 + length]))
                            offset += 1 + length
                pending = data[end:]
                await writer.drain()
        finally:
            self._closed = True
            if self._capture is not None:
                self._capture.put_nowait(None)
            self._progress.set()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    async def client_to_server(
        self,
        reader: asyncio.StreamReader,
        pg_writer: asyncio.StreamWriter,
        client_writer: asyncio.StreamWriter,
    ) -> None:
        """Client → PostgreSQL: whole runs of messages untouched; COPY/UNLOAD handled here."""
        self._client, self._pg = client_writer, pg_writer
        pending = b""
        while True:
            chunk = await reader.read(_CHUNK)
            if not chunk:
                break
            data = pending + chunk if pending else chunk
            end, _ = _scan(data, len(data))
            if end:
                await self._from_client(data, end)
            pending = data[end:]
            await pg_writer.drain()
        if pg_writer.can_write_eof():
            with contextlib.suppress(OSError):
                pg_writer.write_eof()

    async def _from_client(self, data: bytes, end: int) -> None:
        assert self._pg is not None
        start = offset = 0
        while offset < end:
            kind = data[offset : offset + 1]
            length = _INT32.unpack_from(data, offset + 1)[0]
            stop = offset + 1 + length
            if self._exclusive:
                await self._batch_message(kind, data[offset + 5 : stop])
                start = offset = stop
                continue
            if kind in b"QP" and (answer := redshift_show(kind, data[offset + 5 : stop])):
                # SHOW server_version: PostgreSQL's setting is read-only; ask for Redshift's.
                self._pg.write(data[start:offset] + answer)
                start = stop
            if (kind in b"QP" and may_need_rewrite(_sql_of(kind, data, offset + 5, stop))) or (
                kind in b"BDEC" and (self._statements or self._portals)
                and self._names_ours(kind, data[offset + 5 : stop])
            ):
                if start < offset:
                    self._pg.write(data[start:offset])
                await self._begin_exclusive()
                await self._batch_message(kind, data[offset + 5 : stop])
                start = offset = stop
                continue
            if kind in b"QS":
                self._syncs_sent += 1
                self._dirty = False
                if kind == b"S":
                    self._portals.clear()
            elif kind != b"H":
                self._dirty = True
                if kind == b"P" and self._statements:
                    self._statements.pop(_cstring(data[offset + 5 : stop], 0)[0], None)
                elif kind == b"B" and self._portals:
                    self._portals.pop(_cstring(data[offset + 5 : stop], 0)[0], None)
            offset = stop
        if start < end:
            self._pg.write(data[start:end] if start or end < len(data) else data)

    def _names_ours(self, kind: bytes, body: bytes) -> bool:
        if kind == b"B":
            offset = _cstring(body, 0)[1]
            return _cstring(body, offset)[0] in self._statements
        if kind == b"E":
            return _cstring(body, 0)[0] in self._portals
        target = body[:1]
        name = _cstring(body, 1)[0]
        return name in (self._statements if target == b"S" else self._portals)

    # -- taking PostgreSQL's answers over -------------------------------------------------

    async def _begin_exclusive(self) -> None:
        assert self._pg is not None
        inserted_sync = self._dirty
        while self._syncs_answered < self._syncs_sent:
            if self._closed:
                raise ConnectionError("PostgreSQL closed the session")
            self._progress.clear()
            await self._progress.wait()
        self._capture = asyncio.Queue()
        self._exclusive = True
        self._batch_failed = False
        self._pg_failed = False
        self._forwarded = []
        if inserted_sync:
            # Extended messages of this batch already went on without a Sync: close them
            # with one (their answers go to the client), so PostgreSQL is ours.
            self._pg.write(_SYNC)
            while True:
                kind, body = await self._next()
                if kind == b"Z":
                    break
                self._relay(kind, body)
                if kind == b"E":
                    self._batch_failed = True
        self._dirty = False

    def _end_exclusive(self) -> None:
        capture, self._capture = self._capture, None
        self._exclusive = False
        if capture is not None:
            while not capture.empty():
                item = capture.get_nowait()
                if item is not None:
                    self._relay(*item)

    async def _next(self) -> tuple[bytes, bytes]:
        """PostgreSQL's next answer; notices and parameter changes go straight to the client."""
        assert self._capture is not None
        while True:
            item = await self._capture.get()
            if item is None:
                raise ConnectionError("PostgreSQL closed the session")
            kind, body = item
            if kind in (b"N", b"A", b"S"):
                self._relay(kind, body)
                continue
            if kind == b"E":
                self._pg_failed = True
            elif kind == b"Z":
                self._pg_failed = False
            return kind, body

    def _relay(self, kind: bytes, body: bytes) -> None:
        assert self._client is not None
        self._client.write(message(kind, body))

    def _send(self, data: bytes) -> None:
        assert self._client is not None
        self._client.write(data)

    async def _settle(self) -> None:
        """Have PostgreSQL answer the client messages passed on in this batch; relay the answers."""
        assert self._pg is not None
        if not self._forwarded:
            return
        self._pg.write(_FLUSH)
        while self._forwarded:
            kind, body = await self._next()
            self._relay(kind, body)
            if kind == b"E":
                self._batch_failed = True
                self._forwarded.clear()
            elif _completes(self._forwarded[0], kind):
                self._forwarded.pop(0)

    # -- one client message while exclusive ----------------------------------------------

    async def _batch_message(self, kind: bytes, body: bytes) -> None:
        assert self._pg is not None and self._client is not None
        if kind == b"Q":
            await self._settle()
            await self._simple_query(body)
            return
        if kind == b"S":
            self._pg.write(_SYNC)
            while True:
                answer, answer_body = await self._next()
                self._relay(answer, answer_body)
                if answer == b"Z":
                    break
            self._portals.clear()
            self._end_exclusive()
            return
        if kind == b"X":
            self._pg.write(message(kind, body))
            self._end_exclusive()
            return
        if self._batch_failed:
            return  # as PostgreSQL does after an error: skip to the Sync
        if kind == b"H":
            await self._settle()
            await self._client.drain()
            return
        if kind == b"P":
            await self._parse(body)
        elif kind == b"B" and self._names_ours(kind, body):
            await self._settle()
            self._bind(body)
        elif kind == b"D" and self._names_ours(kind, body):
            await self._settle()
            self._describe(body)
        elif kind == b"E" and self._names_ours(kind, body):
            await self._settle()
            portal = self._portals[_cstring(body, 0)[0]]
            if portal.done:
                self._send(_complete("COPY 0" if portal.prepared.kind == "copy" else "UNLOAD"))
                return
            portal.done = True
            try:
                sql = bind_parameters(portal.prepared.sql, portal.params)
                await self._execute(portal.prepared.kind, sql)
            except _Failed:
                self._batch_failed = True
        elif kind == b"C" and self._names_ours(kind, body):
            await self._settle()
            name = _cstring(body, 1)[0]
            (self._statements if body[:1] == b"S" else self._portals).pop(name, None)
            self._send(_CLOSE_COMPLETE)
        else:
            if kind == b"B":
                self._portals.pop(_cstring(body, 0)[0], None)
            self._pg.write(message(kind, body))
            self._forwarded.append(kind)

    async def _parse(self, body: bytes) -> None:
        assert self._pg is not None
        name, offset = _cstring(body, 0)
        query, offset = _cstring(body, offset)
        count = _INT16.unpack_from(body, offset)[0]
        types = [_INT32.unpack_from(body, offset + 2 + 4 * i)[0] for i in range(count)]
        sql = query.decode()
        self._statements.pop(name, None)
        kind = statement_kind(sql)
        if kind is None:
            if re.search(r"(?i)default_iam_role", sql):
                sql = await self._with_default_role(sql)
                body = _parse_message(name, sql, types)[5:]
            self._pg.write(message(b"P", body))
            self._forwarded.append(b"P")
            return
        await self._settle()
        try:
            statements = split_statements(sql)
            if len(statements) > 1:
                raise SqlError("cannot insert multiple commands into a prepared statement")
            if not _max_param(sql):  # with parameters, checked once bound (Execute)
                # Redshift answers syntax errors at Parse.
                _parse_statement(kind, sql)
        except SqlError as exc:
            with contextlib.suppress(_Failed):
                await self._fail(RedshiftError(exc.message, exc.sqlstate, exc.detail))
            self._batch_failed = True
            return
        self._statements[name] = _Prepared(sql, kind, types)
        self._send(_PARSE_COMPLETE)

    def _bind(self, body: bytes) -> None:
        portal_name, offset = _cstring(body, 0)
        statement_name, offset = _cstring(body, offset)
        prepared = self._statements[statement_name]
        format_count = _INT16.unpack_from(body, offset)[0]
        offset += 2
        formats = [_INT16.unpack_from(body, offset + 2 * i)[0] for i in range(format_count)]
        offset += 2 * format_count
        count = _INT16.unpack_from(body, offset)[0]
        offset += 2
        params: list[str | None] = []
        for index in range(count):
            size = _INT32.unpack_from(body, offset)[0]
            offset += 4
            if size < 0:
                params.append(None)
                continue
            fmt = formats[0] if len(formats) == 1 else (formats[index] if formats else 0)
            oid = prepared.types[index] if index < len(prepared.types) else 0
            params.append(_decode_parameter(body[offset : offset + size], fmt, oid))
            offset += size
        self._portals[portal_name] = _Portal(prepared, params)
        self._send(_BIND_COMPLETE)

    def _describe(self, body: bytes) -> None:
        if body[:1] == b"S":
            prepared = self._statements[_cstring(body, 1)[0]]
            count = max(len(prepared.types), _max_param(prepared.sql))
            types = [
                (prepared.types[i] if i < len(prepared.types) and prepared.types[i] else 25)
                for i in range(count)
            ]
            self._send(
                message(b"t", _INT16.pack(count) + b"".join(_INT32.pack(t) for t in types))
            )
        self._send(_NO_DATA)

    # -- simple query ---------------------------------------------------------------------

    async def _simple_query(self, body: bytes) -> None:
        assert self._pg is not None
        sql = body.rstrip(b"\0").decode()
        try:
            statements = split_statements(sql)
        except SqlError as exc:
            statements = []
            with contextlib.suppress(_Failed):
                await self._fail(RedshiftError(exc.message, exc.sqlstate))
        else:
            if not statements:
                self._send(message(b"I"))
            for statement in statements:
                kind = statement_kind(statement)
                try:
                    if kind is None:
                        await self._pass_statement(statement)
                    else:
                        await self._execute(kind, statement)
                except _Failed:
                    break
        self._pg.write(_SYNC)
        while True:
            kind_, answer = await self._next()
            self._relay(kind_, answer)
            if kind_ == b"Z":
                break
        self._end_exclusive()

    async def _pass_statement(self, sql: str) -> None:
        """A statement of a simple query that is not COPY/UNLOAD, answered as PostgreSQL would."""
        assert self._pg is not None
        if re.search(r"(?i)default_iam_role", sql):
            sql = await self._with_default_role(sql)
        self._pg.write(
            _parse_message(b"", sql) + _bind_message([]) + _DESCRIBE_PORTAL + _EXECUTE + _FLUSH
        )
        while True:
            kind, body = await self._next()
            if kind in (b"1", b"2", b"n"):
                continue
            self._relay(kind, body)
            if kind == b"E":
                raise _Failed
            if kind in (b"C", b"I", b"s"):
                return

    async def _with_default_role(self, sql: str) -> str:
        roles = await asyncio.to_thread(self.backend.namespace_roles, self.database)
        return rewrite_default_iam_role(sql, roles.default_role)

    # -- failing the statement ------------------------------------------------------------

    async def _fail(self, error: RedshiftError) -> None:
        """Abort the statement (and an open transaction block) with Redshift's text."""
        assert self._pg is not None
        if not self._pg_failed:
            self._pg.write(_POISON + _FLUSH)
            while True:
                kind, _ = await self._next()
                if kind == b"E":
                    break
        self._send(_error_message("ERROR", error.sqlstate, error.text, error.detail))
        raise _Failed

    def _fail_pg(self, exc: PgError) -> None:
        """PostgreSQL refused (it already skips to the Sync): pass its error on, trimmed."""
        fields = {k: v for k, v in exc.fields.items() if k in "SVCMDH"}
        self._send(message(b"E", error_fields(list(fields.items()))))
        raise _Failed

    # -- talking to PostgreSQL inside the client's transaction ----------------------------

    async def _query(
        self, sql: str, params: Sequence[str | None] = ()
    ) -> tuple[list[ResultColumn], list[list[str | None]]]:
        assert self._pg is not None
        self._pg.write(
            _parse_message(b"", sql) + _bind_message(params) + _DESCRIBE_PORTAL + _EXECUTE + _FLUSH
        )
        columns: list[ResultColumn] = []
        rows: list[list[str | None]] = []
        while True:
            kind, body = await self._next()
            if kind == b"T":
                columns = _row_description(body)
            elif kind == b"D":
                rows.append(list(data_row(body)))
            elif kind == b"E":
                raise PgError(parse_error(body))
            elif kind in (b"C", b"I"):
                return columns, rows

    async def _table_columns(self, stmt: CopyStatement) -> tuple[list[Column], int | None]:
        """The columns loaded (all, or those named) and the table's id."""
        _, rows = await self._query(
            "SELECT a.attname, t.typcategory, a.atttypid, pg_catalog.format_type(a.atttypid, "
            "a.atttypmod), a.attrelid FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t "
            "ON t.oid = "
            "a.atttypid WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            [stmt.table],
        )
        table = {
            str(name): Column(str(name), int(str(oid)), str(category), str(type_name))
            for name, category, oid, type_name, _ in rows
        }
        table_id = int(str(rows[0][4])) if rows else None
        if not stmt.columns:
            return list(table.values()), table_id
        picked: list[Column] = []
        for name in stmt.columns:
            if name not in table:
                raise RedshiftError(
                    f'column "{name}" of relation "{stmt.table_name}" does not exist', "42703"
                )
            picked.append(table[name])
        return picked, table_id

    async def _copy_in(self, stmt: CopyStatement, columns: list[Column], data: bytes) -> int:
        assert self._pg is not None
        names = ", ".join('"' + c.name.replace('"', '""') + '"' for c in columns)
        self._pg.write(
            _parse_message(b"", f"COPY {stmt.table} ({names}) FROM STDIN")
            + _bind_message([])
            + _EXECUTE
            + _FLUSH
        )
        while True:
            kind, body = await self._next()
            if kind == b"G":
                break
            if kind == b"E":
                raise PgError(parse_error(body))
        for start in range(0, len(data), _COPY_DATA_CHUNK):
            self._pg.write(message(b"d", data[start : start + _COPY_DATA_CHUNK]))
            await self._pg.drain()
        self._pg.write(message(b"c") + _FLUSH)
        while True:
            kind, body = await self._next()
            if kind == b"E":
                raise PgError(parse_error(body))
            if kind == b"C":
                tag = body.rstrip(b"\0").split()
                return int(tag[-1]) if len(tag) > 1 else 0

    # -- COPY and UNLOAD ------------------------------------------------------------------

    async def _execute(self, kind: str, sql: str) -> None:
        try:
            try:
                stmt = _parse_statement(kind, sql)
            except SqlError as exc:
                raise RedshiftError(exc.message, exc.sqlstate, exc.detail) from exc
            if isinstance(stmt, CopyStatement):
                await self._copy(stmt)
            else:
                await self._unload(stmt)
        except RedshiftError as exc:
            await self._fail(exc)
        except PgError as exc:
            self._fail_pg(exc)

    async def _copy(self, stmt: CopyStatement) -> None:
        started = datetime.now(timezone.utc).replace(tzinfo=None)
        columns, table_id = await self._table_columns(stmt)
        await asyncio.to_thread(self._authorize, stmt.auth)
        objects = await asyncio.to_thread(self._fetch, stmt)
        load = _Load(stmt, columns, table_id, started)
        rows = await asyncio.to_thread(self._decode, load, objects)
        log.debug("COPY into %s: %d object(s), %d row(s)", stmt.table_name, len(objects), len(rows))
        loaded = 0
        if not stmt.noload and rows:
            try:
                loaded = await self._copy_in(stmt, columns, encode_copy_rows(rows))
            except PgError as exc:
                error = _pg_load_error(exc, rows, columns)
                raise await asyncio.to_thread(self._load_failed, load, error) from exc
        self._send(_notice(LOAD_DONE.format(table=stmt.table_name, rows=loaded)))
        self._send(_complete(f"COPY {loaded}"))

    async def _unload(self, stmt: UnloadStatement) -> None:
        await asyncio.to_thread(self._authorize, stmt.auth)
        bucket, prefix = _split_s3(stmt.target)
        await asyncio.to_thread(self._prepare_destination, stmt, bucket, prefix)
        columns, rows = await self._query(stmt.query)
        written = await asyncio.to_thread(self._write_unload, stmt, bucket, prefix, columns, rows)
        log.debug("UNLOAD: %d row(s) into %d object(s)", len(rows), written)
        self._send(_notice(UNLOAD_DONE.format(rows=len(rows))))
        self._send(_complete("UNLOAD"))

    # -- blocking parts (threads) ---------------------------------------------------------

    def _authorize(self, auth: Authorization) -> None:
        if not auth.given:
            raise RedshiftError(NO_CREDENTIALS)
        if auth.access_key_id is not None:
            if auth.default_role or auth.roles:
                raise RedshiftError(MIXED_CREDENTIALS)
            if not auth.secret_access_key:
                raise RedshiftError("ACCESS_KEY_ID and SECRET_ACCESS_KEY must be used together")
            problem = self.backend.check_access_key(
                auth.access_key_id, auth.secret_access_key, auth.session_token
            )
            if problem is not None:
                raise _s3_error(S3Error(problem, _KEY_PROBLEMS[problem], 403), "Listing bucket")
            return
        namespace = self.backend.namespace_roles(self.database)
        if auth.default_role:
            if namespace.default_role is None:
                raise RedshiftError(NO_DEFAULT_ROLE.format(namespace=namespace.namespace))
            chain = [namespace.default_role]
        else:
            chain = auth.roles
        if len(chain) > 10:
            raise RedshiftError(CHAIN_TOO_LONG.format(count=len(chain)))
        for arn in chain:
            if not _ROLE_ARN.match(arn):
                raise RedshiftError(BAD_ROLE_ARN.format(arn=arn))
        if chain[0] not in namespace.roles or not any(
            self.backend.role_trusts(chain[0], service) for service in REDSHIFT_SERVICES
        ):
            text = NOT_AUTHORIZED.format(arn=chain[0])
            raise RedshiftError(
                text,
                detail=_detail(text, 30, f"IAM Role={chain[0]}", "xen_aws_credentials_mgr.cpp:0"),
            )
        for principal, arn in itertools.pairwise(chain):
            if not self.backend.role_trusts(arn, principal):
                role_name = principal.rsplit("/", 1)[-1]
                account = principal.split(":")[4]
                session = f"arn:aws:sts::{account}:assumed-role/{role_name}/RedshiftIamRoleSession"
                text = CHAIN_REFUSED.format(principal=session, arn=arn)
                raise RedshiftError(
                    text,
                    detail=_detail(text, 8001, f"IAM Role={arn}", "xen_aws_credentials_mgr.cpp:0"),
                )

    def _get(self, url: str) -> bytes:
        bucket, key = _split_s3(url)
        try:
            return self.backend.get_object(bucket, key)
        except S3Error as exc:
            raise _s3_error(exc, f"S3 key being read : {url}") from exc

    def _fetch(self, stmt: CopyStatement) -> list[tuple[str, bytes]]:
        bucket, key = _split_s3(stmt.source)
        if stmt.manifest:
            try:
                document = _json_object(self._get(stmt.source))
                entries = document["entries"]
                if not isinstance(entries, list):
                    raise TypeError
            except (ValueError, KeyError, TypeError) as exc:
                raise RedshiftError(
                    f"Manifest file is not in correct json format: {stmt.source}"
                ) from exc
            found: list[tuple[str, bytes]] = []
            for entry in entries:
                url = str(entry.get("url", ""))
                try:
                    found.append((url, self._get(url)))
                except RedshiftError:
                    if entry.get("mandatory"):
                        raise
            if not found:
                raise RedshiftError(f"Manifest {stmt.source} lists no file that exists")
            return found
        try:
            keys = [k for k in self.backend.list_objects(bucket, key) if not k.endswith("/")]
        except S3Error as exc:
            raise _s3_error(exc, f"Listing bucket={bucket} prefix={key}") from exc
        if not keys:
            text = PREFIX_MISSING.format(prefix=key)
            raise RedshiftError(text, detail=_detail(text, 8001, "", "s3_utility.cpp:0"))
        return [(f"s3://{bucket}/{k}", self._get(f"s3://{bucket}/{k}")) for k in sorted(keys)]

    def _decode(self, load: _Load, objects: list[tuple[str, bytes]]) -> list[SourceRow]:
        stmt, columns = load.stmt, load.columns
        paths = None
        if stmt.format == "json" and stmt.json_paths and stmt.json_paths.startswith("s3://"):
            try:
                paths = parse_json_paths(self._get(stmt.json_paths), stmt.json_paths)
            except FormatError as exc:
                raise RedshiftError(str(exc)) from exc
        rows: list[SourceRow] = []
        for url, data in objects:
            try:
                rows.extend(read_rows(stmt, url, data, columns, paths))
            except LoadError as exc:
                raise self._load_failed(load, exc) from exc
            except FormatError as exc:
                raise RedshiftError(str(exc)) from exc
        return rows

    def _load_failed(self, load: _Load, error: LoadError) -> RedshiftError:
        """Record the bad row in sys_load_error_detail; the error the client then gets."""
        column = next((c for c in load.columns if c.name == error.column), None)
        row = LoadErrorRow(
            user_name=self.user,
            session_id=self.session_id,
            database_name=self.database,
            table_id=load.table_id,
            start_time=load.started,
            file_name=error.url,
            line_number=error.line,
            column_name=error.column,
            type_name=column.type_name if column is not None else "",
            error_code=error.code,
            error_message=error.reason,
        )
        try:
            self.backend.record_load_error(self.database, row)
        except Exception:
            # The client still learns that the load failed; only the row is missing.
            log.warning("could not record a load error in sys_load_error_detail", exc_info=True)
        return _load_failed(load.stmt, error)

    def _prepare_destination(self, stmt: UnloadStatement, bucket: str, prefix: str) -> None:
        try:
            existing = self.backend.list_objects(bucket, prefix)
        except S3Error as exc:
            raise _s3_error(exc, f"Listing bucket={bucket} prefix={prefix}") from exc
        if not existing:
            return
        if stmt.clean_path:
            self.backend.delete_objects(bucket, existing)
        elif not stmt.allow_overwrite:
            raise RedshiftError(UNLOAD_NOT_EMPTY)

    def _write_unload(
        self, stmt: UnloadStatement, bucket: str, prefix: str,
        columns: list[ResultColumn], rows: list[list[str | None]],
    ) -> int:
        body = unload_body(stmt, columns, rows)
        name = prefix + ("0000_part_00" if stmt.parallel else "000")
        extension = stmt.extension
        if extension is None and stmt.format == "parquet":
            extension = "parquet"
        elif extension is None and stmt.compression:
            extension = {"gzip": "gz", "bzip2": "bz2"}[stmt.compression]
        if extension:
            name += "." + extension
        try:
            self.backend.put_object(bucket, name, body)
            if stmt.manifest:
                entry: dict[str, object] = {"url": f"s3://{bucket}/{name}"}
                if stmt.manifest_verbose:
                    entry["meta"] = {"content_length": len(body), "record_count": len(rows)}
                document: dict[str, object] = {"entries": [entry]}
                if stmt.manifest_verbose:
                    document["schema"] = {
                        "elements": [
                            {"name": c.name, "type": {"base": str(c.type_oid)}} for c in columns
                        ]
                    }
                    document["meta"] = {"content_length": len(body), "record_count": len(rows)}
                self.backend.put_object(bucket, prefix + "manifest", json.dumps(document).encode())
        except S3Error as exc:
            raise _s3_error(exc, f"Writing bucket={bucket} key={name}") from exc
        return 2 if stmt.manifest else 1


_KEY_PROBLEMS = {
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
    "SignatureDoesNotMatch": (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    ),
    "InvalidToken": "The provided token is malformed or otherwise invalid.",
}


def _json_object(data: bytes) -> dict[str, object]:
    document = json.loads(data)
    if not isinstance(document, dict):
        raise TypeError("not an object")
    return document


def _parse_statement(kind: str, sql: str) -> CopyStatement | UnloadStatement:
    return parse_copy(sql) if kind == "copy" else parse_unload(sql)


def _max_param(sql: str) -> int:
    found = [int(m) for m in re.findall(r"\$(\d+)", sql)]
    return max(found, default=0)


def _completes(sent: bytes, answer: bytes) -> bool:
    """Whether ``answer`` is the last message PostgreSQL sends for the client message ``sent``."""
    if sent == b"P":
        return answer == b"1"
    if sent == b"B":
        return answer == b"2"
    if sent == b"C":
        return answer == b"3"
    if sent == b"D":
        return answer in (b"T", b"n")
    if sent == b"E":
        return answer in (b"C", b"I", b"s", b"G", b"H")
    if sent == b"F":
        return answer == b"V"
    return True


# Redshift's stl_load_errors codes for PostgreSQL's input errors (unverified mapping).
_INTEGER_TYPES = {"smallint": "Smallint", "integer": "Integer", "bigint": "Long"}


def _pg_load_error(exc: PgError, rows: list[SourceRow], columns: list[Column]) -> LoadError:
    where = _COPY_WHERE.search(exc.fields.get("W", ""))
    line = int(where.group(1)) if where else 0
    column_name = (where.group(2) or "") if where else ""
    row = rows[line - 1] if 0 < line <= len(rows) else None
    column = next((c for c in columns if c.name == column_name), None)
    value = ""
    if row is not None and column is not None:
        value = row.values[columns.index(column)] or ""
    sqlstate = exc.sqlstate
    reason = exc.fields.get("M", "")
    code = 1216
    if sqlstate == "22P02" and column is not None and column.type_name in _INTEGER_TYPES:
        position = next((i for i, ch in enumerate(value) if not (ch.isdigit() or ch in "+-")), 0)
        code = 1207
        reason = (
            f"Invalid digit, Value '{value[position:position + 1]}', Pos {position}, "
            f"Type: {_INTEGER_TYPES[column.type_name]}"
        )
    elif sqlstate == "22P02" and column is not None and column.category == "N":
        code, reason = 1207, f"Invalid digit, Value '{value[:1]}', Pos 0, Type: Decimal"
    elif sqlstate in ("22007", "22008") or (column is not None and column.category == "D"):
        code = 1205 if column is not None and column.type_name == "date" else 1206
        reason = f"Invalid {'date' if code == 1205 else 'timestamp'} format or value: {value}"
    elif sqlstate == "22001":
        code, reason = 1204, "String length exceeds DDL length"
    elif sqlstate == "23502":
        code, reason = 1213, "Missing data for not-null field"
    return LoadError(
        url=row.url if row else "", line=row.line if row else line, column=column_name,
        code=code, reason=reason, raw_line=row.raw if row else "", raw_value=value,
    )


@dataclass(frozen=True)
class _Load:
    """One COPY under way: what a failed row is recorded with."""

    stmt: CopyStatement
    columns: list[Column]
    table_id: int | None
    started: datetime  # UTC, naive, as sys_load_error_detail's start_time


def _load_failed(stmt: CopyStatement, error: LoadError) -> RedshiftError:
    rule = "  -----------------------------------------------"
    detail = (
        f"\n{rule}\n  the row sys_load_error_detail holds for this load:\n"
        f"  filename:        {error.url}\n  line_number:     {error.line}\n"
        f"  colname:         {error.column}\n  err_code:        {error.code}\n"
        f"  err_reason:      {error.reason}\n  raw_field_value: {error.raw_value}\n"
        f"  raw_line:        {error.raw_line[:1024]}\n{rule}\n"
    )
    return RedshiftError(LOAD_FAILED.format(table=stmt.table_name), detail=detail)
