"""psycopg 3 over rsauth: a pool whose every new connection logs in with a current login.

``rsauth.psycopg.pool`` returns a ``psycopg_pool.ConnectionPool`` that asks the
Broker each time it opens a connection, so the pool outlives any password: a
connection opened an hour from now logs in with the login current then, and a
login the database refuses is replaced and tried again.

Run it with ``.venv/bin/python examples/psycopg_pooled.py``. With
``RSAUTH_WORKGROUP`` set it uses your environment as it is (real AWS, or a
sandbox you started); otherwise it starts a local sandbox, and then also
expires every password mid-run to show the pool carrying on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import rsauth
import rsauth.psycopg
from rsauth.sandbox import Sandbox


@contextlib.contextmanager
def environment() -> Iterator[tuple[str, Sandbox | None]]:
    """The workgroup to use, and the sandbox when this example started one."""
    workgroup = os.environ.get("RSAUTH_WORKGROUP")
    if workgroup:
        yield workgroup, None
        return
    print("RSAUTH_WORKGROUP is not set: starting a local sandbox ...")
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)
        yield sandbox.workgroup, sandbox


def main() -> None:
    with environment() as (workgroup, sandbox), rsauth.Broker() as broker:
        # min_size=0 and no check query: an idle pool holds no sessions and runs no queries.
        with rsauth.psycopg.pool(workgroup=workgroup, broker=broker, max_size=4) as pool:
            with pool.connection() as connection:
                connection.execute("drop table if exists demo_orders")
                connection.execute("create table demo_orders (id int, amount numeric(10, 2))")
                with connection.cursor() as cursor:
                    cursor.executemany(
                        "insert into demo_orders values (%s, %s)", [(1, 10.5), (2, 7), (3, 2.25)]
                    )
            with pool.connection() as connection:
                row = connection.execute(
                    "select current_user, count(*), sum(amount) from demo_orders"
                ).fetchone()
                assert row is not None
                print(f"as {row[0]}: {row[1]} orders, {row[2]} in total")
            if sandbox is not None:
                sandbox.expire_passwords()
                print("every password expired; closing the pooled session to force a new login")
                with pool.connection() as connection:
                    connection.close()
                with pool.connection() as connection:
                    row = connection.execute("select count(*) from demo_orders").fetchone()
                    assert row is not None
                    print(f"a new session, a fresh login: {row[0]} orders")
            with pool.connection() as connection:
                connection.execute("drop table demo_orders")
        calls = broker.stats()["redshift-serverless.GetCredentials"]
        print(f"GetCredentials calls: {calls}")


if __name__ == "__main__":
    main()
