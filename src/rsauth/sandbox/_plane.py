"""The AWS side of the sandbox: ``redshift-serverless`` over AWS JSON 1.1, the rest moto.

One WSGI application answers every AWS endpoint. It authenticates each
request and decides it by IAM policy (:mod:`rsauth.sandbox._access`), learns
the service from the signature's scope, answers ``redshift-serverless``
itself, records the session tags of STS ``AssumeRole`` (moto drops them), and
hands everything else to moto's own server application. It counts calls per
``service.Operation`` and applies the control-plane faults.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from io import BytesIO
from typing import Any, Protocol
from urllib.parse import parse_qs
from xml.etree import ElementTree

from rsauth.sandbox._access import Authenticated, Gate, request_protocol
from rsauth.sandbox._errors import ApiError, error_response, json_response, protocol_of
from rsauth.sandbox._faults import PlaneFaults
from rsauth.sandbox._identity import database_user
from rsauth.sandbox._moto import MotoBridge
from rsauth.sandbox._passwords import IssuedPassword, PasswordStore

log = logging.getLogger("rsauth.sandbox")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_NAME = re.compile(r"^[a-z0-9-]{3,64}$")
_DOMAIN = re.compile(
    r"^(((?!-)[A-Za-z0-9-]{0,62}[A-Za-z0-9])\.)+((?!-)[A-Za-z0-9-]{1,62}[A-Za-z0-9])$"
)
# botocore/data/redshift-serverless/2021-04-21/service-2.json, CustomDomainCertificateArnString.
_CERTIFICATE_ARN = re.compile(
    r"^arn:[\w+=/,.@-]+:acm:[\w+=/,.@-]*:[0-9]+:[\w+=,.@-]+(/[\w+=,.@-]+)*$"
)
_DB_ROLE_TAG = "RedshiftDbRoles"
# CreateWorkgroup's port: "Valid port ranges are 5431-5455 and 8191-8215. The default is 5439."
# (https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_CreateWorkgroup.html)
DEFAULT_PORT = 5439
PORT_RANGES = ((5431, 5455), (8191, 8215))
# The parameters a workgroup's configParameters lists, with a new workgroup's values. The
# keys are CreateWorkgroup's documented options (API reference above); the values are
# Redshift's defaults from "Amazon Redshift parameter groups"
# (https://docs.aws.amazon.com/redshift/latest/mgmt/working-with-parameter-groups.html), with
# user activity logging on and a four-hour query limit as Serverless shows them (unverified).
DEFAULT_CONFIG_PARAMETERS = (
    ("auto_mv", "true"),
    ("datestyle", "ISO, MDY"),
    ("enable_case_sensitive_identifier", "false"),
    ("enable_user_activity_logging", "true"),
    ("query_group", "default"),
    ("search_path", "$user, public"),
    ("max_query_execution_time", "14400"),
    ("require_ssl", "true"),
    ("use_fips_ssl", "false"),
)


def _known_regions() -> frozenset[str]:
    """Every region of every AWS partition (botocore/data/endpoints.json)."""
    from botocore.loaders import create_loader

    data = create_loader().load_data("endpoints")
    return frozenset(name for partition in data["partitions"] for name in partition["regions"])


KNOWN_REGIONS = _known_regions()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Caller:
    """Who signed a request: the access key id, the principal moto knows it as, and the
    region of the request's credential scope ("" for the sandbox's own region)."""

    access_key_id: str
    arn: str
    region: str = ""


@dataclass
class Namespace:
    name: str
    account_id: str
    region: str
    db_name: str
    admin_username: str
    creator_arn: str
    admin_secret_arn: str | None = None
    default_iam_role_arn: str | None = None
    iam_roles: list[str] = field(default_factory=list)
    status: str = "AVAILABLE"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.time)

    @property
    def arn(self) -> str:
        return f"arn:aws:redshift-serverless:{self.region}:{self.account_id}:namespace/{self.id}"

    def describe(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "namespaceName": self.name,
            "namespaceId": self.id,
            "namespaceArn": self.arn,
            "status": self.status,
            "dbName": self.db_name,
            "adminUsername": self.admin_username,
            # As GetNamespace writes them on AWS: the API reference types iamRoles as strings
            # (https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_Namespace.html)
            # and Redshift answers each as "IamRole(applyStatus=in-sync, iamRoleArn=<arn>)", the
            # form hashicorp/terraform-provider-aws parses (internal/service/redshiftserverless/
            # namespace.go, flattenNamespaceIAMRoles). In the order given (order unverified).
            "iamRoles": [
                f"IamRole(applyStatus=in-sync, iamRoleArn={arn})" for arn in self.iam_roles
            ],
            "kmsKeyId": "AWS_OWNED_KMS_KEY",
            "logExports": [],
            "creationDate": _iso(self.created),
        }
        if self.admin_secret_arn:
            body["adminPasswordSecretArn"] = self.admin_secret_arn
            body["adminPasswordSecretKmsKeyId"] = "AWS_OWNED_KMS_KEY"
        if self.default_iam_role_arn:
            body["defaultIamRoleArn"] = self.default_iam_role_arn
        return body


@dataclass
class Workgroup:
    name: str
    namespace_name: str
    account_id: str
    region: str
    address: str
    port: int
    requested_port: int = DEFAULT_PORT
    base_capacity: int = 128
    publicly_accessible: bool = False
    config_parameters: list[tuple[str, str]] = field(
        default_factory=lambda: list(DEFAULT_CONFIG_PARAMETERS)
    )
    custom_domain_name: str | None = None
    custom_domain_certificate_arn: str | None = None
    custom_domain_certificate_expiry: float | None = None
    status: str = "AVAILABLE"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.time)

    @property
    def arn(self) -> str:
        return f"arn:aws:redshift-serverless:{self.region}:{self.account_id}:workgroup/{self.id}"

    def describe(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "workgroupName": self.name,
            "workgroupId": self.id,
            "workgroupArn": self.arn,
            "namespaceName": self.namespace_name,
            "status": self.status,
            "baseCapacity": self.base_capacity,
            "enhancedVpcRouting": False,
            "publiclyAccessible": self.publicly_accessible,
            # "port" is the port asked for; the endpoint is where the sandbox really serves it.
            "port": self.requested_port,
            "endpoint": {"address": self.address, "port": self.port, "vpcEndpoints": []},
            "configParameters": [
                {"parameterKey": key, "parameterValue": value}
                for key, value in self.config_parameters
            ],
            "securityGroupIds": [],
            "subnetIds": [],
            "creationDate": _iso(self.created),
        }
        if self.custom_domain_name:
            body.update(self.association())
        return body

    def association(self) -> dict[str, Any]:
        """The custom domain association, in the shape of botocore's ``Association``."""
        body: dict[str, Any] = {
            "workgroupName": self.name,
            "customDomainName": self.custom_domain_name,
            "customDomainCertificateArn": self.custom_domain_certificate_arn,
        }
        if self.custom_domain_certificate_expiry is not None:
            body["customDomainCertificateExpiryTime"] = _iso(self.custom_domain_certificate_expiry)
        return body


class Wire(Protocol):
    """The database side a workgroup is served on: its port and its custom domains' certificates."""

    def serve(self, workgroup: str, port: int | None) -> int:
        """Serve ``workgroup`` on ``port`` when free (None: any free port); the port served."""

    def add_domain(self, domain: str) -> float:
        """Present a certificate covering ``domain``; its expiry, epoch seconds."""

    def remove_domain(self, domain: str) -> None:
        """Stop presenting the certificate of ``domain``."""


class ControlPlane:
    """State and operations of the sandbox's ``redshift-serverless`` service.

    Namespaces and workgroups live in the region of the request that created them;
    their names are unique across regions in the sandbox (AWS allows one per region).
    """

    def __init__(
        self,
        *,
        account_id: str,
        region: str,
        endpoint_address: str,
        endpoint_port: int,
        moto: MotoBridge,
        passwords: PasswordStore,
        database: Callable[[str], None],
        faults: PlaneFaults,
        clock: Callable[[], float] = time.time,
        wire: Wire | None = None,
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.endpoint_address = endpoint_address
        self.endpoint_port = endpoint_port
        self.moto = moto
        self.passwords = passwords
        self._sql = database
        self.faults = faults
        self._clock = clock
        self._wire = wire
        self.lifetime_override: float | None = None
        # Guards the namespace and workgroup tables, the call counter and the tag record.
        self._lock = threading.Lock()
        self.namespaces: dict[str, Namespace] = {}
        self.workgroups: dict[str, Workgroup] = {}
        self.calls: Counter[str] = Counter()
        self.session_tags: dict[str, dict[str, str]] = {}
        self._operations: dict[str, Callable[[Caller, dict[str, Any]], dict[str, Any]]] = {
            "CreateNamespace": self.create_namespace,
            "UpdateNamespace": self.update_namespace,
            "GetNamespace": self.get_namespace,
            "ListNamespaces": self.list_namespaces,
            "CreateWorkgroup": self.create_workgroup,
            "GetWorkgroup": self.get_workgroup,
            "ListWorkgroups": self.list_workgroups,
            "GetCredentials": self.get_credentials,
            "CreateCustomDomainAssociation": self.create_custom_domain_association,
            "GetCustomDomainAssociation": self.get_custom_domain_association,
            "ListCustomDomainAssociations": self.list_custom_domain_associations,
            "UpdateCustomDomainAssociation": self.update_custom_domain_association,
            "DeleteCustomDomainAssociation": self.delete_custom_domain_association,
        }

    # -- identity ---------------------------------------------------------------------

    def caller_arn(self, access_key_id: str) -> str:
        arn = self.moto.principal_arn(access_key_id)
        if arn is None:
            raise ApiError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        return arn

    def db_roles_for(self, caller: Caller) -> tuple[str, ...]:
        with self._lock:
            tags = dict(self.session_tags.get(caller.access_key_id, {}))
        if _DB_ROLE_TAG not in tags:
            tags.update(self.moto.principal_tags(caller.arn))
        value = tags.get(_DB_ROLE_TAG, "")
        return tuple(role for role in value.split(":") if role)

    # -- operations ---------------------------------------------------------------------

    @staticmethod
    def _check_name(field_name: str, value: Any, *, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not _NAME.match(value):
            raise ApiError(
                "ValidationException",
                f"1 validation error detected: Value '{value}' at '{field_name}' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "^[a-z0-9-]+$ and have length between 3 and 64",
            )
        return value

    def region_of(self, caller: Caller) -> str:
        return caller.region or self.region

    def _namespace(self, name: str, caller: Caller) -> Namespace:
        # A resource of another region is not there: AWS answers ResourceNotFoundException
        # (https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_GetNamespace.html).
        namespace = self.namespaces.get(name)
        if namespace is None or namespace.region != self.region_of(caller):
            raise ApiError("ResourceNotFoundException", f"namespace {name} not found.")
        return namespace

    def _workgroup(self, name: str, caller: Caller) -> Workgroup:
        workgroup = self.workgroups.get(name)
        if workgroup is None or workgroup.region != self.region_of(caller):
            raise ApiError("ResourceNotFoundException", f"Workgroup {name} not found.")
        return workgroup

    def create_namespace(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name("namespaceName", body.get("namespaceName"))
        manage = bool(body.get("manageAdminPassword"))
        if manage and body.get("adminUserPassword"):
            raise ApiError(
                "ValidationException",
                "You can't use adminUserPassword if manageAdminPassword is true.",
            )
        roles = list(dict.fromkeys(body.get("iamRoles") or []))
        default_role = body.get("defaultIamRoleArn")
        if default_role and default_role not in roles:
            raise ApiError(
                "ValidationException",
                "The default IAM role must be one of the IAM roles associated with the namespace.",
            )
        admin_username = body.get("adminUsername") or "admin"
        with self._lock:
            if name in self.namespaces:
                raise ApiError("ConflictException", f"Namespace {name} already exists.")
            namespace = Namespace(
                name=name,
                account_id=self.account_id,
                region=self.region_of(caller),
                db_name=body.get("dbName") or "dev",
                admin_username=admin_username,
                creator_arn=caller.arn,
                default_iam_role_arn=default_role,
                iam_roles=roles,
            )
            self.namespaces[name] = namespace
        self._create_database(namespace)
        if manage or body.get("adminUserPassword"):
            # Without either, the namespace has no admin password to log in with.
            self._set_admin_password(namespace, manage, body.get("adminUserPassword"))
        creator = database_user(caller.arn)
        self._sql(f"{_create_role(creator)} ALTER ROLE {_ident(creator)} SUPERUSER;")
        return {"namespace": namespace.describe()}

    def _create_database(self, namespace: Namespace) -> None:
        try:
            self._sql(f"CREATE DATABASE {_ident(namespace.db_name)}")
        except Exception as exc:  # the database may already exist for another namespace
            if "already exists" not in str(exc):
                raise

    def _set_admin_password(self, namespace: Namespace, manage: bool, explicit: str | None) -> None:
        user = namespace.admin_username
        password = explicit or generate_password()
        self._sql(f"{_create_role(user)} ALTER ROLE {_ident(user)} SUPERUSER;")
        if manage:
            secret_name = f"redshift!{namespace.name}-{user}"
            document = json.dumps({"username": user, "password": password})
            # In the namespace's region, as Redshift keeps it (Secrets Manager is regional).
            namespace.admin_secret_arn = self.moto.put_secret(
                secret_name, document, region=namespace.region
            )
        self.passwords.set_static(user, password, source="admin")

    def update_namespace(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        namespace = self._namespace(
            self._check_name("namespaceName", body.get("namespaceName")), caller
        )
        roles = body.get("iamRoles")
        default_role = body.get("defaultIamRoleArn")
        if (roles is None) != (default_role is None):
            # "This parameter must be updated together with defaultIamRoleArn" (and the
            # reverse), https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/
            # API_UpdateNamespace.html; the message text is the sandbox's own (unverified).
            raise ApiError(
                "ValidationException",
                "iamRoles and defaultIamRoleArn must be updated together: pass both "
                '(defaultIamRoleArn="" for no default role).',
            )
        with self._lock:
            new_roles = (
                list(dict.fromkeys(roles)) if roles is not None else list(namespace.iam_roles)
            )
            if default_role and default_role not in new_roles:
                raise ApiError(
                    "ValidationException",
                    "The default IAM role must be one of the IAM roles associated "
                    "with the namespace.",
                )
            namespace.iam_roles = new_roles
            if default_role is not None:
                namespace.default_iam_role_arn = default_role or None
            if body.get("adminUsername"):
                namespace.admin_username = body["adminUsername"]
        if body.get("manageAdminPassword") or body.get("adminUserPassword"):
            if body.get("manageAdminPassword") and body.get("adminUserPassword"):
                raise ApiError(
                    "ValidationException",
                    "You can't use adminUserPassword if manageAdminPassword is true.",
                )
            self._set_admin_password(
                namespace, bool(body.get("manageAdminPassword")), body.get("adminUserPassword")
            )
        return {"namespace": namespace.describe()}

    def get_namespace(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name("namespaceName", body.get("namespaceName"))
        return {"namespace": self._namespace(name, caller).describe()}

    def list_namespaces(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        region = self.region_of(caller)
        names = sorted(n for n, ns in self.namespaces.items() if ns.region == region)
        items, token = self._page(names, body)
        result: dict[str, Any] = {"namespaces": [self.namespaces[n].describe() for n in items]}
        if token:
            result["nextToken"] = token
        return result

    def create_workgroup(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name("workgroupName", body.get("workgroupName"))
        namespace = self._namespace(
            self._check_name("namespaceName", body.get("namespaceName")), caller
        )
        port = _check_port(body.get("port"))
        parameters = _config_parameters(body.get("configParameters"))
        with self._lock:
            if name in self.workgroups:
                raise ApiError("ConflictException", f"Workgroup {name} already exists.")
            workgroup = Workgroup(
                name=name,
                namespace_name=namespace.name,
                account_id=self.account_id,
                region=namespace.region,
                address=self.endpoint_address,
                port=self.endpoint_port,
                requested_port=DEFAULT_PORT if port is None else port,
                base_capacity=int(body.get("baseCapacity") or 128),
                publicly_accessible=bool(body.get("publiclyAccessible")),
                config_parameters=parameters,
                status="CREATING",
            )
            self.workgroups[name] = workgroup
        try:
            if self._wire is not None:
                workgroup.port = self._wire.serve(name, port)
        except BaseException:
            with self._lock:
                del self.workgroups[name]
            raise
        workgroup.status = "AVAILABLE"
        return {"workgroup": workgroup.describe()}

    def get_workgroup(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name("workgroupName", body.get("workgroupName"))
        return {"workgroup": self._workgroup(name, caller).describe()}

    def list_workgroups(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        region = self.region_of(caller)
        names = sorted(n for n, wg in self.workgroups.items() if wg.region == region)
        items, token = self._page(names, body)
        result: dict[str, Any] = {"workgroups": [self.workgroups[n].describe() for n in items]}
        if token:
            result["nextToken"] = token
        return result

    @staticmethod
    def _page(names: list[str], body: dict[str, Any]) -> tuple[list[str], str | None]:
        size = body.get("maxResults", 100)
        if not isinstance(size, int) or not 1 <= size <= 100:
            raise ApiError(
                "ValidationException",
                f"1 validation error detected: Value '{size}' at 'maxResults' failed to "
                "satisfy constraint: Member must have value between 1 and 100",
            )
        start = 0
        if body.get("nextToken"):
            try:
                start = int(body["nextToken"])
            except ValueError:
                raise ApiError("ValidationException", "Invalid nextToken.") from None
        end = start + size
        return names[start:end], (str(end) if end < len(names) else None)

    def get_credentials(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        domain = body.get("customDomainName")
        if body.get("workgroupName") is not None:
            workgroup = self._workgroup(
                self._check_name("workgroupName", body["workgroupName"]), caller
            )
        elif domain is not None:
            domain = _check_domain(domain)
            found = self._by_domain(domain, caller)
            if not found:
                raise ApiError(
                    "ResourceNotFoundException", f"Custom domain name {domain} not found."
                )
            workgroup = found[0]
        else:
            raise ApiError(
                "ValidationException", "Either workgroupName or customDomainName is required."
            )
        duration = body.get("durationSeconds", 900)
        if not isinstance(duration, int) or not 900 <= duration <= 3600:
            raise ApiError(
                "ValidationException",
                "Invalid durationSeconds: the value must be between 900 and 3600 seconds.",
            )
        self.faults.check_denied(caller.arn, workgroup.arn)
        # A workgroup being modified keeps serving (rsauth._endpoint.SERVING gives the
        # sources); one being created or deleted has no database to log in to.
        if workgroup.status not in {"AVAILABLE", "MODIFYING"}:
            raise ApiError(
                "ValidationException",
                f"Workgroup {workgroup.name} is not available (status {workgroup.status}).",
            )
        user = database_user(caller.arn)
        lifetime = self.lifetime_override if self.lifetime_override is not None else duration
        now = self._clock()
        expires = now + lifetime
        password = secrets.token_urlsafe(24)
        self.passwords.add(
            IssuedPassword(
                user, password, expires, self.db_roles_for(caller), workgroup=workgroup.name
            )
        )
        # Whole seconds on the wire, as AWS sends them; the front honours the exact instant.
        return {
            "dbUser": user,
            "dbPassword": password,
            "expiration": int(expires),
            "nextRefreshTime": int(expires),
        }

    # -- custom domains ---------------------------------------------------------------
    # Shapes: botocore/data/redshift-serverless/2021-04-21/service-2.json (Association and the
    # five *CustomDomainAssociation operations); https://docs.aws.amazon.com/redshift-serverless/
    # latest/APIReference/API_CreateCustomDomainAssociation.html. The ACM certificate is only
    # checked to be a well-formed ARN: the sandbox issues the certificate it presents itself.

    def _by_domain(self, domain: str, caller: Caller) -> list[Workgroup]:
        region = self.region_of(caller)
        with self._lock:
            return [
                w
                for w in self.workgroups.values()
                if w.custom_domain_name == domain and w.region == region
            ]

    def _associated(self, caller: Caller, body: dict[str, Any]) -> Workgroup:
        domain = _check_domain(body.get("customDomainName"))
        workgroup = self._workgroup(
            self._check_name("workgroupName", body.get("workgroupName")), caller
        )
        if workgroup.custom_domain_name != domain:
            raise ApiError(
                "ResourceNotFoundException",
                f"Custom domain name {domain} is not associated with workgroup {workgroup.name}.",
            )
        return workgroup

    def create_custom_domain_association(
        self, caller: Caller, body: dict[str, Any]
    ) -> dict[str, Any]:
        domain = _check_domain(body.get("customDomainName"))
        certificate = _check_certificate(body.get("customDomainCertificateArn"))
        workgroup = self._workgroup(
            self._check_name("workgroupName", body.get("workgroupName")), caller
        )
        with self._lock:
            taken = [
                w.name
                for w in self.workgroups.values()
                if w.custom_domain_name == domain and w.region == workgroup.region
            ]
            if taken:
                raise ApiError(
                    "ConflictException",
                    f"Custom domain name {domain} is already associated with workgroup "
                    f"{taken[0]}.",
                )
            if workgroup.custom_domain_name is not None:
                raise ApiError(
                    "ConflictException",
                    f"Workgroup {workgroup.name} already has the custom domain name "
                    f"{workgroup.custom_domain_name}.",
                )
            workgroup.custom_domain_name = domain
            workgroup.custom_domain_certificate_arn = certificate
        try:
            expiry = self._wire.add_domain(domain) if self._wire is not None else None
        except BaseException:
            with self._lock:
                workgroup.custom_domain_name = workgroup.custom_domain_certificate_arn = None
            raise
        workgroup.custom_domain_certificate_expiry = expiry
        return workgroup.association()

    def get_custom_domain_association(
        self, caller: Caller, body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._associated(caller, body).association()

    def update_custom_domain_association(
        self, caller: Caller, body: dict[str, Any]
    ) -> dict[str, Any]:
        certificate = _check_certificate(body.get("customDomainCertificateArn"))
        workgroup = self._associated(caller, body)
        with self._lock:
            workgroup.custom_domain_certificate_arn = certificate
        return workgroup.association()

    def delete_custom_domain_association(
        self, caller: Caller, body: dict[str, Any]
    ) -> dict[str, Any]:
        workgroup = self._associated(caller, body)
        with self._lock:
            domain, workgroup.custom_domain_name = workgroup.custom_domain_name, None
            workgroup.custom_domain_certificate_arn = None
            workgroup.custom_domain_certificate_expiry = None
        if self._wire is not None and domain is not None:
            self._wire.remove_domain(domain)
        return {}

    def list_custom_domain_associations(
        self, caller: Caller, body: dict[str, Any]
    ) -> dict[str, Any]:
        domain = body.get("customDomainName")
        certificate = body.get("customDomainCertificateArn")
        if domain is not None:
            _check_domain(domain)
        if certificate is not None:
            _check_certificate(certificate)
        region = self.region_of(caller)
        with self._lock:
            found = {
                w.name: w
                for w in self.workgroups.values()
                if w.custom_domain_name is not None
                and w.region == region
                and domain in (None, w.custom_domain_name)
                and certificate in (None, w.custom_domain_certificate_arn)
            }
        items, token = self._page(sorted(found), body)
        result: dict[str, Any] = {"associations": [found[n].association() for n in items]}
        if token:
            result["nextToken"] = token
        return result

    # -- dispatch ---------------------------------------------------------------------

    def dispatch(
        self,
        operation: str,
        access_key_id: str,
        body: dict[str, Any],
        region: str = "",
        *,
        arn: str | None = None,
    ) -> dict[str, Any]:
        """Run one operation; ``arn`` is the caller when the endpoint already authenticated it."""
        handler = self._operations.get(operation)
        if handler is None:
            raise ApiError(
                "UnknownOperationException",
                f"The sandbox does not implement RedshiftServerless.{operation}.",
            )
        if region and region not in KNOWN_REGIONS:
            # AWS refuses a credential scope naming no region it knows, before anything else:
            # "Credential should be scoped to a valid region." (InvalidSignatureException, 403,
            # seen in aws/aws-sdk-js-v3#5576 and aws/aws-sdk-java#1097).
            raise ApiError(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{region}'. ",
                403,
            )
        caller = Caller(access_key_id, arn or self.caller_arn(access_key_id), region)
        return handler(caller, body)


def _check_port(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not any(
        low <= value <= high for low, high in PORT_RANGES
    ):
        # The ranges of CreateWorkgroup's port (module constants); the text is the sandbox's.
        raise ApiError(
            "ValidationException",
            f"Invalid port {value}: valid port ranges are 5431-5455 and 8191-8215.",
        )
    return value


def _config_parameters(value: Any) -> list[tuple[str, str]]:
    """The defaults, with the parameters given replacing theirs (new keys appended)."""
    merged = dict(DEFAULT_CONFIG_PARAMETERS)
    for entry in value or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("parameterKey"), str):
            raise ApiError(
                "ValidationException", "Each configParameters entry needs a parameterKey."
            )
        merged[entry["parameterKey"]] = str(entry.get("parameterValue", ""))
    return list(merged.items())


def _check_domain(value: Any) -> str:
    # botocore/data/redshift-serverless/2021-04-21/service-2.json, CustomDomainName.
    if not isinstance(value, str) or not 1 <= len(value) <= 253 or not _DOMAIN.match(value):
        raise ApiError(
            "ValidationException",
            f"1 validation error detected: Value '{value}' at 'customDomainName' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            f"{_DOMAIN.pattern}",
        )
    return value


def _check_certificate(value: Any) -> str:
    if not isinstance(value, str) or not 20 <= len(value) <= 2048 or not _CERTIFICATE_ARN.match(
        value
    ):
        raise ApiError(
            "ValidationException",
            f"1 validation error detected: Value '{value}' at 'customDomainCertificateArn' "
            "failed to satisfy constraint: Member must satisfy regular expression pattern: "
            "arn:[\\w+=/,.@-]+:acm:[\\w+=/,.@-]*:[0-9]+:[\\w+=,.@-]+(/[\\w+=,.@-]+)*",
        )
    return value


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_role(name: str) -> str:
    literal = "'" + name.replace("'", "''") + "'"
    return (
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
        f"{literal}) THEN CREATE ROLE {_ident(name)} LOGIN; END IF; END $$;"
    )


def generate_password() -> str:
    # Redshift's rules: 8-64 characters with upper, lower and a digit.
    return "Aa1" + secrets.token_urlsafe(21)


def _operation_name(service: str, environ: dict[str, Any], body: bytes) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return str(target).rsplit(".", 1)[-1]
    if body.startswith(b"Action=") or b"&Action=" in body:
        action = parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
        if action:
            return str(action)
    query_action = parse_qs(environ.get("QUERY_STRING", "")).get("Action", [""])[0]
    if query_action:
        return str(query_action)
    return str(environ.get("REQUEST_METHOD", "GET"))


class AwsApplication:
    """The WSGI application behind every ``AWS_ENDPOINT_URL_*`` of the sandbox."""

    def __init__(self, plane: ControlPlane, moto_app: WsgiApp, gate: Gate) -> None:
        self.plane = plane
        self.moto_app = moto_app
        self.gate = gate

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = BytesIO(body)
        try:
            caller = self.gate.authenticate(environ, body)
        except ApiError as error:
            return error_response(start_response, error, request_protocol(environ))
        service = caller.service
        operation = _operation_name(service, environ, body)
        if not caller.internal:
            with self.plane._lock:
                self.plane.calls[f"{service or 'unknown'}.{operation}"] += 1
            try:
                self.plane.faults.before_call(service, operation)
                self.gate.authorize(caller, operation, environ, body)
            except ApiError as error:
                return error_response(start_response, error, protocol_of(service, environ))
        if service == "redshift-serverless":
            return self._serverless(start_response, caller, operation, body)
        if service == "secretsmanager" and operation == "GetSecretValue":
            environ = _pin_current_stage(environ, body)
        if service == "sts" and operation == "AssumeRole":
            return self._assume_role(environ, start_response, body)
        if service == "secretsmanager" and operation == "PutSecretValue":
            return self._put_secret_value(environ, start_response)
        return self.moto_app(environ, start_response)

    def _moto(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """moto's whole answer to one request: status line, headers, body."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.moto_app(environ, capture))
        return captured["status"], captured["headers"], body

    def _put_secret_value(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """PutSecretValue, then AWSCURRENT on the new version alone.

        Secrets Manager moves AWSCURRENT to a version put without VersionStages (or with
        AWSCURRENT among them) and AWSPREVIOUS to the one that had it
        (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html);
        moto leaves AWSCURRENT on two versions once UpdateSecretVersionStage has moved it.
        """
        status, headers, answer = self._moto(environ)
        if status.startswith("200"):
            result = json.loads(answer)
            if "AWSCURRENT" in result.get("VersionStages", ["AWSCURRENT"]):
                self.plane.moto.make_current(result["ARN"], result["VersionId"])
        start_response(status, headers)
        return [answer]

    def _serverless(
        self, start_response: StartResponse, caller: Authenticated, operation: str, body: bytes
    ) -> list[bytes]:
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ApiError("SerializationException", "The request body must be a JSON object.")
            result = self.plane.dispatch(
                operation, caller.access_key_id, request, caller.region, arn=caller.arn
            )
        except ApiError as error:
            return error_response(start_response, error)
        except json.JSONDecodeError:
            return error_response(
                start_response, ApiError("SerializationException", "Malformed JSON body.")
            )
        except Exception:
            log.exception("sandbox control plane failed on %s", operation)
            return error_response(
                start_response,
                ApiError("InternalServerException", "The sandbox failed on this request.", 500),
            )
        return json_response(start_response, result)

    def _assume_role(
        self, environ: dict[str, Any], start_response: StartResponse, body: bytes
    ) -> Iterable[bytes]:
        form = parse_qs(body.decode(errors="replace"))
        tags: dict[str, str] = {}
        index = 1
        while f"Tags.member.{index}.Key" in form:
            tags[form[f"Tags.member.{index}.Key"][0]] = form.get(
                f"Tags.member.{index}.Value", [""]
            )[0]
            index += 1
        status, headers, chunks = self._moto(environ)
        if tags and status.startswith("200"):
            key = _access_key_in(chunks)
            if key:
                with self.plane._lock:
                    self.plane.session_tags[key] = tags
        start_response(status, headers)
        return [chunks]


def _access_key_in(xml: bytes) -> str | None:
    try:
        root = ElementTree.fromstring(xml)  # noqa: S314 - moto's own answer, in-process
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("AccessKeyId") and element.text:
            return element.text
    return None


def _pin_current_stage(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    """Ask moto for ``AWSCURRENT`` explicitly when the caller named no version.

    moto answers a GetSecretValue without VersionId or VersionStage from the
    version the secret was created or last put with, even after
    UpdateSecretVersionStage moved AWSCURRENT elsewhere; Secrets Manager
    answers with the AWSCURRENT version.
    """
    try:
        request = json.loads(body or b"{}")
    except json.JSONDecodeError:
        return environ
    if not isinstance(request, dict) or "VersionId" in request or "VersionStage" in request:
        return environ
    request["VersionStage"] = "AWSCURRENT"
    data = json.dumps(request).encode()
    return {**environ, "wsgi.input": BytesIO(data), "CONTENT_LENGTH": str(len(data))}
