"""The sandbox process: PostgreSQL, the wire front, the AWS endpoints and the admin API.

``SandboxServer`` composes the parts and owns their lifetimes. It runs in the
foreground (``python -m rsauth.sandbox``) or as the child process behind
:class:`rsauth.sandbox.Sandbox`, which drives it through the admin API.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import shutil
import tempfile
import threading
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from rsauth.sandbox._access import Gate
from rsauth.sandbox._copy import CopyUnload
from rsauth.sandbox._copyaccess import SandboxCopyAccess
from rsauth.sandbox._errors import ApiError
from rsauth.sandbox._faults import PlaneFaults
from rsauth.sandbox._front import Front
from rsauth.sandbox._moto import MotoBridge, moto_wsgi_app
from rsauth.sandbox._passwords import PasswordStore
from rsauth.sandbox._plane import AwsApplication, Caller, ControlPlane, generate_password
from rsauth.sandbox._postgres import PostgresServer
from rsauth.sandbox._version import VERSION_FUNCTION

log = logging.getLogger("rsauth.sandbox")

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
NAMESPACE = "default-namespace"
WORKGROUP = "default-workgroup"
DATABASE = "dev"
ADMIN_USER = "admin"
CREATOR_USER = "sandbox-admin"
ENDPOINT_HOST = "localhost"
_AWS_SERVICES = ("REDSHIFT_SERVERLESS", "STS", "IAM", "SECRETS_MANAGER", "S3", "KMS")


class _QuietHandler(WSGIRequestHandler):
    """HTTP/1.1 with keep-alive, as AWS endpoints speak; no access log lines."""

    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _Http:
    """A threaded WSGI server on 127.0.0.1 that can be closed and reopened on its port."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = make_server(
            "127.0.0.1", self.port, self.app, threaded=True, request_handler=_QuietHandler
        )
        server.daemon_threads = True  # type: ignore[attr-defined]
        self._server, self.port = server, server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"sandbox-http-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def running(self) -> bool:
        return self._server is not None


class SandboxServer:
    """Every part of one sandbox, started in order and stopped in reverse."""

    def __init__(
        self, *, workdir: Path | None = None, seed: int | None = None, enforce_iam: bool = True
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="rsauth-sandbox-"))
        self.seed = seed
        self.enforce_iam = enforce_iam
        self.passwords = PasswordStore()
        self.plane_faults = PlaneFaults(seed=seed)
        self.moto = MotoBridge(ACCOUNT_ID, REGION)
        self.postgres: PostgresServer | None = None
        self.front: Front | None = None
        self.plane: ControlPlane | None = None
        self.gate: Gate | None = None
        self.aws: _Http | None = None
        self.admin: _Http | None = None
        self.creator_keys: tuple[str, str] = ("", "")
        # Serialises plane outages (close/reopen of the AWS port).
        self._outage_lock = threading.Lock()
        self._outage_timer: threading.Timer | None = None
        self._rotations: dict[str, str] = {}
        # Serialises port choices: two workgroups created at once must not race for one port.
        self._serve_lock = threading.Lock()
        # The admin API's credential, carried in its URL's path (AdminApplication).
        self.admin_token = secrets.token_urlsafe(32)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> SandboxServer:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.postgres = PostgresServer(self.workdir)
        self.postgres.start()
        for database in ("template1", "postgres"):  # every database made later copies template1
            self._sql(VERSION_FUNCTION, database)
        certfile, keyfile = self._make_certificates()
        self.front = Front(
            pg_socket_path=self.postgres.socket_path,
            certfile=str(certfile),
            keyfile=str(keyfile),
            passwords=self.passwords,
        )
        self.front.start()
        self.plane = ControlPlane(
            account_id=ACCOUNT_ID,
            region=REGION,
            endpoint_address=ENDPOINT_HOST,
            endpoint_port=self.front.port,
            moto=self.moto,
            passwords=self.passwords,
            database=self._sql,
            faults=self.plane_faults,
            wire=self,
        )
        self.gate = Gate(self.moto, self.plane, enforce_iam=self.enforce_iam)
        self.aws = _Http(AwsApplication(self.plane, moto_wsgi_app(), self.gate))
        self.aws.start()
        self.moto.endpoint_url = self.aws_url
        # COPY/UNLOAD on the wire front reach S3, IAM and the namespaces through this.
        self.front.copy_unload = CopyUnload(
            SandboxCopyAccess(self.plane, self.moto, self.gate, self._sql)
        )
        self._bootstrap()
        self.admin = _Http(AdminApplication(self))
        self.admin.start()
        log.info(
            "sandbox ready: AWS at %s, database at %s:%s",
            self.aws_url,
            ENDPOINT_HOST,
            self.front.port,
        )

    def _make_certificates(self) -> tuple[Path, Path]:
        import trustme

        ca = trustme.CA(organization_name="rsauth sandbox")
        self._ca = ca
        # For the endpoint name only, as Redshift's certificate is: an IP address does not verify.
        cert = ca.issue_cert("localhost")
        self.ca_path = self.workdir / "sandbox-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        certfile, keyfile = self.workdir / "front-cert.pem", self.workdir / "front-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(certfile), append=True)
        cert.private_key_pem.write_to_path(str(keyfile))
        keyfile.chmod(0o600)
        return certfile, keyfile

    # -- the wire side of workgroups (rsauth.sandbox._plane.Wire) ----------------------

    def serve(self, workgroup: str, port: int | None) -> int:
        """The first workgroup asking no port gets the front's own port; every other one
        its own listener, on ``port`` when that is free on this machine, else a free one."""
        assert self.front is not None
        with self._serve_lock:
            if port is None and not self.front.routes:
                served = self.front.port
            else:
                try:
                    served = self.front.listen(port or 0)
                except OSError:
                    log.info("port %s is taken: workgroup %s gets a free one", port, workgroup)
                    served = self.front.listen(0)
            self.front.routes[served] = workgroup
        return served

    def add_domain(self, domain: str) -> float:
        """Issue a certificate for ``domain`` from the sandbox CA; the front presents it."""
        assert self.front is not None
        expiry = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=395)
        cert = self._ca.issue_cert(domain, not_after=expiry)
        folder = self.workdir / "domains"
        folder.mkdir(exist_ok=True)
        certfile, keyfile = folder / f"{domain}.pem", folder / f"{domain}.key"
        cert.private_key_pem.write_to_path(str(keyfile))
        keyfile.chmod(0o600)
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(certfile), append=True)
        self.front.add_certificate(domain, str(certfile), str(keyfile))
        return expiry.timestamp()

    def remove_domain(self, domain: str) -> None:
        assert self.front is not None
        self.front.remove_certificate(domain)

    def _bootstrap(self) -> None:
        """A new account with default settings: one namespace, one workgroup, one admin."""
        assert self.plane is not None
        arn, key_id, secret = self.moto.create_user_with_keys(CREATOR_USER)
        # The account's administrator: every action on every resource. Roles'
        # trust and permission policies still apply to it, as on AWS.
        self.moto.iam.put_user_policy(
            UserName=CREATOR_USER, PolicyName="AdministratorAccess", PolicyDocument=json.dumps(
                {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        self.creator_keys = (key_id, secret)
        caller = Caller(key_id, arn, REGION)
        self.plane.create_namespace(
            caller,
            {
                "namespaceName": NAMESPACE,
                "adminUsername": ADMIN_USER,
                "manageAdminPassword": True,
                "dbName": DATABASE,
            },
        )
        self.plane.create_workgroup(
            caller, {"workgroupName": WORKGROUP, "namespaceName": NAMESPACE}
        )
        self.plane.calls.clear()

    def stop(self) -> None:
        with self._outage_lock:
            if self._outage_timer is not None:
                self._outage_timer.cancel()
        for part in (self.admin, self.aws, self.front):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("sandbox: stopping %s failed", type(part).__name__)
        self.admin = self.aws = self.front = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- facts ------------------------------------------------------------------------

    @property
    def aws_url(self) -> str:
        assert self.aws is not None
        return f"http://127.0.0.1:{self.aws.port}"

    @property
    def admin_url(self) -> str:
        """The admin API's base URL, token included: POST ``<admin_url>/<operation>``."""
        assert self.admin is not None
        return f"http://127.0.0.1:{self.admin.port}/{self.admin_token}"

    def env(self) -> dict[str, str]:
        env = {f"AWS_ENDPOINT_URL_{service}": self.aws_url for service in _AWS_SERVICES}
        env.update(
            {
                "SSL_CERT_FILE": str(self.ca_path),
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": self.creator_keys[0],
                "AWS_SECRET_ACCESS_KEY": self.creator_keys[1],
            }
        )
        return env

    def describe(self) -> dict[str, Any]:
        assert self.front is not None and self.postgres is not None
        return {
            "env": self.env(),
            "admin_url": self.admin_url,
            "aws_url": self.aws_url,
            "host": ENDPOINT_HOST,
            "port": self.front.port,
            "account_id": ACCOUNT_ID,
            "region": REGION,
            "namespace": NAMESPACE,
            "workgroup": WORKGROUP,
            "database": DATABASE,
            "admin_user": ADMIN_USER,
            "creator_user": CREATOR_USER,
            "enforce_iam": self.enforce_iam,
            "postgres": self.postgres.version(),
        }

    def _sql(self, statement: str, database: str = "postgres") -> None:
        assert self.postgres is not None
        with self.postgres.admin(database) as session:
            session.execute(statement)

    # -- admin operations (each also reachable over the admin API) ---------------------

    def calls(self) -> dict[str, int]:
        assert self.plane is not None
        with self.plane._lock:
            return dict(self.plane.calls)

    def reset_calls(self) -> None:
        assert self.plane is not None
        with self.plane._lock:
            self.plane.calls.clear()

    def issued_passwords(self) -> list[dict[str, Any]]:
        return [asdict(entry) for entry in self.passwords.all()]

    def sql(self, statement: str, database: str = DATABASE) -> list[list[str | None]]:
        assert self.postgres is not None
        with self.postgres.admin(database) as session:
            return [list(row) for row in session.execute(statement).rows]

    # control-plane faults

    def throttle(
        self, count: int | None = None, fraction: float | None = None,
        operation: str | None = None, seed: int | None = None,
    ) -> None:
        """Answer ThrottlingException to the next ``count`` calls or a ``fraction`` of calls."""
        self.plane_faults.add("throttle", count=count, fraction=fraction, operation=operation,
                              seed=seed)

    def server_error(
        self, count: int | None = None, fraction: float | None = None,
        operation: str | None = None, seed: int | None = None,
    ) -> None:
        """Answer a 5xx (InternalServerException) to the next ``count`` or a ``fraction``."""
        self.plane_faults.add("server_error", count=count, fraction=fraction,
                              operation=operation, seed=seed)

    def latency(
        self, seconds: float, jitter: float = 0.0, operation: str | None = None,
        count: int | None = None, fraction: float | None = None, seed: int | None = None,
    ) -> None:
        """Delay matching calls by ``seconds`` plus a uniform random ``jitter``."""
        if seconds < 0 or jitter < 0:
            raise ValueError("seconds and jitter must be >= 0")
        self.plane_faults.add("latency", count=count, fraction=fraction, operation=operation,
                              seconds=seconds, jitter=jitter, seed=seed)

    def rendezvous(self, operations: list[str], timeout: float = 30.0) -> None:
        """Hold the first call of each of ``operations`` until all have arrived (or
        ``timeout``); :meth:`plane_stats` tells whether they met."""
        self.plane_faults.rendezvous(operations, timeout)

    def deny(self, identity: str) -> None:
        """AccessDeniedException on GetCredentials for an ARN, IAM:<user> or IAMR:<role>."""
        self.plane_faults.deny(identity)

    def allow(self, identity: str) -> None:
        self.plane_faults.allow(identity)

    def unavailable(self, seconds: float) -> None:
        """Close the AWS endpoint (connections refused) for ``seconds``, then reopen it."""
        assert self.aws is not None
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        with self._outage_lock:
            if self._outage_timer is not None:
                self._outage_timer.cancel()
            if self.aws.running:
                self.aws.stop()
            self._outage_timer = threading.Timer(seconds, self.available)
            self._outage_timer.daemon = True
            self._outage_timer.start()

    def available(self) -> None:
        """End an outage now."""
        assert self.aws is not None
        with self._outage_lock:
            if self._outage_timer is not None:
                self._outage_timer.cancel()
                self._outage_timer = None
            if not self.aws.running:
                self.aws.start()

    def set_workgroup_status(self, workgroup: str, status: str) -> None:
        assert self.plane is not None
        allowed = ("CREATING", "AVAILABLE", "MODIFYING", "DELETING")
        if status not in allowed:
            raise ValueError(f"status must be one of {', '.join(allowed)}, not {status!r}")
        with self.plane._lock:
            if workgroup not in self.plane.workgroups:
                raise KeyError(f"no workgroup {workgroup!r}")
            self.plane.workgroups[workgroup].status = status

    # wire-front faults

    def front_fault(
        self, kind: str, count: int | None = None, fraction: float | None = None,
        seconds: float = 0.0, stage: str = "tls", seed: int = 0,
    ) -> None:
        """refuse, reset_after_accept, reset_handshake (stage ssl_answer|tls) or delay."""
        assert self.front is not None
        faults = self.front.faults
        if kind == "refuse":
            faults.refuse(count=count, fraction=fraction, seed=seed)
        elif kind == "reset_after_accept":
            faults.reset_after_accept(count=count, fraction=fraction, seed=seed)
        elif kind == "reset_handshake":
            faults.reset_handshake(stage=stage, count=count, fraction=fraction,  # type: ignore[arg-type]
                                   seed=seed)
        elif kind == "delay":
            faults.delay(seconds, count=count, fraction=fraction, seed=seed)
        else:
            raise ValueError(
                f"unknown front fault {kind!r}: use refuse, reset_after_accept, "
                "reset_handshake or delay"
            )

    def front_stats(self) -> dict[str, Any]:
        assert self.front is not None
        return {
            **self.front.stats(),
            "injected": self.front.faults.injected(),
            "by_workgroup": self.front.connections_by_workgroup(),
            "idle": self.front.idle.snapshot(),
        }

    def set_idle_resume(self, seconds: float, idle_after: float = 60.0) -> None:
        """Sleep after ``idle_after`` seconds without a session, resume in ``seconds`` (0: off)."""
        assert self.front is not None
        self.front.set_idle_resume(seconds, idle_after=idle_after)

    def plane_stats(self) -> dict[str, Any]:
        return {
            "injected": dict(self.plane_faults.injected),
            "rendezvous": self.plane_faults.rendezvous_result(),
        }

    # the AWS endpoint's clock

    def set_aws_clock_offset(self, seconds: float) -> None:
        """Run the AWS endpoint's clock ``seconds`` ahead of this machine's (negative: behind).

        Signatures older or newer than the endpoint's time by more than AWS
        allows are refused, and temporary credentials expire by this clock.
        """
        assert self.gate is not None
        self.gate.set_clock_offset(seconds)

    # credentials

    def expire_passwords(self, user: str | None = None) -> int:
        """Expire now every temporary password of ``user`` (all users when None)."""
        return self.passwords.expire(user)

    def set_credential_lifetime(self, seconds: float | None) -> None:
        """Issue GetCredentials passwords that live ``seconds`` (None: the requested duration).

        A sandbox setting for tests that cross several lifetimes quickly; Redshift
        itself never issues less than 900 seconds.
        """
        assert self.plane is not None
        if seconds is not None and seconds <= 0:
            raise ValueError("seconds must be > 0")
        self.plane.lifetime_override = seconds

    # rotation, the way a Secrets Manager rotation function runs it

    def _secret_id(self, secret_id: str | None) -> str:
        assert self.plane is not None
        if secret_id:
            return secret_id
        arn = self.plane.namespaces[NAMESPACE].admin_secret_arn
        if arn is None:
            raise ValueError("the default namespace has no managed admin secret")
        return arn

    def begin_rotation(self, secret_id: str | None = None) -> str:
        """createSecret + setSecret: a new AWSPENDING version, and the database switched to it.

        Until finish_rotation, AWSCURRENT still holds the old password, which the
        database no longer accepts. Returns the pending version id.
        """
        secret = self._secret_id(secret_id)
        document = self.moto.current_document(secret)
        document["password"] = generate_password()
        version = self.moto.add_pending(secret, json.dumps(document))
        self.passwords.set_static(str(document["username"]), str(document["password"]),
                                  source="rotation")
        self._rotations[secret] = version
        return version

    def finish_rotation(self, secret_id: str | None = None) -> str:
        """finishSecret: AWSCURRENT moves to the pending version. Returns its id."""
        secret = self._secret_id(secret_id)
        version = self._rotations.pop(secret, None)
        if version is None:
            raise ValueError(f"no rotation in progress for {secret}")
        self.moto.promote(secret, version)
        return version

    def rotate_secret(self, secret_id: str | None = None, pause: float = 0.0) -> str:
        """A whole rotation: begin, wait ``pause`` seconds in the AWSPENDING window, finish."""
        self.begin_rotation(secret_id)
        if pause > 0:
            threading.Event().wait(pause)
        return self.finish_rotation(secret_id)

    def reset(self) -> None:
        """Clear every fault and count; issued passwords stay valid."""
        assert self.plane is not None and self.front is not None
        self.plane_faults.reset()
        self.reset_calls()
        self.front.reset()
        self.front.set_idle_resume(0)
        self.plane.lifetime_override = None
        assert self.gate is not None
        self.gate.set_clock_offset(0.0)
        with self._outage_lock:
            if self._outage_timer is not None:
                self._outage_timer.cancel()
                self._outage_timer = None
        assert self.aws is not None
        if not self.aws.running:
            self.aws.start()
        with self.plane._lock:
            for workgroup in self.plane.workgroups.values():
                workgroup.status = "AVAILABLE"


class AdminApplication:
    """``POST /<token>/<operation>`` with a JSON object of keyword arguments; JSON answers.

    The API runs SQL as the database superuser and hands out passwords, so it
    answers only requests that a web page cannot forge: the per-sandbox token
    in the path (compared in constant time), ``Content-Type: application/json``
    (a page's form or ``text/plain`` POST needs no CORS preflight, a JSON one
    does), no ``Origin`` header (browsers send one on cross-origin POSTs; curl
    and urllib do not) and a ``Host`` naming the loopback port it listens on
    (DNS rebinding sends the attacker's host name).
    """

    def __init__(self, server: SandboxServer) -> None:
        self.server = server

    def operations(self) -> dict[str, Any]:
        server = self.server
        return {
            "describe": server.describe,
            "calls": server.calls,
            "reset_calls": server.reset_calls,
            "issued_passwords": server.issued_passwords,
            "sql": server.sql,
            "reset": server.reset,
            "throttle": server.throttle,
            "server_error": server.server_error,
            "latency": server.latency,
            "rendezvous": server.rendezvous,
            "deny": server.deny,
            "allow": server.allow,
            "unavailable": server.unavailable,
            "available": server.available,
            "set_workgroup_status": server.set_workgroup_status,
            "expire_passwords": server.expire_passwords,
            "set_credential_lifetime": server.set_credential_lifetime,
            "set_aws_clock_offset": server.set_aws_clock_offset,
            "begin_rotation": server.begin_rotation,
            "finish_rotation": server.finish_rotation,
            "rotate_secret": server.rotate_secret,
            "front_fault": server.front_fault,
            "front_stats": server.front_stats,
            "plane_stats": server.plane_stats,
            "set_idle_resume": server.set_idle_resume,
        }

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        """Why the request is refused (HTTP status, text), or None when it may run."""
        if "Origin" in request.headers:
            return 403, "requests from web pages (with an Origin header) are refused"
        assert self.server.admin is not None
        port = self.server.admin.port
        if request.headers.get("Host", "") not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            return 403, f"the Host header must be 127.0.0.1:{port} or localhost:{port}"
        token, _, _ = request.path.lstrip("/").partition("/")
        if not hmac.compare_digest(token.encode(), self.server.admin_token.encode()):
            return 403, "the admin URL's token is missing or wrong: use the URL the sandbox printed"
        if request.method != "POST":
            return 405, "use POST with a JSON object of keyword arguments"
        if request.mimetype != "application/json":
            return 415, "the body must be JSON, sent with Content-Type: application/json"
        return None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        refusal = self._refusal(request)
        if refusal is not None:
            status, text = refusal
            response = Response(
                json.dumps({"error": text}), status=status, content_type="application/json"
            )
            return response(environ, start_response)
        name = request.path.lstrip("/").partition("/")[2].strip("/")
        operation = self.operations().get(name)
        if operation is None:
            response = Response(
                json.dumps(
                    {
                        "error": f"unknown operation {name!r}",
                        "operations": sorted(self.operations()),
                    }
                ),
                status=404,
                content_type="application/json",
            )
            return response(environ, start_response)
        try:
            kwargs = json.loads(request.get_data() or b"{}")
            result = operation(**kwargs)
            response = Response(json.dumps({"result": result}), content_type="application/json")
        except (TypeError, ValueError, KeyError, ApiError) as exc:
            response = Response(
                json.dumps({"error": f"{type(exc).__name__}: {exc}"}),
                status=400,
                content_type="application/json",
            )
        except Exception as exc:
            log.exception("sandbox admin operation %s failed", name)
            response = Response(
                json.dumps({"error": f"{type(exc).__name__}: {exc}"}),
                status=500,
                content_type="application/json",
            )
        return response(environ, start_response)
