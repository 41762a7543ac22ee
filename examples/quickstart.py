"""Log in to Redshift Serverless three ways with rsauth, against a local sandbox.

``make demo`` runs this. It starts the sandbox (a local Redshift Serverless),
points the environment at it, and connects through the ``iam``, ``secret`` and
``superuser`` methods, showing who each login is. Against real AWS the same
``rsauth.connect`` calls work unchanged: drop the sandbox and keep your own
AWS credentials and region.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3

import rsauth
from rsauth.sandbox import Sandbox


def describe(connection: Any) -> tuple[str, bool]:
    cursor = connection.cursor()
    cursor.execute("select current_user, usesuper from pg_user where usename = current_user")
    row = cursor.fetchone()
    cursor.close()
    assert row is not None
    return str(row[0]), bool(row[1])


def show(label: str, broker: rsauth.Broker, **how: Any) -> None:
    with broker.connect(**how) as connection:
        user, superuser = describe(connection)
    credentials = broker.credentials(**how)  # served from the cache: no AWS call
    left = "never expires" if credentials.expires_in is None else (
        f"expires in {credentials.expires_in / 60:.1f} min"
    )
    print(f"  {label:<42} {user:<20} {superuser!s:<10} {credentials.method:<10} {left}")


def main() -> None:
    print("starting the local Redshift Serverless sandbox ...")
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)  # endpoints, region, the creator's keys, the sandbox CA
        # An application role, as an administrator would create it: this account's
        # identities may assume it (and tag the session), and it may log in.
        iam = boto3.client("iam")
        account = sandbox.account_id
        iam.create_role(
            RoleName="analytics-app",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                 "Action": ["sts:AssumeRole", "sts:TagSession"]},
            ]}),
        )
        iam.put_role_policy(
            RoleName="analytics-app",
            PolicyName="login",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow",
                 "Action": ["redshift-serverless:GetWorkgroup",
                            "redshift-serverless:GetCredentials"],
                 "Resource": f"arn:aws:redshift-serverless:*:{account}:workgroup/*"},
            ]}),
        )
        role = f"arn:aws:iam::{account}:role/analytics-app"
        workgroup = sandbox.workgroup
        print(f"workgroup {workgroup!r}, database {sandbox.database!r}\n")
        print(f"  {'how':<42} {'database user':<20} {'superuser':<10} {'method':<10} credentials")
        with rsauth.Broker() as broker:
            show('iam (role_arn="...:role/analytics-app")', broker,
                 workgroup=workgroup, role_arn=role)
            show('secret (the managed admin secret)', broker,
                 workgroup=workgroup, method="secret")
            show('superuser (the identity that made it)', broker,
                 workgroup=workgroup, method="superuser")
            for _ in range(100):
                broker.connect(workgroup=workgroup, role_arn=role).close()
            stats = broker.stats()
        counters = ("cache.", "login.", "connect.")
        calls = {k: v for k, v in stats.items() if not k.startswith(counters)}
        print(f"\n103 connects later, AWS calls made: {calls}")
        print(f"cache: {stats['cache.hits']} hits, {stats['cache.misses']} misses")


if __name__ == "__main__":
    main()
