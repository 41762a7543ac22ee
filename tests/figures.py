"""Figures that scenario tests record, printed at the end of the run and saved as JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"


class Figures:
    """One scenario's figures: ``figures["connects"] = 9600``."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.values: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value


class FigureBook:
    """The figures of a group of scenarios: a fixture records, a summary hook reports."""

    def __init__(self, title: str, filename: str) -> None:
        self.title = title
        self.path = RESULTS_DIR / filename
        self.entries: list[dict[str, Any]] = []

    def record(self, request: pytest.FixtureRequest) -> Iterator[Figures]:
        recorded = Figures(request.node.name)
        start = time.monotonic()
        yield recorded
        recorded["wall_seconds"] = round(time.monotonic() - start, 2)
        self.entries.append({"scenario": recorded.scenario, **recorded.values})

    def report(self, terminalreporter: Any) -> None:
        if not self.entries:
            return
        terminalreporter.section(self.title)
        for entry in self.entries:
            values = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "scenario")
            terminalreporter.write_line(f"{entry['scenario']}: {values}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.entries, indent=2) + "\n")
