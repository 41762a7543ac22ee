"""The README's promises that the code can check without a sandbox."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rsauth._policies import Target, assume_role_policy, login_policy, trust_policy
from rsauth.sandbox._server import _AWS_SERVICES

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_sandbox_env_list_names_every_endpoint_variable() -> None:
    start = README.index("`sb.env` holds")
    paragraph = README[start : README.index("\n\n", start)]
    named = set(re.findall(r"`(?:AWS_ENDPOINT_URL)?(_[A-Z0-9_]+)`", paragraph))
    assert named >= {f"_{service}" for service in _AWS_SERVICES}


# The README's IAM policies, each rendered from rsauth._policies: the same source the
# tests in tests/integration/test_minimal_policies.py log in under.
EXAMPLE = Target(region="eu-west-1", account="123456789012")
EXAMPLE_KEY = "arn:aws:kms:eu-west-1:123456789012:key/<key-id>"
README_POLICIES = {
    "iam": login_policy("iam", EXAMPLE),
    "iam-custom-domain": login_policy("iam", EXAMPLE, custom_domain=True),
    "assume-role": assume_role_policy(
        "arn:aws:iam::123456789012:role/RedshiftAdmin", db_roles=True
    ),
    "trust": trust_policy("arn:aws:iam::123456789012:root", db_roles=True),
    "secret": login_policy("secret", EXAMPLE),
    "secret-id": login_policy(
        "secret",
        EXAMPLE,
        secret_arn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:analytics/etl-*",
        kms_key_arn=EXAMPLE_KEY,
    ),
    "etl": login_policy("iam", EXAMPLE, etl=True),
    "fleet-kms": login_policy("iam", EXAMPLE, fleet_kms_key_arn=EXAMPLE_KEY),
}
_POLICY_BLOCK = re.compile(r"<!-- policy: ([a-z-]+) -->\n```json\n(.*?)\n```", re.S)


def test_the_readme_policies_are_the_generated_ones() -> None:
    found = dict(_POLICY_BLOCK.findall(README))
    assert set(found) == set(README_POLICIES), "every generated policy is in the README, once"
    for name, block in found.items():
        expected = json.dumps(README_POLICIES[name], indent=2)
        assert block == expected, f"README policy {name!r} differs; it should read:\n{expected}"
