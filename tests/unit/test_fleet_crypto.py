"""Fleet mode's pure logic: bindings, key derivation, the envelope, key modes (no servers)."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from rsauth import ConfigurationError
from rsauth._fleet._crypto import (
    FORMAT_VERSION,
    IDENTITY_CONTEXT,
    MIN_DISTINCT_BYTES,
    Binding,
    EntryRejected,
    FleetKey,
    KmsKey,
    binding_identity,
    derive,
    encryption_context,
    normalise_identity,
    parse_fleet_key,
)

KEY = bytes(range(32))
BINDING = Binding(
    identity="arn:aws:iam::123456789012:role/etl",
    region="eu-west-1",
    workgroup="analytics",
    custom_domain=None,
    database="dev",
    method="iam",
    duration=900,
    role_arn="arn:aws:iam::123456789012:role/etl",
    db_roles=("analyst",),
    secret_id=None,
)
CHANGED: dict[str, Any] = {
    "identity": "arn:aws:iam::123456789012:role/other",
    "region": "us-east-1",
    "workgroup": "reporting",
    "custom_domain": "db.example.com",
    "database": "prod",
    "method": "superuser",
    "duration": 3600,
    "role_arn": "arn:aws:iam::123456789012:role/other",
    "db_roles": ("analyst", "etl"),
    "secret_id": "app/login",
}


def no_kms() -> Any:
    raise AssertionError("fleet-key mode never calls KMS")


def test_every_field_is_bound() -> None:
    assert set(CHANGED) == {f.name for f in dataclasses.fields(Binding)}
    sealer = FleetKey(KEY)
    blob = sealer.seal(BINDING, b"login", no_kms)
    assert sealer.open(BINDING, blob, no_kms) == b"login"
    for name, value in CHANGED.items():
        other = dataclasses.replace(BINDING, **{name: value})
        assert other.canonical() != BINDING.canonical()
        assert sealer.store_key(other) != sealer.store_key(BINDING)
        with pytest.raises(EntryRejected, match="authentication failed"):
            sealer.open(other, blob, no_kms)


def test_canonical_binding_is_stable_sorted_json() -> None:
    document = json.loads(BINDING.canonical())
    assert document["v"] == FORMAT_VERSION
    assert document["db_roles"] == ["analyst"]
    assert BINDING.canonical() == dataclasses.replace(BINDING).canonical()
    assert list(document) == sorted(document)


def test_envelope_layout_and_tampering() -> None:
    sealer = FleetKey(KEY)
    blob = sealer.seal(BINDING, b"secret login", no_kms)
    assert blob[0] == FORMAT_VERSION
    assert blob[1:2] == b"F"
    assert blob[2:4] == b"\x00\x00"
    assert len(blob) == 4 + 12 + len(b"secret login") + 16
    assert b"secret login" not in blob
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= 0x80
        with pytest.raises(EntryRejected):
            sealer.open(BINDING, bytes(tampered), no_kms)
    with pytest.raises(EntryRejected, match="too short"):
        sealer.open(BINDING, b"\x01", no_kms)
    with pytest.raises(EntryRejected, match="truncated"):
        sealer.open(BINDING, blob[:20], no_kms)
    # Two seals of the same login differ (a fresh nonce each time).
    assert sealer.seal(BINDING, b"secret login", no_kms) != blob


def test_another_fleet_key_cannot_open() -> None:
    blob = FleetKey(KEY).seal(BINDING, b"login", no_kms)
    with pytest.raises(EntryRejected):
        FleetKey(bytes(range(1, 33))).open(BINDING, blob, no_kms)


def test_key_derivation() -> None:
    assert derive(KEY, "a") == derive(KEY, "a")
    assert derive(KEY, "a") != derive(KEY, "b")
    assert derive(KEY, "a") != derive(bytes(range(1, 33)), "a")
    assert len(derive(KEY, "a")) == 32
    # The store key is an HMAC under a subkey: not the binding, not a plain hash of it.
    store_key = FleetKey(KEY).store_key(BINDING)
    assert len(store_key) == 64
    assert "etl" not in store_key
    assert store_key != KmsKey("alias/x").store_key(BINDING)


def test_fleet_key_parsing() -> None:
    assert parse_fleet_key(KEY, source="k") == KEY
    assert parse_fleet_key(base64.b64encode(KEY).decode(), source="k") == KEY
    assert parse_fleet_key(base64.urlsafe_b64encode(KEY).decode().rstrip("="), source="k") == KEY
    assert parse_fleet_key(KEY.hex(), source="k") == KEY
    assert parse_fleet_key(f"  {KEY.hex().upper()}\n", source="k") == KEY


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"short", "5 bytes"),
        (bytes(range(33)), "33 bytes"),
        (bytes(range(32)).hex()[:-2], "hex"),
        (base64.b64encode(bytes(range(48))).decode(), "48 bytes"),
        (base64.b64encode(bytes(range(24))).decode(), "24 bytes"),
        ("not a key!", "neither"),
        (bytes(32), "distinct"),
        (b"ab" * 16, "distinct"),
        (bytes(range(15)) * 2 + b"\x00\x01", "distinct"),
        ((bytes(range(15)) * 3)[:32].hex(), "distinct"),
        ("0" * 64, "distinct"),
        (base64.b64encode(b"\xff" * 32).decode(), "distinct"),
    ],
)
def test_weak_or_malformed_fleet_keys_are_refused(value: bytes | str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason) as raised:
        parse_fleet_key(value, source="RSAUTH_SHARED_CACHE_KEY")
    message = str(raised.value)
    assert "RSAUTH_SHARED_CACHE_KEY" in message
    assert 'python -c "import secrets; print(secrets.token_hex(32))"' in message
    text = value if isinstance(value, str) else value.decode("latin-1")
    assert text.strip() not in message
    assert repr(value) not in message


@pytest.mark.parametrize(
    ("arn", "identity"),
    [
        (
            "arn:aws:sts::123456789012:assumed-role/etl/rsauth-41-1700000000",
            "arn:aws:iam::123456789012:role/etl",
        ),
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/etl/i-0abc",
            "arn:aws-us-gov:iam::123456789012:role/etl",
        ),
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
    ],
)
def test_sessions_of_one_role_are_one_identity(arn: str, identity: str) -> None:
    assert normalise_identity(arn) == identity


SESSION = "arn:aws:sts::123456789012:assumed-role/etl/alice"
ROLE = "arn:aws:iam::123456789012:role/etl"


@pytest.mark.parametrize(
    ("role_arn", "share", "identity"),
    [
        (None, False, SESSION),  # the caller's own session: its tags may be its own
        (None, True, ROLE),  # opted in: every session of the role carries the same tags
        (ROLE, False, ROLE),  # rsauth assumed it: the tags are db_roles=, in the binding
        (ROLE, True, ROLE),
    ],
)
def test_the_binding_names_the_session_unless_its_tags_are_known(
    role_arn: str | None, share: bool, identity: str
) -> None:
    assert binding_identity(SESSION, role_arn=role_arn, share_role_sessions=share) == identity
    user = "arn:aws:iam::123456789012:user/alice"
    assert binding_identity(user, role_arn=role_arn, share_role_sessions=share) == user


def test_kms_context_names_the_role_of_a_session() -> None:
    kms = FakeKms()
    binding = dataclasses.replace(BINDING, identity=SESSION)
    KmsKey("alias/rsauth").seal(binding, b"login", lambda: kms)
    # The key policy's ${aws:PrincipalArn} of a session is its role's ARN.
    assert kms._keys[b"wrapped-0"][1][IDENTITY_CONTEXT] == ROLE


class FakeKms:
    """Pure logic only: a data key per call, unwrapped only with the same context."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.key_ids: list[str] = []
        self._keys: dict[bytes, tuple[bytes, dict[str, str]]] = {}

    def generate_data_key(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("GenerateDataKey")
        self.key_ids.append(kwargs["KeyId"])
        assert kwargs["KeySpec"] == "AES_256"
        wrapped = f"wrapped-{len(self._keys)}".encode()
        plaintext = bytes([len(self._keys) % 256]) * 32
        self._keys[wrapped] = (plaintext, kwargs["EncryptionContext"])
        return {"Plaintext": plaintext, "CiphertextBlob": wrapped}

    def decrypt(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("Decrypt")
        self.key_ids.append(kwargs["KeyId"])
        plaintext, context = self._keys[kwargs["CiphertextBlob"]]
        if context != kwargs["EncryptionContext"]:
            raise PermissionError("InvalidCiphertextException")
        return {"Plaintext": plaintext}


def test_kms_mode_binds_the_data_key_to_the_identity() -> None:
    kms = FakeKms()
    writer, reader = KmsKey("alias/rsauth"), KmsKey("alias/rsauth")
    blob = writer.seal(BINDING, b"login", lambda: kms)
    assert blob[1:2] == b"K"
    context = kms._keys[b"wrapped-0"][1]
    assert context[IDENTITY_CONTEXT] == BINDING.identity
    assert reader.open(BINDING, blob, lambda: kms) == b"login"
    assert reader.open(BINDING, blob, lambda: kms) == b"login"
    assert kms.calls == ["GenerateDataKey", "Decrypt"]  # data keys are remembered
    other = dataclasses.replace(BINDING, identity="arn:aws:iam::123456789012:role/other")
    with pytest.raises(EntryRejected, match="KMS did not unwrap"):
        KmsKey("alias/rsauth").open(other, blob, lambda: kms)
    # One data key per identity while it is fresh.
    writer.seal(BINDING, b"again", lambda: kms)
    assert kms.calls.count("GenerateDataKey") == 1
    with pytest.raises(EntryRejected, match="another key mode"):
        FleetKey(KEY).open(BINDING, blob, no_kms)
    assert set(kms.key_ids) == {"alias/rsauth"}


def test_a_worker_opens_what_it_sealed_without_asking_kms() -> None:
    kms = FakeKms()
    sealer = KmsKey("alias/rsauth")
    blob = sealer.seal(BINDING, b"login", lambda: kms)
    assert sealer.open(BINDING, blob, lambda: kms) == b"login"
    assert kms.calls == ["GenerateDataKey"]


def test_opened_data_keys_are_bounded_oldest_first() -> None:
    kms = FakeKms()
    writer, reader = KmsKey("alias/rsauth"), KmsKey("alias/rsauth")
    bindings = [
        dataclasses.replace(BINDING, identity=f"arn:aws:iam::123456789012:role/r{n}")
        for n in range(257)
    ]
    for binding in bindings:
        reader.open(binding, writer.seal(binding, b"login", lambda: kms), lambda: kms)
    assert len(reader._opened) == 256
    kept = [identity for identity, _ in reader._opened]
    assert kept == [binding.identity for binding in bindings[1:]]


# An entry sealed by this format version, and its store key: every worker running the same
# format version must read them, whichever release it runs (a fleet upgrades one worker at
# a time). Pins the subkey derivation, the associated data and the canonical binding.
SEALED_V1 = bytes.fromhex(
    "0146000026cd92eb01cb097969239bfed71d8db99e0763dccbcf50c3d12e7973975c703df6"
)
STORE_KEY_V1 = "8d858d3a14b5206edda646414b67e0d9a6f36e8c7cd40e77a7158ef662704c7b"
KMS_STORE_KEY_V1 = "a249ed5e0433ad3cf9da1cd07e0a8bb4a4a3554d28e737c903f6274464ae2ce0"


def test_entries_of_this_format_version_stay_readable() -> None:
    sealer = FleetKey(KEY)
    assert sealer.open(BINDING, SEALED_V1, no_kms) == b"login"
    assert sealer.store_key(BINDING) == STORE_KEY_V1
    assert KmsKey("alias/x").store_key(BINDING) == KMS_STORE_KEY_V1


def test_kms_context_says_what_the_data_key_is_for() -> None:
    assert encryption_context("arn:aws:iam::123456789012:role/etl") == {
        IDENTITY_CONTEXT: "arn:aws:iam::123456789012:role/etl",
        "rsauth:purpose": "shared-cache",
    }


def test_url_safe_base64_keys_with_both_substitutions() -> None:
    key = bytes(range(224, 256))
    text = base64.urlsafe_b64encode(key).decode()
    assert "-" in text
    assert "_" in text
    assert parse_fleet_key(text, source="k") == key


def test_a_key_with_exactly_the_minimum_of_distinct_bytes_is_taken() -> None:
    key = bytes(range(MIN_DISTINCT_BYTES)) * (32 // MIN_DISTINCT_BYTES)
    assert len(set(key)) == MIN_DISTINCT_BYTES
    assert parse_fleet_key(key, source="k") == key
