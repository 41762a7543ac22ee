"""Reliability scenarios: small in ``make test``, large in ``make soak`` (``--soak``).

Each scenario records its figures; they are printed at the end of the run and
written to ``bench/results/reliability.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from tests.figures import FigureBook


@dataclass(frozen=True)
class Scale:
    """How hard each scenario pushes."""

    soak: bool
    threads: int
    connects_per_thread: int

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
        return Scale(soak=True, threads=32, connects_per_thread=300)
    return Scale(soak=False, threads=8, connects_per_thread=25)


BOOK = FigureBook("reliability figures", "reliability.json")
figures = pytest.fixture(name="figures")(BOOK.record)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    BOOK.report(terminalreporter)
