"""Sealing shared-cache entries: AES-GCM, bound to the login they hold.

An entry is sealed with AES-256-GCM (``cryptography``'s ``AESGCM``). Its
associated data is the envelope header plus the canonical :class:`Binding`:
the caller's identity, region, workgroup or custom domain, database, method,
duration, role and database roles, and secret id. An entry copied under
another binding's store key, or changed in any byte, fails to open.

Envelope, version 1::

    0      1      2          4                4+n         16+n
    | 0x01 | mode | n (u16) | wrapped key (n) | nonce (12) | ciphertext + tag (16) |

``mode`` is ``F`` (one fleet key, ``n`` = 0) or ``K`` (a KMS data key, wrapped
by KMS under the encryption context ``{"rsauth:identity": <principal>,
"rsauth:purpose": "shared-cache"}``, the principal being the identity's role for
an assumed-role session; a KMS key policy can require it to be the caller's own
``aws:PrincipalArn``).

Store keys are digests of the binding: HMAC-SHA-256 under a key derived from
the fleet key (fleet mode), SHA-256 (KMS mode). They hold no secret and no
readable ARN.

``cryptography`` is imported when a key is first used, never by ``import rsauth``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rsauth._errors import ConfigurationError

__all__ = [
    "FORMAT_VERSION",
    "IDENTITY_CONTEXT",
    "Binding",
    "EntryRejected",
    "FleetKey",
    "KmsKey",
    "Sealer",
    "binding_identity",
    "derive",
    "encryption_context",
    "normalise_identity",
    "parse_fleet_key",
]

FORMAT_VERSION = 1
IDENTITY_CONTEXT = "rsauth:identity"
_PURPOSE = ("rsauth:purpose", "shared-cache")
_NONCE = 12
_TAG = 16
_HEADER = struct.Struct(">BcH")
FLEET_KEY_BYTES = 32
# 32 random bytes take about 30 distinct values; fewer than 16 means a pattern, not a key.
MIN_DISTINCT_BYTES = 16
_MAKE_A_KEY = (
    'make one with `python -c "import secrets; print(secrets.token_hex(32))"`'
)

_ASSUMED_ROLE = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$")


class EntryRejected(Exception):
    """Internal: an entry that must not be used (malformed, tampered with, wrong binding or key)."""


def normalise_identity(arn: str) -> str:
    """An assumed-role session's ARN as its role's (``arn:aws:iam::<account>:role/<name>``,
    what IAM's ``aws:PrincipalArn`` says for a session); any other ARN as it is."""
    match = _ASSUMED_ROLE.match(arn)
    if match is None:
        return arn
    partition, account, role = match.groups()
    return f"arn:{partition}:iam::{account}:role/{role}"


def binding_identity(arn: str, *, role_arn: str | None, share_role_sessions: bool) -> str:
    """Whose entry a login is: the caller's session ARN, or its role's when every session
    of the role is known to carry the same database roles.

    Every session of a role logs in as the same ``IAMR:<role>`` user, but each session
    may carry its own ``RedshiftDbRoles`` tag, i.e. other database roles. A session
    rsauth assumed itself (``role_arn=``) carries exactly ``db_roles=``, which the
    binding holds; other sessions are shared only when ``share_role_sessions`` says
    their tags are identical (an instance or task role).
    """
    if role_arn is not None or share_role_sessions:
        return normalise_identity(arn)
    return arn


@dataclass(frozen=True)
class Binding:
    """What a shared entry belongs to. Never holds a secret; ``identity`` is an ARN."""

    identity: str
    region: str
    workgroup: str | None
    custom_domain: str | None
    database: str | None
    method: str
    duration: int
    role_arn: str | None
    db_roles: tuple[str, ...]
    secret_id: str | None

    def canonical(self) -> bytes:
        """Stable bytes of every field (sorted JSON), the associated data of the entry."""
        fields: dict[str, Any] = asdict(self)
        fields["db_roles"] = list(self.db_roles)
        fields["v"] = FORMAT_VERSION
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def encryption_context(identity: str) -> dict[str, str]:
    """The KMS encryption context of an identity's data keys."""
    return {IDENTITY_CONTEXT: identity, _PURPOSE[0]: _PURPOSE[1]}


def derive(key: bytes, purpose: str) -> bytes:
    """A 32-byte subkey of ``key`` for ``purpose`` (HKDF-SHA-256, RFC 5869)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = f"rsauth shared cache v{FORMAT_VERSION}: {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def parse_fleet_key(value: bytes | str, *, source: str) -> bytes:
    """The 32 bytes of a fleet key given as raw bytes, 64 hex digits or base64 (standard or
    URL-safe, padding optional). Refused, without repeating it: any other length, and keys
    whose bytes take fewer than ``MIN_DISTINCT_BYTES`` values (zeros, repeated patterns)."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[0-9a-fA-F]{64}", text):
            value = bytes.fromhex(text)
        else:
            try:
                value = base64.b64decode(
                    text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4),
                    validate=True,
                )
            except (binascii.Error, ValueError):
                raise ConfigurationError(
                    f"{source} is neither 64 hex digits nor base64; {_MAKE_A_KEY}"
                ) from None
            if len(value) != FLEET_KEY_BYTES:
                raise ConfigurationError(
                    f"{source} decodes to {len(value)} bytes; a fleet key is exactly "
                    f"{FLEET_KEY_BYTES} bytes (64 hex digits or base64); {_MAKE_A_KEY}"
                )
    if len(value) != FLEET_KEY_BYTES:
        raise ConfigurationError(
            f"{source} has {len(value)} bytes; a fleet key is exactly {FLEET_KEY_BYTES} "
            f"random bytes (or 64 hex digits, or base64 of 32 bytes); {_MAKE_A_KEY}"
        )
    if len(set(value)) < MIN_DISTINCT_BYTES:
        raise ConfigurationError(
            f"{source} is not random: its bytes take fewer than {MIN_DISTINCT_BYTES} distinct "
            f"values; {_MAKE_A_KEY}"
        )
    return bytes(value)


class Sealer:
    """Seals and opens entries; the key mode decides the store key and the data key."""

    mode: bytes = b"?"

    def describe(self) -> str:
        raise NotImplementedError

    def store_key(self, binding: Binding) -> str:
        raise NotImplementedError

    def _data_key(self, binding: Binding, kms: Callable[[], Any]) -> tuple[bytes, bytes]:
        """(AES key, wrapped form stored beside the entry) for sealing."""
        raise NotImplementedError

    def _unwrap(self, binding: Binding, wrapped: bytes, kms: Callable[[], Any]) -> bytes:
        raise NotImplementedError

    def seal(self, binding: Binding, plaintext: bytes, kms: Callable[[], Any]) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key, wrapped = self._data_key(binding, kms)
        header = _HEADER.pack(FORMAT_VERSION, self.mode, len(wrapped)) + wrapped
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(key).encrypt(nonce, plaintext, _aad(header, binding))
        return header + nonce + sealed

    def open(self, binding: Binding, blob: bytes, kms: Callable[[], Any]) -> bytes:
        """The plaintext, or :class:`EntryRejected` saying why not (never what it holds)."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(blob) < _HEADER.size:
            raise EntryRejected("too short")
        version, mode, length = _HEADER.unpack_from(blob)
        if version != FORMAT_VERSION:
            raise EntryRejected(f"format version {version}")
        if mode != self.mode:
            raise EntryRejected("sealed in another key mode")
        body = _HEADER.size + length
        if len(blob) < body + _NONCE + _TAG:
            raise EntryRejected("truncated")
        header, wrapped = blob[:body], blob[_HEADER.size : body]
        key = self._unwrap(binding, wrapped, kms)
        nonce, sealed = blob[body : body + _NONCE], blob[body + _NONCE :]
        try:
            return AESGCM(key).decrypt(nonce, sealed, _aad(header, binding))
        except InvalidTag:
            raise EntryRejected("authentication failed") from None


def _aad(header: bytes, binding: Binding) -> bytes:
    return header + b"\x00" + binding.canonical()


class FleetKey(Sealer):
    """One key for the whole fleet: every holder of it can open every entry (one trust domain)."""

    mode = b"F"

    def __init__(self, key: bytes) -> None:
        self._aead_key = derive(key, "aes-256-gcm")
        self._index_key = derive(key, "store key")

    def describe(self) -> str:
        return "fleet key"

    def store_key(self, binding: Binding) -> str:
        return hmac.new(self._index_key, binding.canonical(), hashlib.sha256).hexdigest()

    def _data_key(self, binding: Binding, kms: Callable[[], Any]) -> tuple[bytes, bytes]:
        return self._aead_key, b""

    def _unwrap(self, binding: Binding, wrapped: bytes, kms: Callable[[], Any]) -> bytes:
        if wrapped:
            raise EntryRejected("a fleet-key entry carries no wrapped key")
        return self._aead_key

    # A caller entry: which ARN an access key id belongs to, so that one worker per
    # access key asks STS. Sealed like an entry, its associated data naming the access
    # key id instead of a binding (a login entry never opens as one, nor one as another's).

    def caller_key(self, access_key: str) -> str:
        """The store key of ``access_key``'s caller entry (an HMAC: no readable key id)."""
        return hmac.new(self._index_key, _caller_aad(access_key), hashlib.sha256).hexdigest()

    def seal_caller(self, access_key: str, arn: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        header = _HEADER.pack(FORMAT_VERSION, self.mode, 0)
        nonce = os.urandom(_NONCE)
        plaintext = json.dumps({"access_key": access_key, "arn": arn}).encode()
        sealed = AESGCM(self._aead_key).encrypt(nonce, plaintext, header + _caller_aad(access_key))
        return header + nonce + sealed

    def open_caller(self, access_key: str, blob: bytes) -> str:
        """The ARN sealed for ``access_key``, or :class:`EntryRejected`."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        header = _HEADER.pack(FORMAT_VERSION, self.mode, 0)
        if len(blob) < len(header) + _NONCE + _TAG or blob[: len(header)] != header:
            raise EntryRejected("not a caller entry of this format")
        nonce, sealed = blob[len(header) : len(header) + _NONCE], blob[len(header) + _NONCE :]
        try:
            plaintext = AESGCM(self._aead_key).decrypt(
                nonce, sealed, header + _caller_aad(access_key)
            )
        except InvalidTag:
            raise EntryRejected("authentication failed") from None
        try:
            payload = json.loads(plaintext)
            arn = payload["arn"]
            claimed = payload["access_key"]
        except (ValueError, KeyError, TypeError):
            raise EntryRejected("malformed") from None
        if claimed != access_key or not isinstance(arn, str) or not arn.startswith("arn:"):
            raise EntryRejected("not this access key's")
        return arn


def _caller_aad(access_key: str) -> bytes:
    # NUL then a tag a binding's canonical JSON (which starts with "{") never begins with.
    return b"\x00caller:" + access_key.encode()


class KmsKey(Sealer):
    """Per-identity data keys from KMS, their encryption context naming the identity.

    A data key is reused for ``data_key_seconds`` per identity; unwrapped keys
    are remembered (bounded) so a worker asks KMS once per data key it meets.
    ``kms`` is the KMS client of the identity's own session, so a key policy on
    ``kms:EncryptionContext:rsauth:identity`` decides who can open what.
    """

    mode = b"K"

    def __init__(self, key_id: str, *, data_key_seconds: float = 3600.0) -> None:
        self.key_id = key_id
        self._data_key_seconds = data_key_seconds
        # Guards both key caches; never held while calling KMS.
        self._lock = threading.Lock()
        self._sealing: dict[str, tuple[float, bytes, bytes]] = {}
        self._opened: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    def describe(self) -> str:
        return f"KMS key {self.key_id}"

    def store_key(self, binding: Binding) -> str:
        return hashlib.sha256(b"rsauth shared cache v1\x00" + binding.canonical()).hexdigest()

    def _data_key(self, binding: Binding, kms: Callable[[], Any]) -> tuple[bytes, bytes]:
        now = time.monotonic()
        principal = normalise_identity(binding.identity)
        with self._lock:
            cached = self._sealing.get(principal)
        if cached is not None and now - cached[0] < self._data_key_seconds:
            return cached[1], cached[2]
        response = kms().generate_data_key(
            KeyId=self.key_id,
            KeySpec="AES_256",
            EncryptionContext=encryption_context(principal),
        )
        key, wrapped = bytes(response["Plaintext"]), bytes(response["CiphertextBlob"])
        with self._lock:
            self._sealing[principal] = (now, key, wrapped)
            self._remember(principal, wrapped, key)
        return key, wrapped

    def _unwrap(self, binding: Binding, wrapped: bytes, kms: Callable[[], Any]) -> bytes:
        if not wrapped:
            raise EntryRejected("no wrapped data key")
        principal = normalise_identity(binding.identity)
        with self._lock:
            key = self._opened.get((principal, wrapped))
        if key is not None:
            return key
        try:
            response = kms().decrypt(
                CiphertextBlob=wrapped,
                KeyId=self.key_id,
                EncryptionContext=encryption_context(principal),
            )
        except Exception as exc:
            # Denied (another identity's key), or a wrapped key that is not one: unusable.
            raise EntryRejected(f"KMS did not unwrap its data key ({type(exc).__name__})") from None
        key = bytes(response["Plaintext"])
        with self._lock:
            self._remember(principal, wrapped, key)
        return key

    def _remember(self, identity: str, wrapped: bytes, key: bytes) -> None:
        # Caller holds self._lock.
        self._opened[(identity, wrapped)] = key
        while len(self._opened) > 256:
            self._opened.popitem(last=False)

    def reset(self) -> None:
        """Forget the keys and the lock (a forked child)."""
        self._lock = threading.Lock()
        self._sealing = {}
        self._opened = OrderedDict()
