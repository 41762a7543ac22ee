"""The README's promises that the code can check without a sandbox."""

from __future__ import annotations

import re
from pathlib import Path

from rsauth.sandbox._server import _AWS_SERVICES

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_sandbox_env_list_names_every_endpoint_variable() -> None:
    start = README.index("`sb.env` holds")
    paragraph = README[start : README.index("\n\n", start)]
    named = set(re.findall(r"`(?:AWS_ENDPOINT_URL)?(_[A-Z0-9_]+)`", paragraph))
    assert named >= {f"_{service}" for service in _AWS_SERVICES}
