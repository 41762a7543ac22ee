"""The sandbox's AWS endpoint refuses what AWS refuses: signatures and IAM policies.

Every call here goes through boto3 against the session's sandbox. Users and
roles are made through the ordinary IAM API with the least they need.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tests._iam import ACCOUNT, ROOT, allow, document, make_role, make_user, trust

from rsauth.sandbox import Sandbox

_ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})

# One service of each protocol, and a call every authenticated caller may make.
# JSON 1.1: botocore/data/redshift-serverless/2021-04-21/service-2.json ("protocol": "json");
# query: botocore/data/sts/2011-06-15/service-2.json ("protocol": "query");
# rest-xml: botocore/data/s3/2006-03-01/service-2.json.
_CALLS: dict[str, Callable[[Any], Any]] = {
    "redshift-serverless": lambda c: c.list_workgroups(),
    "sts": lambda c: c.get_caller_identity(),
    "s3": lambda c: c.list_buckets(),
}
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided."
)


def client(service: str, credentials: dict[str, str] | None = None) -> Any:
    given = credentials or {}
    session = boto3.session.Session(
        aws_access_key_id=given.get("aws_access_key_id"),
        aws_secret_access_key=given.get("aws_secret_access_key"),
        aws_session_token=given.get("aws_session_token"),
    )
    return session.client(service, config=_ONE_ATTEMPT)  # type: ignore[call-overload]


def refusal(call: Callable[[], Any]) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        str(response["Error"]["Code"]),
        int(response["ResponseMetadata"]["HTTPStatusCode"]),
        str(response["Error"].get("Message", "")),
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def signing_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Make botocore sign requests as if its clock ran ``seconds`` ahead (negative: behind)."""

    def shift(seconds: float) -> None:
        moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=seconds
        )
        monkeypatch.setattr(
            botocore.auth, "get_current_datetime", lambda *a, **k: moment.replace(tzinfo=None)
        )

    return shift


def session_of(role_arn: str, **extra: Any) -> dict[str, str]:
    credentials = client("sts").assume_role(
        RoleArn=role_arn, RoleSessionName="strict-test", **extra
    )["Credentials"]
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }


# --------------------------------------------------------------------------- signatures


# The codes and statuses of each protocol: AWS's common errors
# (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html), S3's error table
# (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html) and, for JSON 1.1
# services, the status AWS answers (https://github.com/spring-attic/spring-cloud-aws/issues/492).
UNKNOWN_KEY = {
    "redshift-serverless": ("UnrecognizedClientException", 400),
    "sts": ("InvalidClientTokenId", 403),
    "s3": ("InvalidAccessKeyId", 403),
}
WRONG_SECRET = {
    "redshift-serverless": ("InvalidSignatureException", 400),
    "sts": ("SignatureDoesNotMatch", 403),
    "s3": ("SignatureDoesNotMatch", 403),
}
WRONG_TOKEN = {
    "redshift-serverless": ("UnrecognizedClientException", 400),
    "sts": ("InvalidClientTokenId", 403),
    "s3": ("InvalidToken", 400),
}
SKEWED = {
    "redshift-serverless": ("InvalidSignatureException", 400),
    "sts": ("SignatureDoesNotMatch", 403),
    "s3": ("RequestTimeTooSkewed", 403),
}
EXPIRED = {
    "redshift-serverless": ("ExpiredTokenException", 400),
    "sts": ("ExpiredToken", 403),
    "s3": ("ExpiredToken", 400),
}


@pytest.mark.parametrize("service", sorted(_CALLS))
def test_an_access_key_nobody_holds_is_refused(sandbox: Sandbox, service: str) -> None:
    stranger = {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": "x" * 40}
    code, status, message = refusal(lambda: _CALLS[service](client(service, stranger)))
    assert (code, status) == UNKNOWN_KEY[service]
    if service != "s3":
        assert message == "The security token included in the request is invalid."


@pytest.mark.parametrize("service", sorted(_CALLS))
def test_a_wrong_secret_key_is_refused(sandbox: Sandbox, service: str) -> None:
    wrong = {
        "aws_access_key_id": sandbox.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": sandbox.env["AWS_SECRET_ACCESS_KEY"][:-1] + "?",
    }
    code, status, message = refusal(lambda: _CALLS[service](client(service, wrong)))
    assert (code, status) == WRONG_SECRET[service]
    assert message.startswith(_SIGNATURE_MISMATCH)


@pytest.mark.parametrize("service", sorted(_CALLS))
def test_a_session_token_that_does_not_match_is_refused(sandbox: Sandbox, service: str) -> None:
    keys = session_of(make_role("strict-token", allow("*")))
    for token in (None, keys["aws_session_token"][:-4] + "AAAA"):
        wrong = {**keys, "aws_session_token": token} if token else {
            k: v for k, v in keys.items() if k != "aws_session_token"
        }
        code, status, _ = refusal(lambda w=wrong: _CALLS[service](client(service, w)))  # type: ignore[misc]
        assert (code, status) == WRONG_TOKEN[service]


@pytest.mark.parametrize("service", sorted(_CALLS))
def test_a_request_signed_too_far_from_the_servers_clock_is_refused(
    sandbox: Sandbox, service: str, signing_clock: Callable[[float], None]
) -> None:
    # SigV4 requests are valid for 5 minutes around the server's time; S3 allows 15
    # (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html).
    signing_clock(-20 * 60 if service == "s3" else -6 * 60)
    code, status, message = refusal(lambda: _CALLS[service](client(service)))
    assert (code, status) == SKEWED[service]
    if service != "s3":
        assert message.startswith("Signature expired: ")
        assert message.endswith(" - 5 min.)")


def test_s3_accepts_a_request_ten_minutes_off(
    sandbox: Sandbox, signing_clock: Callable[[float], None]
) -> None:
    # S3's window is 15 minutes
    # (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html).
    signing_clock(-10 * 60)
    assert "Buckets" in client("s3").list_buckets()


@pytest.mark.parametrize("service", sorted(_CALLS))
def test_expired_session_credentials_are_refused(
    sandbox: Sandbox, service: str, signing_clock: Callable[[float], None]
) -> None:
    # STS credentials last DurationSeconds (botocore/data/sts/2011-06-15/service-2.json,
    # AssumeRoleRequest); the sandbox's clock and the client's move past the 900 s.
    keys = session_of(make_role("strict-expiry", allow("*")), DurationSeconds=900)
    sandbox.set_aws_clock_offset(1000)
    signing_clock(1000)
    code, status, _ = refusal(lambda: _CALLS[service](client(service, keys)))
    assert (code, status) == EXPIRED[service]


def test_the_internal_user_agent_grants_nothing(sandbox: Sandbox) -> None:
    config = Config(user_agent_extra="rsauth-sandbox-internal", retries={"total_max_attempts": 1})
    forged = boto3.session.Session(
        aws_access_key_id="AKIASANDBOXINTERNAL0", aws_secret_access_key="sandbox-internal"
    ).client("sts", config=config)
    code, status, _ = refusal(forged.get_caller_identity)
    assert (code, status) == ("SignatureDoesNotMatch", 403)


def test_a_bad_signature_never_gets_a_database_password(sandbox: Sandbox) -> None:
    # GetCredentials: botocore/data/redshift-serverless/2021-04-21/service-2.json.
    before = len(sandbox.issued_passwords())
    wrong = {
        "aws_access_key_id": sandbox.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": "not-the-secret",
    }
    rs = client("redshift-serverless", wrong)
    code, _, _ = refusal(lambda: rs.get_credentials(workgroupName=sandbox.workgroup))
    assert code == "InvalidSignatureException"
    assert len(sandbox.issued_passwords()) == before


def test_presigned_s3_urls_are_verified(sandbox: Sandbox) -> None:
    # Query-string SigV4 (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html).
    import urllib.error
    import urllib.request

    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
    bucket = unique("strict-presign")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a b.txt", Body=b"hello")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a b.txt"})
    with urllib.request.urlopen(url) as response:  # noqa: S310 - the sandbox, on loopback
        assert response.read() == b"hello"
    tampered = url.replace("a%20b.txt", "other.txt")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(tampered)  # noqa: S310 - the sandbox, on loopback
    assert caught.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in caught.value.read()
    short = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "a b.txt"}, ExpiresIn=60
    )
    sandbox.set_aws_clock_offset(120)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(short)  # noqa: S310 - the sandbox, on loopback
    assert caught.value.code == 403
    assert b"<Message>Request has expired</Message>" in caught.value.read()


# --------------------------------------------------------------------------- identity policies


@pytest.fixture
def secret(sandbox: Sandbox) -> Iterator[str]:
    arn = client("secretsmanager").create_secret(
        Name=unique("strict-secret"), SecretString='{"username": "u", "password": "p"}'
    )["ARN"]
    yield str(arn)
    client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def test_an_identity_policy_allows_exactly_what_it_names(sandbox: Sandbox, secret: str) -> None:
    # The AccessDenied text names identity, action and resource
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html).
    name = unique("strict-reader")
    keys = make_user(name, allow("secretsmanager:GetSecretValue", secret))
    sm = client("secretsmanager", keys)
    assert sm.get_secret_value(SecretId=secret)["SecretString"]
    code, status, message = refusal(lambda: sm.describe_secret(SecretId=secret))
    assert (code, status) == ("AccessDeniedException", 400)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform: "
        f"secretsmanager:DescribeSecret on resource: {secret} because no identity-based "
        "policy allows the secretsmanager:DescribeSecret action"
    )


def test_a_secret_named_by_name_is_decided_on_its_full_arn(sandbox: Sandbox, secret: str) -> None:
    # Secrets Manager authorizes on the secret's ARN, with its 6-character suffix, however
    # the request names it (https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_iam-permissions.html).
    name = secret.rsplit(":", 1)[1][:-7]
    keys = make_user(unique("strict-byname"), allow(
        "secretsmanager:GetSecretValue",
        f"arn:aws:secretsmanager:{sandbox.region}:{ACCOUNT}:secret:{name}-??????",
    ))
    sm = client("secretsmanager", keys)
    assert sm.get_secret_value(SecretId=name)["ARN"] == secret
    assert sm.get_secret_value(SecretId=secret.rsplit("-", 1)[0])["ARN"] == secret


def test_a_user_without_policies_is_refused(sandbox: Sandbox, secret: str) -> None:
    # GetCredentials is decided on the workgroup's ARN
    # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonredshiftserverless.html).
    name = unique("strict-nobody")
    keys = make_user(name)
    workgroup = client("redshift-serverless").get_workgroup(workgroupName=sandbox.workgroup)
    code, _, message = refusal(
        lambda: client("redshift-serverless", keys).get_credentials(
            workgroupName=sandbox.workgroup
        )
    )
    assert code == "AccessDeniedException"
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform: "
        "redshift-serverless:GetCredentials on resource: "
        f"{workgroup['workgroup']['workgroupArn']} because no identity-based policy allows "
        "the redshift-serverless:GetCredentials action"
    )
    # Calls outside the decided list are open to any authenticated caller.
    assert client("sts", keys).get_caller_identity()["Arn"].endswith(f":user/{name}")


def test_an_unsigned_request_is_refused(sandbox: Sandbox) -> None:
    # MissingAuthenticationToken, 403 (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html).
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the sandbox, on loopback
        sandbox.aws_url, data=b"Action=GetCallerIdentity&Version=2011-06-15", method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)  # noqa: S310 - the sandbox, on loopback
    assert caught.value.code == 403
    assert b"<Code>MissingAuthenticationToken</Code>" in caught.value.read()


def test_an_explicit_deny_wins(sandbox: Sandbox, secret: str) -> None:
    # "An explicit deny in any of these policies overrides the allow"
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
    keys = make_user(
        unique("strict-denied"),
        allow("secretsmanager:*", "*"),
        {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": secret},
    )
    sm = client("secretsmanager", keys)
    assert sm.describe_secret(SecretId=secret)["ARN"] == secret
    code, _, message = refusal(lambda: sm.get_secret_value(SecretId=secret))
    assert code == "AccessDeniedException"
    assert message.endswith("with an explicit deny in an identity-based policy")


def test_wildcards_in_actions_and_resources(sandbox: Sandbox) -> None:
    # "*" and "?" in Action and Resource, actions case-insensitive
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html).
    keys = make_user(
        unique("strict-wild"),
        allow("Redshift-Serverless:get?orkgroup", f"arn:aws:redshift-serverless:*:{ACCOUNT}:*"),
        allow("redshift-serverless:GetCred*", "arn:aws:redshift-serverless:us-*:*:workgroup/*"),
    )
    rs = client("redshift-serverless", keys)
    assert rs.get_workgroup(workgroupName=sandbox.workgroup)["workgroup"]
    assert rs.get_credentials(workgroupName=sandbox.workgroup)["dbUser"].startswith("IAM:")
    code, _, message = refusal(lambda: rs.get_namespace(namespaceName=sandbox.namespace))
    assert code == "AccessDeniedException"
    assert ":namespace/" in message


def test_not_action_allows_everything_else(sandbox: Sandbox, secret: str) -> None:
    # NotAction (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html).
    keys = make_user(
        unique("strict-notaction"),
        {"Effect": "Allow", "NotAction": "secretsmanager:*", "Resource": "*"},
    )
    assert client("redshift-serverless", keys).get_workgroup(workgroupName=sandbox.workgroup)
    code, _, _ = refusal(lambda: client("secretsmanager", keys).get_secret_value(SecretId=secret))
    assert code == "AccessDeniedException"


def test_attached_managed_policies_count_and_detaching_takes_effect(
    sandbox: Sandbox, secret: str
) -> None:
    # Managed policies: CreatePolicy, AttachUserPolicy, DetachUserPolicy
    # (botocore/data/iam/2010-05-08/service-2.json).
    iam = client("iam")
    name = unique("strict-managed")
    keys = make_user(name)
    policy = iam.create_policy(
        PolicyName=unique("strict-read"),
        PolicyDocument=document(allow("secretsmanager:GetSecretValue", secret)),
    )["Policy"]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=policy)
    sm = client("secretsmanager", keys)
    assert sm.get_secret_value(SecretId=secret)
    iam.detach_user_policy(UserName=name, PolicyArn=policy)
    assert refusal(lambda: sm.get_secret_value(SecretId=secret))[0] == "AccessDeniedException"


def test_kms_keys_are_resources(sandbox: Sandbox) -> None:
    # kms:GenerateDataKey and kms:Decrypt on the key ARN
    # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awskeymanagementservice.html).
    key = client("kms").create_key()["KeyMetadata"]["Arn"]
    keys = make_user(unique("strict-kms"), allow("kms:GenerateDataKey", key))
    kms = client("kms", keys)
    blob = kms.generate_data_key(KeyId=key, KeySpec="AES_256")["CiphertextBlob"]
    code, _, message = refusal(lambda: kms.decrypt(CiphertextBlob=blob))
    assert code == "AccessDeniedException"
    assert f"kms:Decrypt on resource: {key}" in message


def test_s3_objects_and_buckets_are_resources(sandbox: Sandbox) -> None:
    # s3:GetObject on arn:aws:s3:::bucket/key, s3:ListBucket on the bucket
    # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html).
    bucket = unique("strict-bucket")
    s3 = client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="open/a.txt", Body=b"a")
    s3.put_object(Bucket=bucket, Key="closed/b.txt", Body=b"b")
    name = unique("strict-s3")
    keys = make_user(name, allow("s3:GetObject", f"arn:aws:s3:::{bucket}/open/*"))
    mine = client("s3", keys)
    assert mine.get_object(Bucket=bucket, Key="open/a.txt")["Body"].read() == b"a"
    code, status, message = refusal(lambda: mine.get_object(Bucket=bucket, Key="closed/b.txt"))
    assert (code, status) == ("AccessDenied", 403)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform: s3:GetObject "
        f'on resource: "arn:aws:s3:::{bucket}/closed/b.txt" because no identity-based policy '
        "allows the s3:GetObject action"
    )
    assert refusal(lambda: mine.list_objects_v2(Bucket=bucket))[:2] == ("AccessDenied", 403)
    assert refusal(lambda: mine.put_object(Bucket=bucket, Key="open/c", Body=b""))[0] == (
        "AccessDenied"
    )


# --------------------------------------------------------------------------- roles


def test_assuming_a_role_that_does_not_exist_is_refused(sandbox: Sandbox) -> None:
    # STS answers AccessDenied (403) naming caller and role
    # (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html).
    role = f"arn:aws:iam::{ACCOUNT}:role/{unique('strict-missing')}"
    code, status, message = refusal(
        lambda: client("sts").assume_role(RoleArn=role, RoleSessionName="strict")
    )
    assert (code, status) == ("AccessDenied", 403)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/sandbox-admin is not authorized to perform: "
        f"sts:AssumeRole on resource: {role}"
    )


def test_a_role_that_does_not_trust_the_caller_is_refused_even_to_the_creator(
    sandbox: Sandbox,
) -> None:
    # The trust policy is the role's resource-based policy; the creator's Allow * does
    # not override it (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_terms-and-concepts.html).
    other = f"arn:aws:iam::{ACCOUNT}:user/{unique('strict-other')}"
    role = make_role(unique("strict-distrust"), trust_policy=trust(aws=[other]))
    code, _, message = refusal(
        lambda: client("sts").assume_role(RoleArn=role, RoleSessionName="strict")
    )
    assert code == "AccessDenied"
    assert message.endswith(f"sts:AssumeRole on resource: {role}")


def test_a_trust_in_the_account_needs_the_callers_own_permission(sandbox: Sandbox) -> None:
    # Within one account, a trust policy naming the account defers to the caller's
    # identity policies; one naming the caller's ARN suffices on its own
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_policy-eval-basics.html).
    iam = client("iam")
    name = unique("strict-assumer")
    keys = make_user(name)
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/{name}"
    by_account = make_role(unique("strict-account"))
    by_name = make_role(unique("strict-named"), trust_policy=trust(aws=[user_arn]))
    sts = client("sts", keys)
    assert refusal(
        lambda: sts.assume_role(RoleArn=by_account, RoleSessionName="s1")
    )[0] == "AccessDenied"
    assert sts.assume_role(RoleArn=by_name, RoleSessionName="s2")["Credentials"]
    iam.put_user_policy(
        UserName=name, PolicyName="assume",
        PolicyDocument=document(allow("sts:AssumeRole", by_account)),
    )
    assert sts.assume_role(RoleArn=by_account, RoleSessionName="s3")["Credentials"]


def test_session_tags_need_sts_tag_session(sandbox: Sandbox) -> None:
    # Passing session tags needs sts:TagSession in the trust policy
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html#id_session-tags_permissions-required).
    only_assume = document({
        "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "sts:AssumeRole",
    })
    role = make_role(unique("strict-notag"), trust_policy=only_assume)
    sts = client("sts")
    assert sts.assume_role(RoleArn=role, RoleSessionName="untagged")["Credentials"]
    code, _, message = refusal(lambda: sts.assume_role(
        RoleArn=role, RoleSessionName="tagged", Tags=[{"Key": "RedshiftDbRoles", "Value": "x"}]
    ))
    assert code == "AccessDenied"
    assert f"sts:TagSession on resource: {role}" in message


def test_a_session_has_its_roles_permissions_only(sandbox: Sandbox) -> None:
    # An assumed role's session is evaluated against the role's policies
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles.html).
    bare = make_role(unique("strict-bare"), allow("sts:GetCallerIdentity"))
    keys = session_of(bare)
    code, _, message = refusal(lambda: client("redshift-serverless", keys).get_credentials(
        workgroupName=sandbox.workgroup
    ))
    assert code == "AccessDeniedException"
    assert message.startswith(f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{bare.split('/')[-1]}/")
    login = session_of(make_role(unique("strict-login")))
    credentials = client("redshift-serverless", login).get_credentials(
        workgroupName=sandbox.workgroup
    )
    assert credentials["dbUser"].startswith("IAMR:strict-login-")


def test_a_session_policy_narrows_the_role(sandbox: Sandbox) -> None:
    # Session policies limit the role's permissions
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies.html#policies_session).
    role = make_role(unique("strict-narrow"))
    keys = session_of(
        role, Policy=document(allow("redshift-serverless:GetWorkgroup", "*"))
    )
    rs = client("redshift-serverless", keys)
    assert rs.get_workgroup(workgroupName=sandbox.workgroup)
    code, _, _ = refusal(lambda: rs.get_credentials(workgroupName=sandbox.workgroup))
    assert code == "AccessDeniedException"


def test_deny_still_refuses_get_credentials(sandbox: Sandbox) -> None:
    sandbox.deny("IAM:sandbox-admin")
    code, _, _ = refusal(
        lambda: client("redshift-serverless").get_credentials(workgroupName=sandbox.workgroup)
    )
    assert code == "AccessDeniedException"


# --------------------------------------------------------------------------- evaluation off


@pytest.fixture(scope="module")
def loose() -> Iterator[Sandbox]:
    with Sandbox(enforce_iam=False) as sb:
        yield sb


def test_with_evaluation_off_a_policy_less_user_gets_through(
    loose: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in loose.env.items():
        monkeypatch.setenv(key, value)
    # boto3's default session keeps the keys it first read: those of another sandbox.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    keys = make_user(unique("loose-user"))
    credentials = client("redshift-serverless", keys).get_credentials(
        workgroupName=loose.workgroup
    )
    assert credentials["dbUser"].startswith("IAM:loose-user-")
    missing = f"arn:aws:iam::{ACCOUNT}:role/{unique('loose-missing')}"
    assert client("sts", keys).assume_role(RoleArn=missing, RoleSessionName="loose")
    wrong = {**keys, "aws_secret_access_key": "wrong"}
    assert refusal(lambda: client("sts", wrong).get_caller_identity())[0] == (
        "SignatureDoesNotMatch"
    )


def test_the_foreground_sandbox_enforces_policies_made_through_iam(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "rsauth.sandbox"], stdout=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                monkeypatch.setenv(key, value.strip("'"))
            if "Ctrl-C" in line:
                break
        # boto3's default session keeps the keys it first read: those of another sandbox.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        name = unique("foreground-user")
        keys = make_user(name)
        rs = client("redshift-serverless", keys)
        code, _, _ = refusal(lambda: rs.get_credentials(workgroupName="default-workgroup"))
        assert code == "AccessDeniedException"
        client("iam").put_user_policy(
            UserName=name, PolicyName="login",
            PolicyDocument=document(allow("redshift-serverless:GetCredentials", "*")),
        )
        assert rs.get_credentials(workgroupName="default-workgroup")["dbUser"] == f"IAM:{name}"
    finally:
        process.terminate()
        process.wait(60)
        process.stdout.close()
