"""IAM policy documents and how AWS evaluates them, as far as the sandbox models it.

Pure logic, no moto: parse a policy document once (cached by its text) and
answer whether a set of identity-based policies allows ``action`` on
``resource``, and whether a role's trust policy lets a principal assume it.

Evaluation follows "Policy evaluation logic"
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit ``Deny`` wins, then any ``Allow``, else the implicit deny. Actions
match case-insensitively, resources case-sensitively, both with ``*`` (any run
of characters) and ``?`` (one character)
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html,
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html).

``Condition`` blocks are not evaluated. So that the sandbox never refuses what
AWS would allow because of something it does not model, a conditional
``Allow`` counts as granted and a conditional ``Deny`` is skipped.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class Decision(enum.Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit deny"
    IMPLICIT_DENY = "implicit deny"


def _pattern(text: str, *, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in text
    )
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


@dataclass(frozen=True)
class _Matcher:
    """A compiled ``Action``/``NotAction`` (or resource) element."""

    patterns: tuple[re.Pattern[str], ...]
    negated: bool
    present: bool

    @classmethod
    def of(cls, statement: dict[str, Any], name: str, *, ignore_case: bool) -> _Matcher:
        if name in statement:
            values, negated = statement[name], False
        elif f"Not{name}" in statement:
            values, negated = statement[f"Not{name}"], True
        else:
            return cls((), False, False)
        patterns = tuple(_pattern(v, ignore_case=ignore_case) for v in _strings(values))
        return cls(patterns, negated, True)

    def matches(self, value: str) -> bool:
        if not self.present:
            return False
        hit = any(pattern.match(value) for pattern in self.patterns)
        return hit != self.negated


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: _Matcher
    resources: _Matcher
    principal: Any
    conditional: bool

    def applies(self, action: str, resource: str | None) -> bool:
        if not self.actions.matches(action):
            return False
        # Trust policies name no resource: the role they are attached to is it.
        return resource is None or self.resources.matches(resource)


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    def decide(self, action: str, resource: str | None) -> Decision:
        decision = Decision.IMPLICIT_DENY
        for statement in self.statements:
            if not statement.applies(action, resource):
                continue
            if statement.effect == "Deny" and not statement.conditional:
                return Decision.EXPLICIT_DENY
            if statement.effect == "Allow":
                decision = Decision.ALLOW
        return decision


@functools.lru_cache(maxsize=4096)
def parse(document: str) -> Policy:
    """The policy in ``document`` (JSON, possibly percent-encoded as IAM returns it).

    A document that is not a policy parses as one with no statements: it allows nothing.
    """
    text = document.strip()
    if text.startswith("%"):
        text = urllib.parse.unquote(text)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        try:
            raw = json.loads(urllib.parse.unquote(text))
        except json.JSONDecodeError:
            return Policy(())
    if not isinstance(raw, dict):
        return Policy(())
    items = raw.get("Statement", [])
    if isinstance(items, dict):
        items = [items]
    statements = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("Effect") not in ("Allow", "Deny"):
            continue
        statements.append(
            Statement(
                effect=item["Effect"],
                actions=_Matcher.of(item, "Action", ignore_case=True),
                resources=_Matcher.of(item, "Resource", ignore_case=False),
                principal=item.get("Principal"),
                conditional=bool(item.get("Condition")),
            )
        )
    return Policy(tuple(statements))


def decide(documents: Iterable[str], action: str, resource: str) -> Decision:
    """The decision of identity-based policies: any explicit deny, else any allow."""
    decision = Decision.IMPLICIT_DENY
    for document in documents:
        verdict = parse(document).decide(action, resource)
        if verdict is Decision.EXPLICIT_DENY:
            return verdict
        if verdict is Decision.ALLOW:
            decision = verdict
    return decision


def account_of(arn: str) -> str:
    parts = arn.split(":", 5)
    return parts[4] if len(parts) > 4 else ""


def _role_of_session(arn: str) -> str | None:
    """``arn:aws:iam::A:role/R`` for the session ``arn:aws:sts::A:assumed-role/R/S``."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{parts[5].split('/')[1]}"
    return None


class Match(enum.Enum):
    """How a trust policy names a principal: by its own ARN, or through its account."""

    NONE = 0
    ACCOUNT = 1
    EXACT = 2


def principal_match(principal: Any, caller: str) -> Match:
    """Whether a ``Principal`` element names ``caller``.

    ``caller`` is an IAM ARN (user, role, assumed-role session) or a service
    principal such as ``redshift.amazonaws.com``. A role's ARN names its
    sessions; ``"*"``, the account id and ``arn:aws:iam::ACCOUNT:root`` name
    every principal of the account
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_principal.html).
    """
    if principal == "*":
        return Match.ACCOUNT
    if not isinstance(principal, dict):
        return Match.NONE
    if not caller.startswith("arn:"):
        return Match.EXACT if caller in _strings(principal.get("Service")) else Match.NONE
    account = account_of(caller)
    named = _strings(principal.get("AWS"))
    exact = {caller}
    role = _role_of_session(caller)
    if role is not None:
        exact.add(role)
    if any(name in exact for name in named):
        return Match.EXACT
    if any(name in ("*", account, f"arn:aws:iam::{account}:root") for name in named):
        return Match.ACCOUNT
    return Match.NONE


def trust(document: str, caller: str, action: str) -> tuple[Decision, Match]:
    """What a role's trust policy says of ``caller`` performing ``action`` (sts:AssumeRole...).

    Returns the decision and, when allowed, how the allowing statement named
    the caller: by exact ARN (enough on its own within one account) or through
    its account (the caller's identity policies must allow too).
    """
    decision, how = Decision.IMPLICIT_DENY, Match.NONE
    for statement in parse(document).statements:
        if not statement.applies(action, None):
            continue
        named = principal_match(statement.principal, caller)
        if named is Match.NONE:
            continue
        if statement.effect == "Deny" and not statement.conditional:
            return Decision.EXPLICIT_DENY, named
        if statement.effect == "Allow":
            decision, how = Decision.ALLOW, max(how, named, key=lambda m: m.value)
    return decision, how
