"""What COPY and UNLOAD may reach in the sandbox: namespace roles, IAM trust, keys and S3.

The wire front's COPY/UNLOAD code (``_copy.py``) knows nothing of the control
plane or moto; the sandbox process hands it a :class:`SandboxCopyAccess`,
which answers from the plane's namespaces, moto's IAM and STS backends, and
moto's S3 over the sandbox's own endpoint (path-style, marked internal so it
is neither counted nor faulted). Every method blocks; the front calls them
from threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from rsauth.sandbox._copy import NamespaceRoles, S3Error
from rsauth.sandbox._moto import INTERNAL_AGENT, INTERNAL_KEY_ID, INTERNAL_SECRET, MotoBridge
from rsauth.sandbox._sysviews import LoadErrorRow

if TYPE_CHECKING:
    from rsauth.sandbox._access import Gate
    from rsauth.sandbox._plane import ControlPlane


class SandboxCopyAccess:
    """The :class:`rsauth.sandbox._copy.CopyBackend` of a running sandbox."""

    def __init__(
        self,
        plane: ControlPlane,
        moto: MotoBridge,
        gate: Gate | None = None,
        sql: Callable[[str, str], None] | None = None,
    ) -> None:
        self.plane = plane
        self.moto = moto
        # The endpoint's IAM evaluation: gate.is_allowed(role, "s3:GetObject", arn), role_trusts.
        self.gate = gate
        # Runs a statement as the PostgreSQL superuser in a database: (statement, database).
        self._sql = sql
        # Guards the lazily created S3 client, shared by the front's threads.
        self._lock = threading.Lock()
        self._s3: Any = None

    # -- roles ----------------------------------------------------------------------------

    def namespace_roles(self, database: str) -> NamespaceRoles:
        """The namespace whose database the session is in (the first created, if several)."""
        with self.plane._lock:
            namespaces = sorted(self.plane.namespaces.values(), key=lambda n: n.created)
            chosen = next((n for n in namespaces if n.db_name == database), None)
            if chosen is None and namespaces:
                chosen = namespaces[0]
            if chosen is None:
                return NamespaceRoles("", None, ())
            return NamespaceRoles(chosen.name, chosen.default_iam_role_arn, tuple(chosen.iam_roles))

    def role_trusts(self, role_arn: str, principal: str) -> bool:
        """Whether the role's trust policy lets ``principal`` (an ARN or a service) assume it,
        decided by the endpoint's own IAM evaluation (:meth:`Gate.role_trusts`)."""
        if self.gate is None:
            raise RuntimeError("COPY and UNLOAD need the endpoint's IAM evaluation (gate=)")
        return self.gate.role_trusts(role_arn, principal)

    def record_load_error(self, database: str, row: LoadErrorRow) -> None:
        if self._sql is not None:
            self._sql(row.insert(), database)

    def check_access_key(self, access_key_id: str, secret: str, token: str | None) -> str | None:
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        account = self.moto.account_id
        sts = sts_backends[account]["aws"]
        assumed = sts.get_assumed_role_from_access_key(access_key_id)
        if assumed is not None:
            if secret != assumed.secret_access_key:
                return "SignatureDoesNotMatch"
            if token != assumed.session_token:
                return "InvalidToken"
            return None
        iam = iam_backends[account]["aws"]
        user = iam.get_user_from_access_key_id(access_key_id)
        if user is None:
            return "InvalidAccessKeyId"
        for key in iam.list_access_keys(user.name):
            if key.access_key_id == access_key_id:
                if key.status != "Active":
                    return "InvalidAccessKeyId"
                return None if key.secret_access_key == secret else "SignatureDoesNotMatch"
        return "InvalidAccessKeyId"

    # -- S3 -------------------------------------------------------------------------------

    def _client(self) -> Any:
        with self._lock:
            if self._s3 is None:
                self._s3 = boto3.session.Session(
                    aws_access_key_id=INTERNAL_KEY_ID,
                    aws_secret_access_key=INTERNAL_SECRET,
                    region_name=self.moto.region,
                ).client(
                    "s3",
                    endpoint_url=self.moto.endpoint_url,
                    config=Config(
                        user_agent_extra=INTERNAL_AGENT,
                        retries={"max_attempts": 1},
                        s3={"addressing_style": "path"},
                    ),
                )
            return self._s3

    def list_objects(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        with _s3_errors():
            pages = self._client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def get_object(self, bucket: str, key: str) -> bytes:
        with _s3_errors():
            body: bytes = self._client().get_object(Bucket=bucket, Key=key)["Body"].read()
            return body

    def put_object(self, bucket: str, key: str, body: bytes) -> None:
        with _s3_errors():
            self._client().put_object(Bucket=bucket, Key=key, Body=body)

    def delete_objects(self, bucket: str, keys: list[str]) -> None:
        with _s3_errors():
            for start in range(0, len(keys), 1000):
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                self._client().delete_objects(Bucket=bucket, Delete={"Objects": batch})


@contextlib.contextmanager
def _s3_errors() -> Iterator[None]:
    """Map botocore's errors to :class:`S3Error` (code, message, HTTP status)."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "") or _S3_MESSAGES.get(code, code))
        raise S3Error(code, message, int(status)) from exc
    except BotoCoreError as exc:
        raise S3Error("ServiceUnavailable", f"S3 could not be reached: {exc}", 503) from exc


_S3_MESSAGES = {
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchBucket": "The specified bucket does not exist",
    "404": "Not Found",
}
