"""SQLAlchemy and pandas over rsauth: a connection pool that outlives every password.

``rsauth.sqlalchemy.create_engine`` gives the pool a ``creator`` that asks the
Broker for each new connection, so connections opened an hour from now log in
with the login that is current then; a URL with a password in it would be
refused once that password expired (15 minutes by default).

Run it with ``.venv/bin/python examples/sqlalchemy_pandas.py``. With
``RSAUTH_WORKGROUP`` set it uses your environment as it is (real AWS, or a
sandbox you started); otherwise it starts a local sandbox, and then also
expires every password mid-run to show the pool carrying on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pandas
import sqlalchemy

import rsauth
import rsauth.sqlalchemy
from rsauth.sandbox import Sandbox

QUERY = "select region, sum(amount) as total from demo_sales group by region order by region"


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
        engine = rsauth.sqlalchemy.create_engine(
            workgroup=workgroup, broker=broker, pool_size=2, pool_pre_ping=True
        )
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(
                "create table if not exists demo_sales (region varchar(16), amount numeric(10, 2))"
            ))
            connection.execute(sqlalchemy.text("delete from demo_sales"))
            connection.execute(
                sqlalchemy.text("insert into demo_sales values (:region, :amount)"),
                [{"region": "eu", "amount": 10.5}, {"region": "us", "amount": 7},
                 {"region": "eu", "amount": 2.25}],
            )

        print("pandas.read_sql_query over the engine:")
        print(pandas.read_sql_query(QUERY, engine), "\n")

        if sandbox is not None:
            expired = sandbox.expire_passwords()
            engine.dispose()  # every pooled connection goes; the next ones log in again
            print(f"the sandbox expired {expired} password(s); the pool opens new connections:")
            print(pandas.read_sql_query(QUERY, engine), "\n")

        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("drop table demo_sales"))
        engine.dispose()
        stats = broker.stats()
        print(
            f"GetCredentials calls: {stats.get('redshift-serverless.GetCredentials', 0)}, "
            f"logins retried with a fresh password: {stats['login.retries']}"
        )


if __name__ == "__main__":
    main()
