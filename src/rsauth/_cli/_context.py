"""What every subcommand shares: its options, resolved the way ``connect()`` resolves them.

The command line gives ``--workgroup``, ``--database``, ``--method``,
``--duration``, ``--secret-id``, ``--role-arn``, ``--region`` and ``--profile``;
an option left out is ``None`` and rsauth's own resolution fills it from the
``RSAUTH_*`` environment, then the defaults. Nothing here re-implements that:
:func:`rsauth._config.resolve` checks the options once up front (so a bad
value is a usage error, exit code 2, before any AWS call), and the same
arguments then go to the Broker.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from rsauth._aws import map_aws_error
from rsauth._config import Options, resolve, resolve_region
from rsauth._driver import trusted_ca_file
from rsauth._errors import ConfigurationError, RsauthError, in_cli
from rsauth._sessions import SessionKey, Sessions

if TYPE_CHECKING:
    import boto3

__all__ = ["COMMON_OPTIONS", "CommandError", "Context", "UsageError", "ca_file"]

# The options every subcommand takes, as (rsauth keyword, help).
COMMON_OPTIONS: tuple[tuple[str, str], ...] = (
    ("workgroup", "workgroup name (default: $RSAUTH_WORKGROUP)"),
    ("custom_domain", "the workgroup's custom domain name (default: $RSAUTH_CUSTOM_DOMAIN)"),
    ("database", "database (default: $RSAUTH_DATABASE, the secret's dbname, else dev)"),
    ("method", "how to log in: auto, iam, secret or superuser, which connects once per login "
     "to check it (default: $RSAUTH_METHOD, auto)"),
    ("duration", "lifetime of an iam login in seconds, 900-3600 (default: $RSAUTH_DURATION, 900)"),
    ("secret_id", "Secrets Manager secret holding the login (default: $RSAUTH_SECRET_ID)"),
    ("role_arn", "IAM role to assume for the login (default: $RSAUTH_ROLE_ARN)"),
    ("region", "AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's)"),
    ("profile", "AWS profile (default: $AWS_PROFILE, the default profile)"),
    ("resume_timeout", "seconds a connect waits for a sleeping workgroup to resume "
     "(default: $RSAUTH_RESUME_TIMEOUT, 120)"),
)

class UsageError(Exception):
    """The command line or the RSAUTH_* environment is malformed: exit code 2."""


class CommandError(Exception):
    """A subcommand failed for a reason that is not an rsauth error: exit code 1."""


def cli_wording(error: str | BaseException) -> str:
    """An error's message in the command's words: rsauth's keywords (``role_arn=``) as the
    command's flags (``--role-arn``), advice only Python callers can follow left out."""
    if isinstance(error, RsauthError):
        return error.in_cli(_flags())
    return in_cli(str(error), _flags())


@functools.cache
def _flags() -> frozenset[str]:
    """Every option of the ``rsauth`` command and its subcommands."""
    from rsauth._cli import build_parser  # the parser module imports this one

    parser, parsers = build_parser()
    return frozenset(
        option
        for each in (parser, *parsers.values())
        # argparse keeps its options in _actions; it has no public accessor.
        for action in each._actions
        for option in action.option_strings
    )


def ca_file(environ: Mapping[str, str] | None = None) -> str:
    """The CA file libpq clients should verify the endpoint with (``trusted_ca_file``)."""
    return trusted_ca_file(environ)


@dataclass
class Context:
    """One invocation's options: the raw arguments, resolved once and checked."""

    arguments: dict[str, Any]
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def __post_init__(self) -> None:
        try:
            self.options: Options = resolve(self.arguments, self.environ)
        except ConfigurationError as exc:
            raise UsageError(cli_wording(exc)) from exc

    # -- AWS, for whoami and doctor (the Broker keeps its own) ----------------------------

    @cached_property
    def sessions(self) -> Sessions:
        return Sessions(None)

    @property
    def profile(self) -> str | None:
        return self.options.profile

    def base_session(self) -> boto3.Session:
        return self.sessions.profile_session(self.profile)

    def region(self) -> str:
        session = self.base_session()
        return resolve_region(self.options.region, None, self.environ, session.region_name)

    def session_key(self) -> SessionKey:
        return SessionKey(self.profile, self.region(), self.options.role_arn, self.options.db_roles)

    def caller_identity(self) -> dict[str, str]:
        """STS GetCallerIdentity as the identity that logs in (the role, with --role-arn)."""
        key = self.session_key()
        who = f"role {key.role_arn}" if key.role_arn else "your AWS credentials"
        try:
            response = self.sessions.sts(key).get_caller_identity()
        except (ClientError, BotoCoreError) as exc:
            raise map_aws_error(
                exc,
                doing="sts:GetCallerIdentity",
                subject=who,
                region=key.region,
                identity=lambda: f"the caller ({who})",
            ) from exc
        return {"Arn": response["Arn"], "Account": response["Account"]}

    def close(self) -> None:
        if "sessions" in self.__dict__:
            self.sessions.close()
