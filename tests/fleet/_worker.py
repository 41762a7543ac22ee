"""A fleet worker: one process with its own Broker, connecting until told to stop.

Started by tests/fleet/test_fleet.py through a ``forkserver`` context that has
already imported rsauth, boto3, redshift_connector and redis, so 32 workers
start in a fraction of a second each, as separate processes (own pid, own
sockets, killable with SIGKILL).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import rsauth


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _current_user(connection: Any) -> str:
    cursor = connection.cursor()
    cursor.execute("select current_user")
    row = cursor.fetchone()
    cursor.close()
    return str(row[0])


def run(spec: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """Connect every ``connect_every`` s and read credentials every ``poll_every`` s for
    ``seconds`` after ``go`` is set (at least one connect); put a summary on ``results``."""
    os.environ.clear()
    os.environ.update(spec["env"])
    warnings = _Warnings()
    logging.getLogger("rsauth").addHandler(warnings)
    shared = (
        rsauth.RedisCache(spec["url"], fleet_key=spec["fleet_key"], **spec.get("cache", {}))
        if spec.get("url")
        else None
    )
    broker = rsauth.Broker(shared_cache=shared)
    ready.put(os.getpid())
    go.wait()
    started = time.monotonic()
    deadline = started + spec["seconds"]
    summary: dict[str, Any] = {
        "pid": os.getpid(),
        "name": spec.get("name", ""),
        "connects": 0,
        "credentials": 0,
        "errors": [],
        "users": [],
        "first_connect": None,
        "first_connect_at": None,
        "first_login_at": None,
        "first_login_stats": {},
    }
    next_connect = started
    kwargs: dict[str, Any] = {"workgroup": spec["workgroup"]}
    if spec.get("role_arn"):
        kwargs["role_arn"] = spec["role_arn"]
    try:
        broker.credentials(**kwargs)
        summary["first_login_at"] = time.time()
        # What the first login took, apart from the refreshes the worker does later.
        summary["first_login_stats"] = broker.stats()
    except Exception as exc:
        summary["errors"].append(f"{type(exc).__name__}: {exc}")
    while True:
        now = time.monotonic()
        try:
            if now >= next_connect:
                with broker.connect(**kwargs) as connection:
                    user = _current_user(connection)
                if summary["first_connect"] is None:
                    summary["first_connect"] = time.monotonic() - started
                    summary["first_connect_at"] = time.time()
                if user not in summary["users"]:
                    summary["users"].append(user)
                summary["connects"] += 1
                next_connect = now + spec["connect_every"]
            else:
                broker.credentials(**kwargs)
                summary["credentials"] += 1
        except Exception as exc:
            summary["errors"].append(f"{type(exc).__name__}: {exc}")
        if time.monotonic() >= deadline and summary["connects"]:
            break
        time.sleep(spec["poll_every"])
    summary["warnings"] = warnings.messages
    summary["stats"] = broker.stats()
    broker.close()
    results.put(summary)
