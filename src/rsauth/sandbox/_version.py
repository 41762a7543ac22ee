"""What the sandbox's database says it is: Redshift's version, not PostgreSQL's.

Redshift reports ``server_version`` 8.0.2 and ``VERSION()`` as
``PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017
(Red Hat 3.4.2-6.fc3), Redshift 1.0.12103``
(https://docs.aws.amazon.com/redshift/latest/dg/r_VERSION.html; the trailing
number is the cluster version, the docs' example used here). ``version()`` is
replaced in each database (created from ``template1``, which holds it too);
``server_version`` is a read-only PostgreSQL setting, so the front asks for
Redshift's value instead when a client sends ``SHOW server_version``.
"""

from __future__ import annotations

import re
import struct

REDSHIFT_SERVER_VERSION = "8.0.2"
REDSHIFT_VERSION = (
    "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017 "
    "(Red Hat 3.4.2-6.fc3), Redshift 1.0.12103"
)
VERSION_FUNCTION = (
    "CREATE OR REPLACE FUNCTION pg_catalog.version() RETURNS text LANGUAGE sql STABLE "
    f"AS $$ SELECT '{REDSHIFT_VERSION}'::text $$"
)

_SHOW_SERVER_VERSION = re.compile(rb"\s*show\s+server_version\s*;?\s*", re.IGNORECASE)
_ANSWER = f"SELECT '{REDSHIFT_SERVER_VERSION}'::text AS server_version".encode()
_INT32 = struct.Struct("!i")


def redshift_show(kind: bytes, body: bytes) -> bytes | None:
    """The whole message to send instead of a Query or Parse of ``SHOW server_version``;
    None for any other message."""
    if kind == b"Q":
        if _SHOW_SERVER_VERSION.fullmatch(body.rstrip(b"\0")):
            new = _ANSWER + b"\0"
            return kind + _INT32.pack(len(new) + 4) + new
        return None
    if kind == b"P":
        name_end = body.find(b"\0")
        sql_end = body.find(b"\0", name_end + 1)
        if name_end < 0 or sql_end < 0:
            return None
        if _SHOW_SERVER_VERSION.fullmatch(body[name_end + 1 : sql_end]):
            new = body[: name_end + 1] + _ANSWER + body[sql_end:]
            return kind + _INT32.pack(len(new) + 4) + new
    return None
