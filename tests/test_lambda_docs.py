"""docs/lambda.md's promises that the code can check without a sandbox."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rsauth._policies import Target, login_policy

LAMBDA_DOC = (Path(__file__).parent.parent / "docs" / "lambda.md").read_text(encoding="utf-8")
_POLICY_BLOCK = re.compile(r"<!-- policy: ([a-z-]+) -->\n```json\n(.*?)\n```", re.S)

# The execution role's policy, rendered from rsauth._policies: the same source the tests
# in tests/integration/test_minimal_policies.py log in under.
EXAMPLE = Target(region="eu-west-1", account="123456789012")
DOC_POLICIES = {"lambda-iam": login_policy("iam", EXAMPLE)}


def test_the_lambda_page_policy_is_the_generated_one() -> None:
    found = dict(_POLICY_BLOCK.findall(LAMBDA_DOC))
    assert set(found) == set(DOC_POLICIES)
    for name, block in found.items():
        expected = json.dumps(DOC_POLICIES[name], indent=2)
        assert block == expected, f"docs/lambda.md policy {name!r} should read:\n{expected}"


def test_the_lambda_page_names_the_example() -> None:
    assert "examples/lambda_handler.py" in LAMBDA_DOC
    assert (Path(__file__).parent.parent / "examples" / "lambda_handler.py").is_file()
