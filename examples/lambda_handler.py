"""An AWS Lambda function that queries Redshift Serverless through rsauth.

Lambda runs a module's top level once per execution environment (the cold start)
and ``handler`` once per invocation; a warm invocation finds the module as the last
one left it. ``rsauth.connect()`` keeps its login and the workgroup's endpoint in a
process-wide Broker made on first use, so only the first invocation of an
environment asks AWS: later ones connect with the cached login (a cache hit, no AWS
call) until it nears expiry and is refreshed ahead of time. Each invocation opens
and closes its own connection: a frozen environment may be thawed long after, when
a connection kept at module level may have been dropped.

Configure it with the function's environment: ``RSAUTH_WORKGROUP`` (and, if needed,
``RSAUTH_DATABASE``, ``RSAUTH_ROLE_ARN``); the execution role's credentials and
``AWS_REGION`` are set by Lambda. docs/lambda.md says which memory size, timeout
and permissions to give it.

Run it here against the local sandbox (``python examples/lambda_handler.py``): it
calls the handler twice, as two invocations of one environment would be, and shows
the AWS calls each made.
"""

from __future__ import annotations

from typing import Any

# --8<-- [start:handler]
import rsauth

# Seconds kept back from the invocation's remaining time for returning the answer.
_MARGIN_SECONDS = 2


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run one query; the connection is bounded by the time the invocation has left."""
    remaining = context.get_remaining_time_in_millis() // 1000 - _MARGIN_SECONDS
    budget = max(remaining, 1)
    # timeout bounds each read of the driver; resume_timeout how long a workgroup that is
    # resuming from idle may take to answer, within what this invocation has left.
    with rsauth.connect(timeout=budget, resume_timeout=budget) as connection:
        cursor = connection.cursor()
        cursor.execute("select current_user, current_database()")
        row = cursor.fetchone()
        cursor.close()
    assert row is not None  # "select" always answers one row
    user, database = row
    return {"user": user, "database": database}
# --8<-- [end:handler]


class _Context:
    """The part of Lambda's context object the handler reads."""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def main() -> None:
    import os

    from rsauth.sandbox import Sandbox

    print("starting the local Redshift Serverless sandbox ...")
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)
        os.environ["RSAUTH_WORKGROUP"] = sandbox.workgroup
        for invocation in ("first (cold)", "second (warm)"):
            sandbox.reset_calls()
            answer = handler({}, _Context())
            print(f"  {invocation:<14} {answer}  AWS calls: {sandbox.calls() or 'none'}")


if __name__ == "__main__":
    main()
