"""``rsauth doctor``: why can this machine not log in? One line per check, in order.

Each check either passes (✓), fails (✗, with what to do), notes something that
matters only for some uses (!, an informational check that failed), or is
skipped because a check it needs failed (-). A check is *required* when the
login method needs it: GetCredentials for ``iam`` and ``superuser``, the
secret for ``secret``; the default IAM role is never required. The doctor
exits 1 when a required check failed.

The AWS calls go through rsauth's own pieces (sessions, sources, error
mapping), so a failure reads the way ``rsauth.connect`` would report it; the
last check logs in through a Broker with the same options. That login is the
one step that runs a query: on a sleeping Serverless workgroup it resumes compute,
which is billed (https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-billing.html),
so the doctor says so before it, and ``--no-login`` skips it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from rsauth._aws import map_aws_error
from rsauth._broker import DEFAULT_DATABASE, Broker, connection_origin
from rsauth._cli._context import Context, cli_wording
from rsauth._credentials import describe_remaining
from rsauth._driver import DRIVER_CA_BUNDLE
from rsauth._endpoint import DEFAULT_PORT, SERVING, find_custom_domain
from rsauth._errors import ConfigurationError, NotFoundError, RsauthError, ServiceError
from rsauth._sources import AwsContext
from rsauth._sources.iam import IamSource
from rsauth._sources.secret import SecretSource, admin_secret_arn

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient

__all__ = ["Doctor", "Result", "run_doctor"]

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"

_SYMBOLS = {OK: "✓", FAIL: "✗", WARN: "!", SKIP: "-"}
_ASCII = {OK: "ok", FAIL: "FAIL", WARN: "warn", SKIP: "skip"}

# PostgreSQL's SSLRequest: length 8, then the request code 80877103.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_NAME_WIDTH = len("default IAM role") + 1
_LOGIN_QUERY = "select current_user, usesuper from pg_user where usename = current_user"


@dataclass(frozen=True)
class Result:
    """One line of the report."""

    name: str
    status: str
    detail: str
    hint: str = ""
    required: bool = True


class _Failed(Exception):
    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


@dataclass(frozen=True)
class _Passed:
    detail: str


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Doctor:
    """Runs the checks in order; :meth:`results` yields each as soon as it is known."""

    def __init__(
        self,
        context: Context,
        *,
        timeout: float = 10.0,
        login: bool = True,
        announce: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.context = context
        self.options = context.options
        self.timeout = timeout
        self.login = login
        self._announce = announce
        self._broken: set[str] = set()
        self._region = ""
        self._arn = ""
        self._namespace: str | None = None
        self._address: tuple[str, int] | None = None
        self._socket: socket.socket | None = None

    # -- the sequence ---------------------------------------------------------------------

    def results(self) -> Iterator[Result]:
        method = self.options.method
        uses_secret = method == "secret"
        secret_label = "secret" if self.options.secret_id else "admin secret"
        by_workgroup = "workgroup" if self.options.workgroup else "caller identity"
        steps: Sequence[tuple[str, Callable[[], _Passed], Sequence[str], bool]] = (
            ("region", self._check_region, (), True),
            ("AWS credentials", self._check_credentials, (), True),
            ("caller identity", self._check_identity, ("region", "AWS credentials"), True),
            ("workgroup", self._check_workgroup, ("caller identity",), True),
            ("endpoint", self._check_endpoint, ("workgroup",), True),
            ("TLS", self._check_tls, ("endpoint",), True),
            ("GetCredentials", self._check_get_credentials, (by_workgroup,), not uses_secret),
            (secret_label, self._check_secret, ("caller identity", "workgroup"), uses_secret),
            ("default IAM role", self._check_default_role, ("workgroup",), False),
            (
                "login",
                self._check_login,
                ("TLS", secret_label if uses_secret else "GetCredentials"),
                True,
            ),
        )
        try:
            for name, check, needs, required in steps:
                yield self._run(name, check, needs, required)
        finally:
            self._close_socket()

    def _run(
        self, name: str, check: Callable[[], _Passed], needs: Sequence[str], required: bool
    ) -> Result:
        blocked = [need for need in needs if need in self._broken]
        if blocked:
            self._broken.add(name)
            return Result(name, SKIP, f"skipped: needs {', '.join(blocked)}", required=required)
        if name == "login":
            if not self.login:
                return Result(name, SKIP, f"skipped: --no-login ({LOGIN_COST})", required=False)
            self._announce(f"the login step connects and runs one query: {LOGIN_COST} "
                           "(--no-login skips it)")
        try:
            passed = check()
        except _Failed as exc:
            self._broken.add(name)
            status = FAIL if required else WARN
            return Result(name, status, _one_line(exc.detail), _one_line(exc.hint), required)
        except RsauthError as exc:
            self._broken.add(name)
            status = FAIL if required else WARN
            return Result(name, status, _one_line(cli_wording(exc)), "", required)
        return Result(name, OK, passed.detail, required=required)

    # -- AWS side -------------------------------------------------------------------------

    def _check_region(self) -> _Passed:
        self._region = self.context.region()
        return _Passed(self._region)

    def _check_credentials(self) -> _Passed:
        session = self.context.base_session()
        try:
            credentials = session.get_credentials()
        except BotoCoreError as exc:
            raise _Failed(
                f"could not load AWS credentials: {exc}",
                "fix the profile's credentials (for SSO: aws sso login), or pass --profile",
            ) from exc
        if credentials is None:
            raise _Failed(
                "no AWS credentials found",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / --profile, "
                "or run where an instance or container role is available",
            )
        key = credentials.get_frozen_credentials().access_key or ""
        return _Passed(f"access key ****{key[-4:]} ({credentials.method})")

    def _check_identity(self) -> _Passed:
        try:
            identity = self.context.caller_identity()
        except ServiceError as exc:
            raise _Failed(
                cli_wording(exc),
                "could not reach AWS STS: check the network path and any proxy, and "
                "AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL if set",
            ) from exc
        except RsauthError as exc:
            role = self.options.role_arn
            hint = (
                f"the caller could not assume {role}: the role's trust policy must allow "
                "sts:AssumeRole (and sts:TagSession) for the caller"
                if role and not isinstance(exc, ConfigurationError)
                else "AWS did not accept these credentials: check that the access key is "
                "active and not expired (aws sso login, refresh the session), or pass --profile"
            )
            raise _Failed(cli_wording(exc), hint) from exc
        self._arn = identity["Arn"]
        return _Passed(self._arn)

    def _aws(self) -> AwsContext:
        arn = self._arn
        return AwsContext(self._region, identity=lambda: f"IAM identity {arn}")

    def _client(self) -> RedshiftServerlessClient:
        return self.context.sessions.redshift_serverless(self.context.session_key())

    def _check_workgroup(self) -> _Passed:
        options = self.options
        if not options.workgroup:
            if options.custom_domain:
                return self._check_custom_domain(options.custom_domain, options.port)
            return _Passed("none given: the endpoint comes from the secret")
        name = options.workgroup
        client = self._client()
        try:
            workgroup = client.get_workgroup(workgroupName=name)["workgroup"]
        except (ClientError, BotoCoreError) as exc:
            error = map_aws_error(
                exc,
                doing="redshift-serverless:GetWorkgroup",
                subject=f"workgroup {name!r}",
                region=self._region,
                identity=self._aws().identity,
            )
            hint = self._known_workgroups(client) if isinstance(error, NotFoundError) else ""
            raise _Failed(str(error), hint) from exc
        status = workgroup.get("status", "")
        self._namespace = workgroup.get("namespaceName")
        endpoint: Any = workgroup.get("endpoint") or {}
        if status not in SERVING:
            raise _Failed(
                f"workgroup {name!r} is {status or 'in an unknown state'}, not AVAILABLE",
                "wait until it is AVAILABLE (aws redshift-serverless get-workgroup "
                f"--workgroup-name {name}), then run rsauth doctor again",
            )
        if not endpoint.get("address"):
            raise _Failed(f"workgroup {name!r} has no endpoint address yet", "wait and retry")
        self._address = (
            endpoint["address"],
            int(endpoint.get("port") or workgroup.get("port") or DEFAULT_PORT),
        )
        return _Passed(f"{name} is {status} (namespace {self._namespace})")

    def _check_custom_domain(self, domain: str, port: int | None) -> _Passed:
        if port:
            self._address = (domain, port)
            return _Passed(f"custom domain {domain}, port {port} as given")
        try:
            found = find_custom_domain(self._client(), domain, self._aws())
        except RsauthError as exc:
            raise _Failed(str(exc), "check --custom-domain and --region") from exc
        self._address = (domain, found.port)
        return _Passed(f"custom domain {domain}: workgroup {found.name}, port {found.port}")

    def _known_workgroups(self, client: RedshiftServerlessClient) -> str:
        try:
            names = [w["workgroupName"] for w in client.list_workgroups()["workgroups"]]
        except (ClientError, BotoCoreError, KeyError):
            return f"check --workgroup and --region (looked in {self._region})"
        if not names:
            return f"there is no workgroup in {self._region}: check --region"
        return f"workgroups in {self._region}: {', '.join(sorted(names))} (pass --workgroup)"

    def _check_get_credentials(self) -> _Passed:
        options = self.options
        source = IamSource(
            self._client(),
            workgroup=options.workgroup,
            custom_domain=options.custom_domain,
            database=options.database or DEFAULT_DATABASE,
            duration=options.duration,
            context=self._aws(),
            clock=_utcnow,
        )
        lease = source.load()
        return _Passed(
            f"permitted: a login for {lease.value.user}, valid "
            f"{describe_remaining(lease.lifetime).removeprefix('in ')}"
        )

    def _check_secret(self) -> _Passed:
        options = self.options
        if options.secret_id:
            secret_id = options.secret_id
        else:
            if not self._namespace:
                raise _Failed("no namespace known to look up its admin secret", "pass --secret-id")
            secret_id = admin_secret_arn(self._client(), namespace=self._namespace,
                                         context=self._aws())
        client = self.context.sessions.secretsmanager(self.context.session_key())
        try:
            login = SecretSource(
                client, secret_id=secret_id, context=self._aws(), refresh_after=0
            ).load().value
        except RsauthError as exc:
            hint = (
                "" if options.method == "secret"
                else "needed only for --method secret; grant secretsmanager:GetSecretValue "
                "on it to use that method"
            )
            raise _Failed(str(exc), hint) from exc
        return _Passed(f"{secret_id.rsplit(':', 1)[-1]} is readable (user {login.user})")

    def _check_default_role(self) -> _Passed:
        if not self._namespace:
            return _Passed("not checked: no workgroup given")
        try:
            namespace = self._client().get_namespace(namespaceName=self._namespace)["namespace"]
        except (ClientError, BotoCoreError) as exc:
            raise _Failed(
                str(map_aws_error(
                    exc,
                    doing="redshift-serverless:GetNamespace",
                    subject=f"namespace {self._namespace!r}",
                    region=self._region,
                    identity=self._aws().identity,
                )),
            ) from exc
        role = namespace.get("defaultIamRoleArn")
        if not role:
            raise _Failed(
                f"namespace {self._namespace} has none",
                "only COPY, UNLOAD and similar statements without an explicit IAM_ROLE need "
                "it; to set one: aws redshift-serverless update-namespace --namespace-name "
                f"{self._namespace} --default-iam-role-arn ARN --iam-roles ARN",
            )
        return _Passed(role)

    # -- network side ---------------------------------------------------------------------

    def _check_endpoint(self) -> _Passed:
        if self._address is None:
            return _Passed("not checked: the login names its own endpoint")
        host, port = self._address
        network_hint = (
            f"check the network path to {host}:{port}: the workgroup's security group must "
            f"allow inbound TCP {port} from here, and from outside its VPC the workgroup must "
            "be publicly accessible (or reach it over VPN, peering or a bastion)"
        )
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _Failed(
                f"{host} does not resolve ({exc.strerror})",
                "check the name; a VPC endpoint resolves only inside its VPC",
            ) from exc
        addresses = ", ".join(sorted({str(info[4][0]) for info in infos}))
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except TimeoutError as exc:
            raise _Failed(
                f"{host}:{port} ({addresses}) did not answer within {self.timeout:g} s",
                network_hint,
            ) from exc
        except OSError as exc:
            raise _Failed(
                f"{host}:{port} ({addresses}) refused the connection "
                f"({exc.strerror or type(exc).__name__})",
                network_hint,
            ) from exc
        try:
            sock.sendall(_SSL_REQUEST)
            answer = sock.recv(1)
        except OSError as exc:
            sock.close()
            raise _Failed(
                f"{host}:{port} accepted TCP, then dropped the connection "
                f"({exc.strerror or type(exc).__name__})",
                network_hint,
            ) from exc
        if answer != b"S":
            sock.close()
            what = "closed it without answering" if not answer else "does not offer TLS"
            raise _Failed(
                f"{host}:{port} accepted the TCP connection, then {what}",
                network_hint if not answer else "is this the Redshift endpoint?",
            )
        self._socket = sock
        return _Passed(f"{host}:{port} resolves to {addresses} and accepts connections")

    def _check_tls(self) -> _Passed:
        if self._socket is None:
            return _Passed("not checked: the login names its own endpoint")
        assert self._address is not None
        host, port = self._address
        # What redshift_connector trusts: the default store (SSL_CERT_FILE) plus its
        # bundled Redshift CAs.
        context = ssl.create_default_context()
        if DRIVER_CA_BUNDLE.is_file():
            context.load_verify_locations(str(DRIVER_CA_BUNDLE))
        sock, self._socket = self._socket, None
        try:
            tls = context.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            reason = exc.verify_message or str(exc)
            if "hostname" in reason.lower() or "ip address" in reason.lower():
                hint = (f"connect by the workgroup's own endpoint name; the certificate "
                        f"does not name {host}")
            else:
                hint = ("the certificate is not signed by a CA this machine trusts; set "
                        "SSL_CERT_FILE to the CA bundle that signed it (for the sandbox, the "
                        "SSL_CERT_FILE line it prints)")
            raise _Failed(f"the certificate of {host}:{port} was not accepted: {reason}",
                          hint) from exc
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise _Failed(
                f"the TLS handshake with {host}:{port} failed ({exc})",
                "try again; if it persists, check for a proxy intercepting TLS",
            ) from exc
        version = tls.version()
        with contextlib.suppress(OSError):
            tls.close()
        return _Passed(f"certificate for {host} verified ({version})")

    def _close_socket(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _check_login(self) -> _Passed:
        with Broker() as broker, broker.connect(
            **self.context.arguments, timeout=int(self.timeout)
        ) as connection:
            origin = connection_origin(connection)
            cursor = connection.cursor()
            try:
                cursor.execute(_LOGIN_QUERY)
                row = cursor.fetchone()
            finally:
                cursor.close()
        user = str(row[0]) if row else "?"
        role = "a superuser" if row and row[1] is True else "not a superuser"
        method = origin.method if origin else self.options.method
        database = origin.database if origin else self.options.database
        return _Passed(f"{method} login to database {database} as {user} ({role})")


# What the login step costs on Serverless (see the module docstring).
LOGIN_COST = "this resumes a sleeping workgroup, and its compute is billed"


def _symbols(stream: TextIO) -> dict[str, str]:
    try:
        "".join(_SYMBOLS.values()).encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return _ASCII
    return _SYMBOLS


def run_doctor(context: Context, stream: TextIO | None = None, *, login: bool = True) -> int:
    """Print every check as it completes; 1 when a required check failed, else 0."""
    out = stream or sys.stdout
    symbols = _symbols(out)
    width = max(len(symbol) for symbol in symbols.values())
    names = _NAME_WIDTH
    arrow = "→" if symbols is _SYMBOLS else "->"
    options = context.options
    print(f"rsauth doctor: {options.target}, method {options.method}", file=out, flush=True)
    failed: list[str] = []
    notes = 0
    def announce(line: str) -> None:
        print(f"{'':<{width}} {'':<{names}} {line}", file=out, flush=True)

    for result in Doctor(context, login=login, announce=announce).results():
        print(f"{symbols[result.status]:<{width}} {result.name:<{names}} {result.detail}",
              file=out, flush=True)
        if result.hint:
            print(f"{'':<{width}} {'':<{names}} {arrow} {result.hint}", file=out, flush=True)
        if result.status == FAIL:
            failed.append(result.name)
        elif result.status == WARN:
            notes += 1
    if failed:
        print(f"{len(failed)} required check(s) failed: {', '.join(failed)}", file=out)
        return 1
    extra = f" ({notes} note{'s' if notes != 1 else ''} above)" if notes else ""
    print(f"all required checks passed{extra}", file=out)
    return 0
