"""Waiting on a sleeping workgroup: its idle state, and a poll for a state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rsauth.sandbox import Sandbox

LONG = 600.0  # a resume no test waits out: each ends it by re-timing it


def wait_for(check: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    """Poll for a state; the deadline only guards against a hang."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def idle(sb: Sandbox) -> dict[str, Any]:
    state: dict[str, Any] = sb.front_stats()["idle"]
    return state
