"""How long to wait before the next attempt of a refused login or a failed connect.

Exponential backoff with jitter: 0.2 s doubled per attempt, at most 2 s, plus up
to 0.2 s at random, so callers that failed together do not retry together. A
loop of a few lines in each caller, not a retry library: tenacity imports
asyncio, which a first connect does not otherwise need.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff"]

BASE_SECONDS = 0.2
MAX_SECONDS = 2.0
JITTER_SECONDS = 0.2


def backoff(attempt: int, *, uniform: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
    exponential: float = BASE_SECONDS * 2.0 ** (attempt - 1)
    return min(exponential, MAX_SECONDS) + JITTER_SECONDS * uniform()
