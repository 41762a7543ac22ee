"""An ETL job: COPY a CSV from S3 with the namespace's default IAM role, transform, UNLOAD.

Run it with ``.venv/bin/python examples/etl_copy.py``; it starts its own sandbox and
plays both parts:

1. the platform team, once: an IAM role for the job that Redshift may use to read and
   write S3 (associated with the namespace as its default IAM role), and a schema the
   job owns;
2. the job, the part to start from: log in as that role (``role_arn=``: no password,
   no access key in any SQL), COPY with ``IAM_ROLE default``, transform with SQL,
   UNLOAD the result, read it back.

Against AWS, drop the sandbox and part 1 and set ``RSAUTH_WORKGROUP``, ``BUCKET`` and
``ETL_ROLE_ARN``.
"""

from __future__ import annotations

import json
import os

import boto3

import rsauth
from rsauth import etl
from rsauth.sandbox import Sandbox

BUCKET = "acme-etl"
SALES_CSV = '''\
sale_id,region,customer,amount,sold_on
1,EU,"Müller, Anna",120.50,2024-06-01
2,US,O'Brien,75.00,2024-06-01
3,EU,Dupont,30.25,2024-06-02
4,APAC,"Tanaka ""Ken""",210.00,2024-06-02
5,US,Smith,,2024-06-02
'''


def platform_setup(sandbox: Sandbox) -> str:
    """Part 1: the job's IAM role, the namespace's default role; returns the role ARN."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            # Redshift uses the role for COPY/UNLOAD; the job's own identity assumes it.
            {"Effect": "Allow", "Principal": {"Service": "redshift-serverless.amazonaws.com"},
             "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{sandbox.account_id}:root"},
             "Action": ["sts:AssumeRole", "sts:TagSession"]},
        ],
    }
    iam = boto3.client("iam")
    role = iam.create_role(
        RoleName="etl-job", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    # What the job does as the role: log in, check the namespace, and reach its bucket.
    permissions = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow",
             "Action": ["redshift-serverless:GetWorkgroup", "redshift-serverless:GetCredentials",
                        "redshift-serverless:GetNamespace"],
             "Resource": [
                 f"arn:aws:redshift-serverless:*:{sandbox.account_id}:workgroup/*",
                 f"arn:aws:redshift-serverless:*:{sandbox.account_id}:namespace/*",
             ]},
            {"Effect": "Allow",
             "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]},
        ],
    }
    iam.put_role_policy(RoleName="etl-job", PolicyName="etl",
                        PolicyDocument=json.dumps(permissions))
    boto3.client("redshift-serverless").update_namespace(
        namespaceName=sandbox.namespace, iamRoles=[role], defaultIamRoleArn=role
    )
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    # The role's database user (IAMR:etl-job) exists from its first login; give it a schema.
    rsauth.connect(workgroup=sandbox.workgroup, role_arn=role).close()
    with rsauth.connect(workgroup=sandbox.workgroup) as admin:  # the namespace's admin
        admin.autocommit = True
        admin.cursor().execute('create schema etl authorization "IAMR:etl-job"')
    return role


# --8<-- [start:job]
def job(workgroup: str, role_arn: str) -> None:
    """Part 2: the ETL job."""
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="incoming/sales/2024-06-02.csv", Body=SALES_CSV.encode())

    with rsauth.connect(workgroup=workgroup, role_arn=role_arn) as conn:
        cursor = conn.cursor()
        cursor.execute("select current_user")
        (user,) = cursor.fetchone() or ("?",)
        print(f"logged in as {user}")
        cursor.execute(
            "create table etl.sales (sale_id int, region varchar(8), customer varchar(40), "
            "amount numeric(10,2), sold_on date)"
        )
        print(etl.copy_sql("etl.sales", f"s3://{BUCKET}/incoming/sales/", ignore_header=1,
                           dateformat="YYYY-MM-DD"))
        loaded = etl.copy(conn, "etl.sales", f"s3://{BUCKET}/incoming/sales/",
                          ignore_header=1, dateformat="YYYY-MM-DD")
        print(f"COPY: {loaded} rows loaded into etl.sales")

        cursor.execute(
            "create table etl.daily_revenue as "
            "select sold_on, region, count(*) as sales, coalesce(sum(amount), 0) as revenue "
            "from etl.sales group by sold_on, region"
        )
        conn.commit()

        result = etl.unload(
            conn,
            "select sold_on, region, sales, revenue from etl.daily_revenue "
            "where region <> 'TEST' order by sold_on, region",
            f"s3://{BUCKET}/reports/daily_revenue_",
            header=True,
            parallel=False,
            allow_overwrite=True,
        )
        print(f"UNLOAD: {result.rows} rows to {', '.join(result.files or ['?'])}")

    for url in result.files or ():
        bucket, _, key = url.removeprefix("s3://").partition("/")
        print(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode(), end="")
# --8<-- [end:job]


def main() -> None:
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)  # endpoints, region, keys and the sandbox CA
        role_arn = platform_setup(sandbox)
        job(sandbox.workgroup, role_arn)


if __name__ == "__main__":
    main()
