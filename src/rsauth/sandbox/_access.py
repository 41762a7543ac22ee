"""Who may call what on the sandbox's AWS endpoint: authentication, then IAM policies.

:class:`Gate` sits in front of every service. It verifies the SigV4 signature
(:mod:`rsauth.sandbox._sigv4`) against the keys moto's IAM and STS hold, then,
unless evaluation is off, decides the calls listed below with the caller's
identity-based policies (:mod:`rsauth.sandbox._policy`):

- every ``redshift-serverless`` operation, on the workgroup or namespace ARN
  the Redshift Serverless service authorization reference gives it
  (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonredshiftserverless.html);
- ``secretsmanager:GetSecretValue`` and ``DescribeSecret`` on the secret's ARN;
- ``kms:GenerateDataKey`` and ``kms:Decrypt`` on the key's ARN;
- ``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject`` on the object and
  ``s3:ListBucket`` on the bucket (path-style requests);
- ``sts:AssumeRole`` (and ``sts:TagSession`` when tags are passed) on the
  role, together with the role's trust policy.

Other IAM, STS, Secrets Manager, KMS and S3 calls are allowed to any
authenticated caller.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from rsauth.sandbox._errors import access_denied, auth_error, protocol_of
from rsauth.sandbox._policy import Decision, Match, decide, parse, trust
from rsauth.sandbox._sigv4 import AuthFailure, scope_of, verify

if TYPE_CHECKING:
    from rsauth.sandbox._moto import MotoBridge
    from rsauth.sandbox._plane import ControlPlane


@dataclass(frozen=True)
class Authenticated:
    """A request whose signature checked out: its scope and the key that signed it."""

    access_key_id: str
    arn: str
    region: str
    service: str
    internal: bool
    protocol: str


# redshift-serverless operations and the resource type each is authorized on.
_WORKGROUP_OPERATIONS = frozenset(
    {
        "GetCredentials", "GetWorkgroup", "CreateWorkgroup", "UpdateWorkgroup", "DeleteWorkgroup",
        "CreateCustomDomainAssociation", "GetCustomDomainAssociation",
        "UpdateCustomDomainAssociation", "DeleteCustomDomainAssociation",
    }
)
_NAMESPACE_OPERATIONS = frozenset(
    {"GetNamespace", "CreateNamespace", "UpdateNamespace", "DeleteNamespace"}
)
_S3_OBJECT_READ = frozenset({"versionId", "partNumber"})
_S3_LIST = frozenset(
    {
        "list-type", "prefix", "delimiter", "marker", "max-keys", "continuation-token",
        "start-after", "encoding-type", "fetch-owner",
    }
)


class Gate:
    """Authentication and authorization for the sandbox's AWS endpoint."""

    def __init__(
        self,
        moto: MotoBridge,
        plane: ControlPlane,
        *,
        enforce_iam: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.moto = moto
        self.plane = plane
        self.enforce_iam = enforce_iam
        self._clock = clock
        # Guards the clock offset, read by every request thread.
        self._lock = threading.Lock()
        self._offset = 0.0

    # -- the clock ------------------------------------------------------------------------

    def now(self) -> float:
        with self._lock:
            return self._clock() + self._offset

    def set_clock_offset(self, seconds: float) -> None:
        """Run the endpoint's clock ``seconds`` ahead of the machine's (negative: behind)."""
        with self._lock:
            self._offset = float(seconds)

    # -- authentication -------------------------------------------------------------------

    def authenticate(self, environ: dict[str, Any], body: bytes) -> Authenticated:
        """Who signed the request, or the refusal its service would answer."""
        try:
            signed, key = verify(environ, body, self.moto.signing_key, self.now())
        except AuthFailure as failure:
            raise auth_error(request_protocol(environ), failure.kind, failure.detail) from None
        return Authenticated(
            signed.access_key_id,
            key.arn,
            signed.region,
            signed.service,
            key.internal,
            protocol_of(signed.service, environ),
        )

    # -- authorization --------------------------------------------------------------------

    def is_allowed(self, principal_arn: str, action: str, resource: str) -> bool:
        """Whether the identity-based policies of a user, role or role session allow it.

        Always True with evaluation off.
        """
        if not self.enforce_iam:
            return True
        return self._decide(principal_arn, None, action, resource) is Decision.ALLOW

    def role_trusts(self, role_arn: str, principal: str, action: str = "sts:AssumeRole") -> bool:
        """Whether the role's trust policy lets ``principal`` (ARN or service) do ``action``.

        With evaluation off, whether the role exists.
        """
        document = self.moto.trust_policy(role_arn)
        if not self.enforce_iam:
            return document is not None
        if document is None:
            return False
        return trust(document, principal, action)[0] is Decision.ALLOW

    def _decide(
        self, principal_arn: str, access_key_id: str | None, action: str, resource: str
    ) -> Decision:
        documents = self.moto.identity_policies(principal_arn)
        if documents is None:
            return Decision.IMPLICIT_DENY
        decision = decide(documents, action, resource)
        if decision is Decision.ALLOW and access_key_id and ":assumed-role/" in principal_arn:
            # A session policy can only narrow what the role allows
            # (https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies.html#policies_session).
            session = self.moto.session_policy(access_key_id)
            if session is not None:
                decision = parse(session).decide(action, resource)
        return decision

    def authorize(
        self, caller: Authenticated, operation: str, environ: dict[str, Any], body: bytes
    ) -> None:
        """Raise the service's AccessDenied when the caller's policies refuse this call."""
        if caller.internal or not self.enforce_iam:
            return
        protocol = caller.protocol
        if caller.service == "sts" and operation == "AssumeRole":
            self._authorize_assume_role(caller, protocol, body)
            return
        for action, resource in self._requirements(caller, operation, environ, body):
            decision = self._decide(caller.arn, caller.access_key_id, action, resource)
            if decision is not Decision.ALLOW:
                raise access_denied(
                    protocol,
                    caller.arn,
                    action,
                    resource,
                    explicit=decision is Decision.EXPLICIT_DENY,
                )

    def _authorize_assume_role(self, caller: Authenticated, protocol: str, body: bytes) -> None:
        form = parse_qs(body.decode(errors="replace"))
        role_arn = form.get("RoleArn", [""])[0]
        actions = ["sts:AssumeRole"]
        if any(k.startswith(("Tags.member.", "TransitiveTagKeys.member.")) for k in form):
            actions.append("sts:TagSession")
        document = self.moto.trust_policy(role_arn)
        for action in actions:
            if document is None:
                # A role that does not exist answers as one that does not trust the caller.
                raise access_denied(protocol, caller.arn, action, role_arn, explicit=False,
                                    reason=False)
            trusted, named = trust(document, caller.arn, action)
            identity = self._decide(caller.arn, caller.access_key_id, action, role_arn)
            if identity is Decision.EXPLICIT_DENY:
                raise access_denied(protocol, caller.arn, action, role_arn, explicit=True)
            if trusted is not Decision.ALLOW:
                raise access_denied(protocol, caller.arn, action, role_arn, explicit=False,
                                    reason=False)
            # Within one account a trust policy naming the caller's own ARN is enough;
            # one naming the account defers to the caller's identity policies
            # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_policy-eval-basics.html).
            if named is not Match.EXACT and identity is not Decision.ALLOW:
                raise access_denied(protocol, caller.arn, action, role_arn, explicit=False)

    def _requirements(
        self, caller: Authenticated, operation: str, environ: dict[str, Any], body: bytes
    ) -> list[tuple[str, str]]:
        if caller.service == "redshift-serverless":
            return [(f"redshift-serverless:{operation}", self._serverless_resource(
                caller.region, operation, _json(body)))]
        if caller.service == "secretsmanager" and operation in ("GetSecretValue",
                                                                  "DescribeSecret"):
            secret = str(_json(body).get("SecretId", ""))
            return [(f"secretsmanager:{operation}", self._secret_arn(caller.region, secret))]
        if caller.service == "kms" and operation in ("GenerateDataKey", "Decrypt"):
            return [(f"kms:{operation}", self._key_arn(caller.region, _json(body)))]
        if caller.service == "s3":
            needed = _s3_requirement(environ)
            return [needed] if needed is not None else []
        return []

    # -- resources ------------------------------------------------------------------------

    def _serverless_resource(self, region: str, operation: str, body: dict[str, Any]) -> str:
        account = self.plane.account_id
        if operation in _WORKGROUP_OPERATIONS:
            with self.plane._lock:
                workgroups = list(self.plane.workgroups.values())
            name, domain = body.get("workgroupName"), body.get("customDomainName")
            for workgroup in workgroups:
                if getattr(workgroup, "region", region) != region:
                    continue
                if (name is not None and workgroup.name == name) or (
                    name is None and domain is not None
                    and workgroup.custom_domain_name == domain
                ):
                    return str(workgroup.arn)
            # Not there (yet): the ARN carries an id only AWS knows, so any-workgroup
            # is the resource a policy can name for it (unverified).
            return f"arn:aws:redshift-serverless:{region}:{account}:workgroup/*"
        if operation in _NAMESPACE_OPERATIONS:
            with self.plane._lock:
                namespaces = list(self.plane.namespaces.values())
            name = body.get("namespaceName")
            for namespace in namespaces:
                if getattr(namespace, "region", region) == region and namespace.name == name:
                    return str(namespace.arn)
            return f"arn:aws:redshift-serverless:{region}:{account}:namespace/*"
        return "*"

    def _secret_arn(self, region: str, secret_id: str) -> str:
        """The full ARN of a secret named by name, ARN or partial ARN, if it exists."""
        from moto.secretsmanager.models import secretsmanager_backends

        with contextlib.suppress(Exception):  # an unknown region or secret: named as given
            found = secretsmanager_backends[self.plane.account_id][region].secrets.get(secret_id)
            if found is not None:
                return str(found.arn)
        if secret_id.startswith("arn:"):
            return secret_id
        return f"arn:aws:secretsmanager:{region}:{self.plane.account_id}:secret:{secret_id}"

    def _key_arn(self, region: str, body: dict[str, Any]) -> str:
        from moto.kms.models import kms_backends
        from moto.kms.utils import _deserialize_ciphertext_blob

        key_id = body.get("KeyId")
        if not key_id and body.get("CiphertextBlob"):
            try:
                blob = base64.b64decode(body["CiphertextBlob"])
                key_id = _deserialize_ciphertext_blob(blob).key_id
            except Exception:  # not moto's format: the key cannot be known
                key_id = None
        if key_id:
            with contextlib.suppress(Exception):  # unknown: moto answers NotFoundException
                backend = kms_backends[self.plane.account_id][region]
                return str(backend.describe_key(str(key_id)).arn)
        return f"arn:aws:kms:{region}:{self.plane.account_id}:key/*"


def request_protocol(environ: dict[str, Any]) -> str:
    """The protocol whose error shape answers this request, from its signature's scope."""
    try:
        signed = scope_of(environ)
    except AuthFailure:
        signed = None
    return protocol_of(signed.service if signed else "", environ)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _s3_requirement(environ: dict[str, Any]) -> tuple[str, str] | None:
    """The S3 action and resource of a path-style request, for the actions decided here
    (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
    path = unquote(str(raw).split("?", 1)[0])
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return None
    query = {
        name for name in parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        if not name.startswith(("X-Amz-", "x-id", "response-"))
    }
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    if key:
        resource = f"arn:aws:s3:::{bucket}/{key}"
        if method in ("GET", "HEAD") and query <= _S3_OBJECT_READ:
            return "s3:GetObject", resource
        if method == "PUT" and query <= {"uploadId", "partNumber"}:
            return "s3:PutObject", resource
        if method == "POST" and query and query <= {"uploads", "uploadId"}:
            return "s3:PutObject", resource
        if method == "DELETE" and query <= {"versionId"}:
            return "s3:DeleteObject", resource
        return None
    if method == "GET" and query <= _S3_LIST:
        return "s3:ListBucket", f"arn:aws:s3:::{bucket}"
    return None

