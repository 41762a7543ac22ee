"""An async service over rsauth: one pool for the app's lifetime, handlers that never block.

The shape of a FastAPI or aiohttp app without the framework: a lifespan opens
an ``rsauth.psycopg.async_pool`` and closes it, and each request handler
borrows a connection. Logins happen in a worker thread (the event loop keeps
serving), once for all tasks asking at the same time, and each new connection
gets the login current then. ``rsauth.get_credentials_async`` shows the login
itself, for code that hands it to another client.

Run it with ``.venv/bin/python examples/asyncio_fastapi_style.py``. With
``RSAUTH_WORKGROUP`` set it uses your environment as it is (real AWS, or a
sandbox you started); otherwise it starts a local sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg_pool

import rsauth
import rsauth.psycopg
from rsauth.sandbox import Sandbox


@contextlib.contextmanager
def environment() -> Iterator[str]:
    """The workgroup to use, starting a local sandbox when none is set."""
    workgroup = os.environ.get("RSAUTH_WORKGROUP")
    if workgroup:
        yield workgroup
        return
    print("RSAUTH_WORKGROUP is not set: starting a local sandbox ...")
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)
        yield sandbox.workgroup


@contextlib.asynccontextmanager
async def lifespan(workgroup: str) -> AsyncIterator[psycopg_pool.AsyncConnectionPool[Any]]:
    """What a FastAPI ``lifespan`` would do: the pool opens with the app and closes with it."""
    async with rsauth.psycopg.async_pool(workgroup=workgroup, max_size=5) as pool:
        yield pool


async def handle_request(pool: psycopg_pool.AsyncConnectionPool[Any], number: int) -> str:
    """A request handler: borrow a connection, query, give it back."""
    async with pool.connection() as connection:
        cursor = await connection.execute("select current_user, %s::int * 2", (number,))
        row = await cursor.fetchone()
    assert row is not None
    return f"request {number}: {row[1]} (as {row[0]})"


async def serve(workgroup: str) -> None:
    credentials = await rsauth.get_credentials_async(workgroup=workgroup)
    print(f"login: {credentials}")
    async with lifespan(workgroup) as pool:
        answers = await asyncio.gather(*(handle_request(pool, n) for n in range(20)))
    for answer in answers[:3]:
        print(answer)
    print(f"... {len(answers)} requests served")
    calls = rsauth._api.default_broker().stats()["redshift-serverless.GetCredentials"]
    print(f"GetCredentials calls: {calls}")


def main() -> None:
    with environment() as workgroup:
        asyncio.run(serve(workgroup))


if __name__ == "__main__":
    main()
