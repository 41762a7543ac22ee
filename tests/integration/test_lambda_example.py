"""examples/lambda_handler.py, invoked as Lambda invokes it: twice in one environment."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from rsauth.sandbox import Sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lambda_handler.py"


def load_example() -> ModuleType:
    """The example as Lambda loads it: its top level run once, in this process."""
    spec = importlib.util.spec_from_file_location("lambda_handler", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 20_000


def test_a_warm_invocation_makes_no_aws_call(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSAUTH_WORKGROUP", sandbox.workgroup)
    example = load_example()
    first = example.handler({}, Context())
    assert first == {"user": "IAM:sandbox-admin", "database": "dev"}
    assert sandbox.calls() == {
        "redshift-serverless.GetCredentials": 1,
        "redshift-serverless.GetWorkgroup": 1,
    }
    sandbox.reset_calls()
    assert example.handler({}, Context()) == first
    assert sandbox.calls() == {}
