"""The ``rsauth`` command run as a child process, with the sandbox's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping

import pytest

from rsauth.sandbox import Sandbox

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def cli(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Runs ``python -m rsauth ARGS`` with the sandbox applied and RSAUTH_WORKGROUP set.

    ``extra_env`` adds variables, ``drop`` removes some, ``stdin`` is the input.
    """
    monkeypatch.setenv("RSAUTH_WORKGROUP", sandbox.workgroup)
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8")

    def run(
        *args: str,
        extra_env: Mapping[str, str] | None = None,
        drop: Iterable[str] = (),
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.update(extra_env or {})
        for name in drop:
            env.pop(name, None)
        return subprocess.run(
            [sys.executable, "-m", "rsauth", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run
