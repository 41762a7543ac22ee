"""Redshift Serverless's load-error system views, kept in the sandbox's PostgreSQL.

A failed COPY on Serverless says "Check 'sys_load_error_detail' system table
for details", and that view holds one row per failed load, visible to every
user: superusers see all rows, others their own
(https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_ERROR_DETAIL.html,
whose column list the view follows). ``stl_load_errors`` holds queries "run on
main provisioned clusters" only, not on serverless namespaces
(https://docs.aws.amazon.com/redshift/latest/dg/r_STL_LOAD_ERRORS.html); a
Serverless user who queries it meets "permission denied for relation
stl_load_errors" (seen in a public write-up; the SQLSTATE, 42501, is
PostgreSQL's for that text, unverified on Redshift).

Both live in ``pg_catalog`` of ``template1`` (so every database created later
has them) and ``postgres``, where name lookup finds them before any schema on
the search path, as Redshift's system views are found. The rows live in
``pg_catalog.rsauth_load_error_detail``, written by the sandbox's own
superuser session so they outlast the failed load's aborted transaction, as
they do on Redshift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from rsauth.sandbox._pgwire import quote_literal

# Creating relations in pg_catalog needs allow_system_table_mods (a superuser setting).
INSTALL = """
SET allow_system_table_mods = on;
CREATE TABLE pg_catalog.rsauth_load_error_detail (
    user_name name NOT NULL,
    query_id bigint NOT NULL,
    transaction_id bigint,
    session_id integer,
    database_name character(64),
    table_id integer,
    start_time timestamp,
    file_name character(256),
    line_number bigint,
    column_name character(127),
    column_type character(10),
    column_length character(10),
    "position" integer,
    error_code integer,
    error_message character(512)
);
CREATE SEQUENCE pg_catalog.rsauth_load_query_id;
REVOKE ALL ON pg_catalog.rsauth_load_error_detail FROM PUBLIC;
CREATE VIEW pg_catalog.sys_load_error_detail AS
    SELECT r.oid::integer AS user_id, e.query_id, e.transaction_id, e.session_id,
           e.database_name, e.table_id, e.start_time, e.file_name, e.line_number,
           e.column_name, e.column_type, e.column_length, e."position", e.error_code,
           e.error_message
    FROM pg_catalog.rsauth_load_error_detail e
    LEFT JOIN pg_catalog.pg_roles r ON r.rolname = e.user_name
    WHERE e.user_name = current_user
       OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
GRANT SELECT ON pg_catalog.sys_load_error_detail TO PUBLIC;
CREATE FUNCTION pg_catalog.rsauth_stl_load_errors_refused() RETURNS TABLE (
    userid integer, slice integer, tbl integer, starttime timestamp, session integer,
    query integer, filename character(256), line_number bigint, colname character(127),
    "type" character(10), col_length character(10), "position" integer,
    raw_line character(1024), raw_field_value character(1024), err_code integer,
    err_reason character(100)
) LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '42501',
        MESSAGE = 'permission denied for relation stl_load_errors';
END
$$;
CREATE VIEW pg_catalog.stl_load_errors AS
    SELECT * FROM pg_catalog.rsauth_stl_load_errors_refused();
GRANT SELECT ON pg_catalog.stl_load_errors TO PUBLIC;
RESET allow_system_table_mods;
"""

# PostgreSQL's type names as Redshift's system tables write them (unverified mapping).
_SHORT_TYPES = {
    "character varying": "varchar",
    "character": "char",
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
    "real": "float4",
    "double precision": "float8",
    "boolean": "bool",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
}
_POSITION = re.compile(r"\bPos (\d+)")


@dataclass(frozen=True)
class LoadErrorRow:
    """One row of sys_load_error_detail: the first bad row of one failed COPY."""

    user_name: str
    session_id: int
    database_name: str
    table_id: int | None
    start_time: datetime
    file_name: str
    line_number: int
    column_name: str
    type_name: str  # PostgreSQL's format_type(), e.g. "character varying(10)"
    error_code: int
    error_message: str

    def insert(self) -> str:
        """The INSERT that records this row (run as the superuser, in its database)."""
        base, _, rest = self.type_name.partition("(")
        column_type = _SHORT_TYPES.get(base.strip(), base.strip())[:10]
        length = rest.split(",")[0].rstrip(")").strip() if rest else ""
        found = _POSITION.search(self.error_message)
        values = [
            quote_literal(self.user_name),
            "nextval('pg_catalog.rsauth_load_query_id')",
            "NULL",
            str(self.session_id),
            quote_literal(self.database_name[:64]),
            "NULL" if self.table_id is None else str(self.table_id),
            quote_literal(self.start_time.isoformat(sep=" ")),
            quote_literal(self.file_name[:256]),
            str(self.line_number),
            quote_literal(self.column_name[:127]),
            quote_literal(column_type),
            quote_literal(length[:10]),
            found.group(1) if found else "0",
            str(self.error_code),
            quote_literal(self.error_message[:512]),
        ]
        # Every text value is quoted with quote_literal; the rest are numbers.
        return f"INSERT INTO pg_catalog.rsauth_load_error_detail VALUES ({', '.join(values)})"  # noqa: S608
