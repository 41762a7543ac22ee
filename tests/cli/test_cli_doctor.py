"""``rsauth doctor`` names the step that fails, and passes on the healthy sandbox."""

from __future__ import annotations

import subprocess
import uuid

import boto3

from rsauth.sandbox import Sandbox
from tests.cli.conftest import Cli
from tests.conftest import secrets_of

CHECKS = [
    "region",
    "AWS credentials",
    "caller identity",
    "workgroup",
    "endpoint",
    "TLS",
    "GetCredentials",
    "admin secret",
    "default IAM role",
    "login",
]


def report(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """{check name: (mark, detail)} from the doctor's output."""
    found: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines()[1:]:
        mark, rest = line[:1], line[2:]
        for name in CHECKS:
            if rest.startswith(name + " ") and mark != " ":
                found[name] = (mark, rest[len(name):].strip())
    return found


def marks(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {name: mark for name, (mark, _) in report(result).items()}


def test_the_healthy_sandbox_passes(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = report(result)
    assert list(checks) == CHECKS, "every check, in order"
    assert {name for name, (mark, _) in checks.items() if mark != "✓"} == {"default IAM role"}
    assert checks["default IAM role"][0] == "!", "informational: the sandbox sets none"
    assert checks["workgroup"][1] == "default-workgroup is AVAILABLE (namespace default-namespace)"
    assert checks["TLS"][1] == "certificate for localhost verified (TLSv1.3)"
    assert checks["login"][1] == "iam login to database dev as IAM:sandbox-admin (a superuser)"
    assert result.stdout.rstrip().endswith("all required checks passed (1 note above)")
    for secret in secrets_of(sandbox):
        assert secret not in result.stdout + result.stderr


def test_an_unknown_workgroup_fails_at_the_workgroup_step(cli: Cli) -> None:
    result = cli("doctor", "--workgroup", "no-such-workgroup")
    assert result.returncode == 1
    checks = report(result)
    assert checks["workgroup"][0] == "✗"
    assert "'no-such-workgroup' was not found in region us-east-1" in checks["workgroup"][1]
    assert "→ workgroups in us-east-1: default-workgroup (pass --workgroup)" in result.stdout
    assert {name for name, mark in marks(result).items() if mark == "-"} == {
        "endpoint", "TLS", "GetCredentials", "admin secret", "default IAM role", "login"
    }
    assert result.stdout.rstrip().endswith("1 required check(s) failed: workgroup")


def test_a_denied_identity_fails_at_get_credentials(cli: Cli, sandbox: Sandbox) -> None:
    sandbox.deny("IAM:sandbox-admin")
    result = cli("doctor")
    assert result.returncode == 1
    checks = report(result)
    assert checks["GetCredentials"][0] == "✗"
    assert "is not authorized to perform: redshift-serverless:GetCredentials" in (
        checks["GetCredentials"][1]
    )
    assert marks(result)["endpoint"] == "✓"
    assert marks(result)["login"] == "-"
    assert result.stdout.rstrip().endswith("1 required check(s) failed: GetCredentials")


def test_a_denied_identity_is_only_a_note_for_the_secret_method(
    cli: Cli, sandbox: Sandbox
) -> None:
    sandbox.deny("IAM:sandbox-admin")
    result = cli("doctor", "--method", "secret")
    assert result.returncode == 0, result.stdout
    checks = marks(result)
    assert checks["GetCredentials"] == "!"
    assert checks["admin secret"] == "✓"
    assert checks["login"] == "✓"
    assert "secret login to database dev as admin" in result.stdout


def test_an_endpoint_that_drops_connections_fails_at_the_endpoint_step(
    cli: Cli, sandbox: Sandbox
) -> None:
    sandbox.front_fault("refuse", count=10)
    result = cli("doctor")
    assert result.returncode == 1
    checks = report(result)
    assert checks["endpoint"][0] == "✗"
    assert "accepted the TCP connection, then closed it without answering" in (
        checks["endpoint"][1]
    )
    assert "security group must allow inbound TCP" in result.stdout
    assert marks(result)["TLS"] == "-"
    assert marks(result)["GetCredentials"] == "✓"
    assert result.stdout.rstrip().endswith("1 required check(s) failed: endpoint")


def test_an_untrusted_certificate_fails_at_the_tls_step(cli: Cli) -> None:
    result = cli("doctor", drop=["SSL_CERT_FILE"])
    assert result.returncode == 1
    checks = report(result)
    assert checks["endpoint"][0] == "✓"
    assert checks["TLS"][0] == "✗"
    assert "was not accepted: unable to get local issuer certificate" in checks["TLS"][1]
    assert "set SSL_CERT_FILE to the CA bundle" in result.stdout
    assert marks(result)["login"] == "-"


def test_missing_aws_credentials_fail_at_the_credentials_step(cli: Cli) -> None:
    result = cli("doctor", drop=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    assert result.returncode == 1
    checks = marks(result)
    assert checks["region"] == "✓"
    assert checks["AWS credentials"] == "✗"
    assert checks["caller identity"] == "-"
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.stdout


def test_a_workgroup_that_is_not_available(cli: Cli, sandbox: Sandbox) -> None:
    sandbox.set_workgroup_status("CREATING")
    result = cli("doctor")
    assert result.returncode == 1
    checks = report(result)
    assert checks["workgroup"] == ("✗", "workgroup 'default-workgroup' is CREATING, not AVAILABLE")


def test_a_workgroup_being_modified_is_checked_like_an_available_one(
    cli: Cli, sandbox: Sandbox
) -> None:
    sandbox.set_workgroup_status("MODIFYING")
    result = cli("doctor")
    assert report(result)["workgroup"] == (
        "✓", "default-workgroup is MODIFYING (namespace default-namespace)"
    ), result.stdout


def test_a_custom_domain_is_checked_on_its_workgroups_port(cli: Cli, sandbox: Sandbox) -> None:
    # The domain's workgroup comes from ListCustomDomainAssociations, its port from
    # GetWorkgroup (botocore/data/redshift-serverless/2021-04-21/service-2.json).
    client = boto3.client("redshift-serverless", region_name="us-west-2")
    suffix = uuid.uuid4().hex[:8]
    client.create_namespace(namespaceName=f"doctor-ns-{suffix}")
    workgroup = client.create_workgroup(
        workgroupName=f"doctor-{suffix}", namespaceName=f"doctor-ns-{suffix}"
    )["workgroup"]
    domain = f"doctor-{suffix}.example.com"
    client.create_custom_domain_association(
        workgroupName=f"doctor-{suffix}", customDomainName=domain,
        customDomainCertificateArn="arn:aws:acm:us-west-2:123456789012:certificate/doctor-cert",
    )
    result = cli(
        "doctor", "--custom-domain", domain,
        extra_env={"AWS_REGION": "us-west-2"}, drop=["RSAUTH_WORKGROUP"],
    )
    checks = report(result)
    assert checks["workgroup"] == (
        "✓", f"custom domain {domain}: workgroup doctor-{suffix}, "
        f"port {workgroup['endpoint']['port']}",
    )
    unknown = cli(
        "doctor", "--custom-domain", f"nowhere-{suffix}.example.com",
        extra_env={"AWS_REGION": "us-west-2"}, drop=["RSAUTH_WORKGROUP"],
    )
    assert report(unknown)["workgroup"][0] == "✗"


def test_an_unreachable_aws_endpoint_is_not_blamed_on_the_credentials(cli: Cli) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    result = cli("doctor", extra_env={"AWS_ENDPOINT_URL_STS": "http://127.0.0.1:9"})
    assert result.returncode == 1
    mark, _ = report(result)["caller identity"]
    assert mark == "✗"
    assert "did not accept" not in result.stdout
    assert "could not reach AWS" in result.stdout
    assert "AWS_ENDPOINT_URL_STS" in result.stdout


def test_an_unknown_key_is_called_invalid_not_short_of_a_permission(cli: Cli) -> None:
    result = cli("doctor", extra_env={"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"})
    assert result.returncode == 1
    assert "the access key is not valid" in result.stdout
    assert "grant" not in result.stdout.lower()
    # The sandbox refuses the key at STS as AWS does, so no placeholder identity is named.
    mark, _ = report(result)["caller identity"]
    assert mark == "✗"
    assert "moto" not in result.stdout


def test_the_doctor_says_the_login_step_costs_compute_before_taking_it(
    cli: Cli, sandbox: Sandbox
) -> None:
    result = cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    notice = next(i for i, line in enumerate(lines) if "resumes a sleeping workgroup" in line)
    login = next(i for i, line in enumerate(lines) if line[2:].startswith("login "))
    assert notice < login, "said before the login step"
    assert "billed" in lines[notice]
    assert "--no-login" in lines[notice]


def test_no_login_skips_the_only_step_that_logs_in(cli: Cli, sandbox: Sandbox) -> None:
    before = sandbox.front_stats()
    result = cli("doctor", "--no-login")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = report(result)
    assert checks["login"][0] == "-"
    assert checks["login"][1].startswith("skipped: --no-login")
    assert checks["TLS"][0] == "✓", "everything before the login is still checked"
    after = sandbox.front_stats()
    assert after["logins_ok"] == before["logins_ok"], "no session at the server"
    assert after["logins_refused"] == before["logins_refused"]
    assert "resumes a sleeping workgroup" in checks["login"][1]
