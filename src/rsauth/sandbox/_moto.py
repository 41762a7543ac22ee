"""Everything the sandbox asks of moto, in one place.

moto runs inside the sandbox process as a WSGI application. Identities are
read from its STS and IAM backends (moto already maps an assumed role's keys
and an IAM user's keys to the right ARN); writes go through moto's own API
with boto3, signed with the sandbox's internal key so they are neither
counted, faulted nor policy-checked. The internal key's secret is drawn at
random when this module loads: only code in the sandbox process can sign
with it, so an outside client cannot pass for internal.
"""

from __future__ import annotations

import calendar
import json
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from rsauth.sandbox._sigv4 import SigningKey

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sts import STSClient

INTERNAL_AGENT = "rsauth-sandbox-internal"
INTERNAL_KEY_ID = "AKIASANDBOXINTERNAL0"
INTERNAL_SECRET = secrets.token_urlsafe(30)


def moto_wsgi_app() -> Any:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    _aws_user_ids()
    return DomainDispatcherApplication(create_backend_app)


def _aws_user_ids() -> None:
    """Give IAM users ids in AWS's form, ``AIDA`` and 17 more characters.

    IAM's unique ids start with a prefix naming the kind (``AIDA`` user, ``AROA`` role),
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids;
    moto gives roles ``AROA...`` ids already but users 20 random lower-case characters.
    """
    from moto.iam import models
    from moto.iam.utils import generate_access_key_id_from_account_id

    original = models.User.__init__
    if getattr(original, "_rsauth_aws_ids", False):
        return

    def init(self: Any, account_id: str, *args: Any, **kwargs: Any) -> None:
        original(self, account_id, *args, **kwargs)
        self.id = generate_access_key_id_from_account_id(account_id, "AIDA", total_length=21)

    init._rsauth_aws_ids = True  # type: ignore[attr-defined]  # marks the patch as applied
    models.User.__init__ = init  # type: ignore[method-assign]  # moto offers no hook for ids


class MotoBridge:
    def __init__(self, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region
        self.endpoint_url = ""
        # Guards lazy client creation: request threads share these clients.
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        # Temporary keys never change once issued: remembered after the first search.
        self._session_keys: dict[str, SigningKey] = {}
        self._iam_sts: tuple[Any, Any] | None = None

    def _client(self, service: str, region: str | None = None) -> Any:
        region = region or self.region
        with self._lock:
            client = self._clients.get(f"{service}@{region}")
            if client is None:
                client = boto3.session.Session(
                    aws_access_key_id=INTERNAL_KEY_ID,
                    aws_secret_access_key=INTERNAL_SECRET,
                    region_name=region,
                ).client(
                    service,  # type: ignore[call-overload]
                    endpoint_url=self.endpoint_url,
                    config=Config(user_agent_extra=INTERNAL_AGENT, retries={"max_attempts": 1}),
                )
                self._clients[f"{service}@{region}"] = client
            return client

    @property
    def iam(self) -> IAMClient:
        client: IAMClient = self._client("iam")
        return client

    @property
    def secrets(self) -> SecretsManagerClient:
        client: SecretsManagerClient = self._client("secretsmanager")
        return client

    @property
    def sts(self) -> STSClient:
        client: STSClient = self._client("sts")
        return client

    # -- identities -------------------------------------------------------------------

    def _backends(self) -> tuple[Any, Any]:
        if self._iam_sts is None:
            from moto.iam.models import iam_backends
            from moto.sts.models import sts_backends

            self._iam_sts = (
                iam_backends[self.account_id]["aws"], sts_backends[self.account_id]["aws"]
            )
        return self._iam_sts

    def principal_arn(self, access_key_id: str) -> str | None:
        """The ARN moto knows this access key as, or None for an unknown key."""
        if not access_key_id:
            return None
        iam, sts = self._backends()
        assumed = sts.get_assumed_role_from_access_key(access_key_id)
        if assumed is not None:
            return str(assumed.arn)
        user = iam.get_user_from_access_key_id(access_key_id)
        if user is not None:
            return str(user.arn)
        return None

    def signing_key(self, access_key_id: str) -> SigningKey | None:
        """The secret material of an access key, or None when no identity holds it.

        IAM users' keys (inactive ones refused) from moto's IAM backend, STS
        sessions' keys, tokens and expiry from its STS backend.
        """
        if access_key_id == INTERNAL_KEY_ID:
            return SigningKey(f"arn:aws:iam::{self.account_id}:root", INTERNAL_SECRET,
                              internal=True)
        known = self._session_keys.get(access_key_id)
        if known is not None:
            return known
        iam, sts = self._backends()
        for user in list(iam.users.values()):
            for key in list(user.access_keys):
                if key.access_key_id == access_key_id:
                    if key.status != "Active":
                        return None
                    return SigningKey(str(user.arn), str(key.secret_access_key))
        assumed = sts.get_assumed_role_from_access_key(access_key_id)
        if assumed is None:
            return None
        found = SigningKey(
            str(assumed.arn),
            str(assumed.secret_access_key),
            str(assumed.session_token),
            _epoch(assumed.expiration),
        )
        self._session_keys[access_key_id] = found
        return found

    def session_policy(self, access_key_id: str) -> str | None:
        """The inline session policy an STS session was issued with, if any."""
        _, sts = self._backends()
        assumed = sts.get_assumed_role_from_access_key(access_key_id)
        policy = getattr(assumed, "policy", None)
        return str(policy) if policy else None

    def identity_policies(self, arn: str) -> list[str] | None:
        """Every identity-based policy document of a user, role or role session.

        Inline and attached managed policies (default version), and for a user
        those of its groups. None when the identity does not exist (any more).
        """
        iam, _ = self._backends()
        resource = arn.split(":", 5)[-1]
        kind, _, rest = resource.partition("/")
        if kind == "user":
            user = iam.users.get(rest.rsplit("/", 1)[-1])
            if user is None:
                return None
            holders: list[Any] = [user]
            holders += [g for g in list(iam.groups.values()) if user in list(g.users)]
        elif kind in ("role", "assumed-role"):
            name = rest.split("/", 1)[0] if kind == "assumed-role" else rest.rsplit("/", 1)[-1]
            role = self._role_named(name)
            if role is None:
                return None
            holders = [role]
        else:
            return None
        return list(_documents(holders))

    def _role_named(self, name: str) -> Any:
        iam, _ = self._backends()
        return next((r for r in list(iam.roles.values()) if r.name == name), None)

    def trust_policy(self, role_arn: str) -> str | None:
        """The trust policy of the role with exactly this ARN, or None when there is none."""
        iam, _ = self._backends()
        for role in list(iam.roles.values()):
            if role.arn == role_arn:
                return str(role.assume_role_policy_document or "")
        return None

    def principal_tags(self, arn: str) -> dict[str, str]:
        """Tags on the IAM user or role behind ``arn`` (principal tags)."""
        resource = arn.split(":", 5)[5]
        kind, _, rest = resource.partition("/")
        try:
            if kind == "user":
                tags = self.iam.list_user_tags(UserName=rest.rsplit("/", 1)[-1])["Tags"]
            elif kind in ("assumed-role", "role"):
                name = rest.split("/", 1)[0] if kind == "assumed-role" else rest.rsplit("/", 1)[-1]
                tags = self.iam.list_role_tags(RoleName=name)["Tags"]
            else:
                return {}
        except self.iam.exceptions.NoSuchEntityException:
            return {}
        return {tag["Key"]: tag["Value"] for tag in tags}

    def create_user_with_keys(self, name: str) -> tuple[str, str, str]:
        """An IAM user with one access key: (arn, access key id, secret access key)."""
        arn = self.iam.create_user(UserName=name)["User"]["Arn"]
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        return arn, key["AccessKeyId"], key["SecretAccessKey"]

    # -- secrets ----------------------------------------------------------------------

    def put_secret(self, name: str, document: str, *, region: str | None = None) -> str:
        """Create the secret in ``region`` (default: the sandbox's), or give it a new
        AWSCURRENT version; returns its ARN. moto keeps secrets per region, as AWS does."""
        secrets: SecretsManagerClient = self._client("secretsmanager", region)
        try:
            return secrets.create_secret(Name=name, SecretString=document)["ARN"]
        except secrets.exceptions.ResourceExistsException:
            return secrets.put_secret_value(SecretId=name, SecretString=document)["ARN"]

    def stages(self, secret_id: str) -> dict[str, list[str]]:
        versions = self.secrets.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
        return {version: list(stages) for version, stages in versions.items()}

    def current_document(self, secret_id: str) -> dict[str, Any]:
        value = self.secrets.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        document: dict[str, Any] = json.loads(value["SecretString"])
        return document

    def add_pending(self, secret_id: str, document: str) -> str:
        """A new version labelled AWSPENDING only; returns its version id."""
        return self.secrets.put_secret_value(
            SecretId=secret_id, SecretString=document, VersionStages=["AWSPENDING"]
        )["VersionId"]

    def make_current(self, secret_id: str, version_id: str) -> None:
        """Leave AWSCURRENT on ``version_id`` alone; the version that had it becomes
        AWSPREVIOUS (UpdateSecretVersionStage does that move)."""
        for version, stages in self.stages(secret_id).items():
            if version != version_id and "AWSCURRENT" in stages:
                self.secrets.update_secret_version_stage(
                    SecretId=secret_id,
                    VersionStage="AWSCURRENT",
                    MoveToVersionId=version_id,
                    RemoveFromVersionId=version,
                )

    def promote(self, secret_id: str, version_id: str) -> None:
        """Move AWSCURRENT to ``version_id`` (the old one becomes AWSPREVIOUS), drop AWSPENDING."""
        current = [v for v, stages in self.stages(secret_id).items() if "AWSCURRENT" in stages]
        self.secrets.update_secret_version_stage(
            SecretId=secret_id,
            VersionStage="AWSCURRENT",
            MoveToVersionId=version_id,
            **({"RemoveFromVersionId": current[0]} if current else {}),
        )
        self.secrets.update_secret_version_stage(
            SecretId=secret_id, VersionStage="AWSPENDING", RemoveFromVersionId=version_id
        )


def _documents(holders: list[Any]) -> Iterator[str]:
    for holder in holders:
        yield from (str(doc) for doc in dict(holder.policies).values())
        for managed in list(holder.managed_policies.values()):
            for version in list(managed.versions):
                if version.is_default:
                    yield str(version.document)


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is not None:
        return moment.timestamp()
    # moto keeps naive UTC datetimes.
    return calendar.timegm(moment.timetuple()) + moment.microsecond / 1e6
