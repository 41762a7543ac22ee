"""Log in to the local sandbox by hand: boto3 GetCredentials, then redshift_connector.

This is what rsauth automates (and caches, and refreshes). Run it with
``.venv/bin/python examples/sandbox_login.py``; it starts its own sandbox.
"""

from __future__ import annotations

import os

import boto3
import redshift_connector

from rsauth.sandbox import Sandbox


def main() -> None:
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)  # endpoints, region, keys and the sandbox CA
        client = boto3.client("redshift-serverless")
        endpoint = client.get_workgroup(workgroupName=sandbox.workgroup)["workgroup"]["endpoint"]
        login = client.get_credentials(
            workgroupName=sandbox.workgroup, dbName=sandbox.database, durationSeconds=900
        )
        with redshift_connector.connect(
            host=endpoint["address"],
            port=endpoint["port"],
            database=sandbox.database,
            user=login["dbUser"],
            password=login["dbPassword"],
            ssl=True,
            sslmode="verify-full",
        ) as connection:
            cursor = connection.cursor()
            cursor.execute(
                "select current_user, usesuper from pg_user where usename = current_user"
            )
            row = cursor.fetchone()
            assert row is not None
            user, superuser = row
        print(f"logged in to {sandbox.workgroup} as {user} (superuser: {superuser}); "
              f"the password expires at {login['expiration']:%H:%M:%S %Z}")


if __name__ == "__main__":
    main()
