"""Reliability scenarios: small in ``make test``, large in ``make soak`` (``--soak``).

Each scenario records its figures; they are printed at the end of the run and
written to ``bench/results/reliability.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"
_FIGURES: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Scale:
    """How hard each scenario pushes."""

    soak: bool
    threads: int
    connects_per_thread: int
    seconds: float

    def describe(self) -> str:
        return f"{self.threads} threads x {self.connects_per_thread} connects"


@pytest.fixture(autouse=True)
def _lighter_driver_logs_at_soak_scale(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """At soak scale, the driver's per-message DEBUG lines (tens of millions) stay out of
    the capture; rsauth's and botocore's DEBUG lines are still scanned for secrets."""
    if request.config.getoption("--soak"):
        caplog.set_level(logging.INFO, logger="redshift_connector")


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    if request.config.getoption("--soak"):
        return Scale(soak=True, threads=32, connects_per_thread=300, seconds=60.0)
    return Scale(soak=False, threads=8, connects_per_thread=25, seconds=8.0)


class Figures:
    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.values: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    recorded = Figures(request.node.name)
    start = time.monotonic()
    yield recorded
    recorded["wall_seconds"] = round(time.monotonic() - start, 2)
    _FIGURES.append({"scenario": recorded.scenario, **recorded.values})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for entry in _FIGURES:
        values = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "scenario")
        terminalreporter.write_line(f"{entry['scenario']}: {values}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(_FIGURES, indent=2) + "\n")
