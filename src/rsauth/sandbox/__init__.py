"""A local Amazon Redshift Serverless built from real parts, for tests and demos.

``with Sandbox() as sb:`` starts, in a child process on 127.0.0.1: a real
PostgreSQL, a TLS wire front that logs users in the way Redshift does, the
``redshift-serverless`` API over HTTP, and moto for STS, IAM, Secrets Manager
and S3. ``sb.env`` holds the environment variables that point boto3 and
redshift_connector at it. Needs the ``sandbox`` extra (``pip install
'rsauth[sandbox]'``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

__all__ = ["Sandbox", "SandboxError"]


class SandboxError(RuntimeError):
    """The sandbox could not start, or refused an admin operation."""


class Sandbox:
    """A running sandbox, driven through its admin API.

    ``start()``/``stop()`` or ``with Sandbox() as sb``. Everything it starts
    stops with it: on ``stop()``, on an exception, on Ctrl-C, and when this
    process dies (the child watches its stdin).

    Every AWS call is authenticated by its SigV4 signature, and IAM policies
    (identity-based and roles' trust policies) decide the calls listed in
    docs/sandbox.md; ``enforce_iam=False`` turns policy evaluation off
    (signatures are still verified).
    """

    def __init__(
        self, *, seed: int | None = None, startup_timeout: float = 120.0, enforce_iam: bool = True
    ) -> None:
        self.seed = seed
        self.enforce_iam = enforce_iam
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._facts: dict[str, Any] = {}
        self._stderr: Any = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start the sandbox in a child process and wait until it serves; returns itself."""
        if self._process is not None:
            return self
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        args = [sys.executable, "-m", "rsauth.sandbox", "--child"]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        if not self.enforce_iam:
            args.append("--no-enforce-iam")
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_child_environment(),
        )
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(self._process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(self.startup_timeout)
        if not line or not line[0].strip():
            detail = self._stderr_tail()
            self.stop()
            raise SandboxError(f"the sandbox did not start:\n{detail}")
        self._facts = json.loads(line[0])
        return self

    def stop(self) -> None:
        """Stop the sandbox and remove its temporary directory; does nothing when stopped."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # type: ignore[union-attr]
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return str(self._stderr.read()[-4000:])

    # -- facts ------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """A fresh dict of the variables that point boto3 and redshift_connector here."""
        return dict(self._fact("env"))

    @property
    def host(self) -> str:
        """The workgroup endpoint's host name (``localhost``)."""
        return str(self._fact("host"))

    @property
    def port(self) -> int:
        """The port of the default workgroup's wire front."""
        return int(self._fact("port"))

    @property
    def workgroup(self) -> str:
        """The default workgroup's name (``default-workgroup``)."""
        return str(self._fact("workgroup"))

    @property
    def namespace(self) -> str:
        """The default namespace's name (``default-namespace``)."""
        return str(self._fact("namespace"))

    @property
    def database(self) -> str:
        """The default namespace's database (``dev``)."""
        return str(self._fact("database"))

    @property
    def region(self) -> str:
        """The region every endpoint answers for (``us-east-1``)."""
        return str(self._fact("region"))

    @property
    def account_id(self) -> str:
        """The account every resource belongs to (``123456789012``)."""
        return str(self._fact("account_id"))

    @property
    def admin_url(self) -> str:
        """The admin API's base URL, its secret token included: keep it private."""
        return str(self._fact("admin_url"))

    @property
    def aws_url(self) -> str:
        """The one HTTP endpoint of every AWS service the sandbox runs."""
        return str(self._fact("aws_url"))

    @property
    def pid(self) -> int | None:
        """The child process's id while the sandbox runs, else ``None``."""
        return self._process.pid if self._process is not None else None

    def _fact(self, name: str) -> Any:
        if not self._facts:
            raise SandboxError("the sandbox is not running: use start() or a with block")
        return self._facts[name]

    # -- admin API --------------------------------------------------------------------

    def _call(self, name: str, /, **kwargs: Any) -> Any:
        request = urllib.request.Request(  # noqa: S310 - our own admin API, on loopback
            f"{self.admin_url}/{name}",
            data=json.dumps(kwargs).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
                return json.loads(response.read())["result"]
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", str(exc))
            raise SandboxError(f"sandbox {name}: {detail}") from None

    def calls(self) -> dict[str, int]:
        """AWS API calls received, keyed ``service.Operation``."""
        result: dict[str, int] = self._call("calls")
        return result

    def reset_calls(self) -> None:
        """Zero the counts of AWS calls :meth:`calls` returns."""
        self._call("reset_calls")

    def issued_passwords(self) -> list[dict[str, Any]]:
        """Every password the sandbox handed out (GetCredentials, the admin secret)."""
        result: list[dict[str, Any]] = self._call("issued_passwords")
        return result

    def sql(self, statement: str, database: str | None = None) -> list[list[str | None]]:
        """Run SQL as the PostgreSQL superuser (setup for tests); rows as text."""
        result: list[list[str | None]] = self._call(
            "sql", statement=statement, database=database or self.database
        )
        return result

    def reset(self) -> None:
        """Clear every fault and count; issued passwords stay valid."""
        self._call("reset")

    # -- control-plane faults ---------------------------------------------------------

    def throttle(
        self, count: int | None = None, *, fraction: float | None = None,
        operation: str | None = None, seed: int | None = None,
    ) -> None:
        """Answer ``ThrottlingException`` to the next ``count`` calls, or a ``fraction``.

        ``operation`` narrows it: ``"GetCredentials"`` or ``"secretsmanager.GetSecretValue"``.
        """
        self._call("throttle", count=count, fraction=fraction, operation=operation, seed=seed)

    def server_error(
        self, count: int | None = None, *, fraction: float | None = None,
        operation: str | None = None, seed: int | None = None,
    ) -> None:
        """Answer HTTP 500 ``InternalServerException`` to the next ``count``, or a ``fraction``."""
        self._call("server_error", count=count, fraction=fraction, operation=operation,
                   seed=seed)

    def latency(
        self, seconds: float, *, jitter: float = 0.0, operation: str | None = None,
        count: int | None = None, fraction: float | None = None, seed: int | None = None,
    ) -> None:
        """Delay calls by ``seconds`` plus up to ``jitter`` (uniform): all, next N or a fraction."""
        self._call("latency", seconds=seconds, jitter=jitter, operation=operation, count=count,
                   fraction=fraction, seed=seed)

    def rendezvous(self, *operations: str, timeout: float = 30.0) -> None:
        """Hold the first call of each operation (``"GetWorkgroup"``,
        ``"secretsmanager.GetSecretValue"``) until one of every one is in flight, at most
        ``timeout`` seconds; :meth:`rendezvous_result` tells whether they met, i.e. were
        made side by side."""
        self._call("rendezvous", operations=list(operations), timeout=timeout)

    def rendezvous_result(self) -> dict[str, Any] | None:
        """``{"met": bool, "arrived": [operation, ...]}`` of the last :meth:`rendezvous`
        since the last :meth:`reset`; ``None`` without one."""
        result: dict[str, Any] | None = self._call("plane_stats")["rendezvous"]
        return result

    def deny(self, identity: str) -> None:
        """Refuse GetCredentials to an identity (ARN, ``IAM:<user>`` or ``IAMR:<role>``)."""
        self._call("deny", identity=identity)

    def allow(self, identity: str) -> None:
        """Undo :meth:`deny` for an identity."""
        self._call("allow", identity=identity)

    def unavailable(self, seconds: float) -> None:
        """Close the AWS endpoint for ``seconds``: connections are refused, then it returns."""
        self._call("unavailable", seconds=seconds)

    def available(self) -> None:
        """End an outage early."""
        self._call("available")

    def set_workgroup_status(self, status: str, workgroup: str | None = None) -> None:
        """CREATING, AVAILABLE, MODIFYING or DELETING."""
        self._call("set_workgroup_status", workgroup=workgroup or self.workgroup, status=status)

    # -- wire-front faults ------------------------------------------------------------

    def front_fault(
        self, kind: str, count: int | None = None, *, fraction: float | None = None,
        seconds: float = 0.0, stage: str = "tls", seed: int = 0,
    ) -> None:
        """Fault new database connections.

        ``kind``: ``refuse`` (close at once), ``reset_after_accept`` (TCP RST),
        ``reset_handshake`` (RST after the SSL answer, ``stage="ssl_answer"``, or
        during TLS, ``stage="tls"``) or ``delay`` (``seconds`` before answering).
        For the next ``count`` connections or a seeded ``fraction`` of them.
        """
        self._call("front_fault", kind=kind, count=count, fraction=fraction, seconds=seconds,
                   stage=stage, seed=seed)

    def set_idle_resume(self, seconds: float, *, idle_after: float = 60.0) -> None:
        """Make the workgroup sleep after ``idle_after`` seconds with no open connection.

        A sleeping workgroup accepts its next connection at once but answers its
        SSL request only after ``seconds``, as Serverless does while it resumes
        compute; connections arriving meanwhile wait too, none is refused.
        ``seconds=0`` turns it off (and ends a resume under way); ``idle_after=0``
        puts an idle workgroup to sleep now. ``front_stats()["idle"]`` shows the
        state (``off``, ``awake``, ``asleep``, ``resuming``) and the connections
        held. :meth:`reset` turns it off.
        """
        self._call("set_idle_resume", seconds=seconds, idle_after=idle_after)

    def front_stats(self) -> dict[str, Any]:
        """Connections accepted, logins made and refused, faults injected, idle state."""
        result: dict[str, Any] = self._call("front_stats")
        return result

    # -- credentials ------------------------------------------------------------------

    def expire_passwords(self, user: str | None = None) -> int:
        """Expire every temporary password of ``user`` (everyone's when None) now."""
        result: int = self._call("expire_passwords", user=user)
        return result

    def set_credential_lifetime(self, seconds: float | None) -> None:
        """Issue passwords living ``seconds`` (sandbox only; Redshift's minimum is 900 s)."""
        self._call("set_credential_lifetime", seconds=seconds)

    def set_aws_clock_offset(self, seconds: float) -> None:
        """Run the AWS endpoint's clock ``seconds`` ahead of this machine's (negative: behind).

        For tests of clock skew and of expired temporary credentials; ``reset()`` sets it to 0.
        """
        self._call("set_aws_clock_offset", seconds=seconds)

    def begin_rotation(self, secret_id: str | None = None) -> str:
        """Start rotating a secret (default: the admin secret): new AWSPENDING version,
        database switched to it, AWSCURRENT unchanged. Returns the pending version id."""
        result: str = self._call("begin_rotation", secret_id=secret_id)
        return result

    def finish_rotation(self, secret_id: str | None = None) -> str:
        """Promote the pending version to AWSCURRENT."""
        result: str = self._call("finish_rotation", secret_id=secret_id)
        return result

    def rotate_secret(self, secret_id: str | None = None, *, pause: float = 0.0) -> str:
        """A whole rotation with ``pause`` seconds in the AWSPENDING window."""
        result: str = self._call("rotate_secret", secret_id=secret_id, pause=pause)
        return result


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # The child serves AWS; it must never reach a real endpoint or a user's profile.
    for key in list(env):
        if key.startswith("AWS_"):
            del env[key]
    env["PYTHONUNBUFFERED"] = "1"
    return env
