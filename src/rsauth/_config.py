"""Typed configuration: explicit argument, then ``RSAUTH_*`` environment, then default.

Everything a call can be configured with is listed once, in ``SETTINGS``. It is
resolved on every call (never frozen when a Broker is made) and validated
before any network call; a bad value is a :class:`ConfigurationError` that
names the field, the value and what is accepted.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from cachetools import LRUCache

from rsauth._errors import ConfigurationError, python_only
from rsauth._fork import call_in_child

__all__ = [
    "METHODS",
    "SETTINGS",
    "UNSET",
    "Options",
    "Setting",
    "Unset",
    "check_host",
    "checked_region",
    "control_characters",
    "is_region_name",
    "is_workgroup_name",
    "resolve",
    "resolve_region",
]


class Unset:
    """Type of :data:`UNSET`: "not given", where ``None`` would be a value. (Not an Enum:
    defining one costs a sixth of a millisecond at import.)"""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()

METHODS: Final = ("auto", "iam", "secret", "superuser", "password")

DURATION_MIN: Final = 900
DURATION_MAX: Final = 3600

# How long a connect that reached the workgroup waits for its answer while compute
# resumes. AWS documents no resume time: Serverless bills no compute while idle and
# meters per second once queries run
# (https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-billing.html), and says
# new connections work "instantly" only of version updates
# (https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-known-issues.html).
# Users of auto-pausing serverless databases report first connects of about 20 s
# (github.com/jeremydaly/data-api-client/issues/99) and tools that fail them on a short
# connect timeout (github.com/jeremydaly/data-api-client/issues/40); clients for
# Serverless wait a resuming workgroup out (github.com/posit-dev/positron/pull/14830).
# Two minutes covers "tens of seconds" several times over and still ends a hang.
RESUME_TIMEOUT_DEFAULT: Final = 120.0
RESUME_TIMEOUT_MAX: Final = 3600.0


def _pattern(text: str, flags: int = 0) -> Callable[[], re.Pattern[str]]:
    """``re.compile(text, flags)``, made on the first call: a pattern that the first
    ``iam`` connect does not use costs nothing at import."""
    return functools.cache(lambda: re.compile(text, flags))


# C0 controls (NUL, tab, newline, ESC, ...), DEL and the C1 controls: never part of a
# name, a password or a path rsauth passes on.
control_characters: Final = _pattern(r"[\x00-\x1f\x7f-\x9f]")

# Patterns compile on first use. Workgroup and region names, which every workgroup connect
# checks, are simple enough for str methods (see is_workgroup_name and is_region_name).
# Workgroup names: botocore/data/redshift-serverless/2021-04-21/service-2.json,
# shape WorkgroupName (3-64, ^[a-z0-9-]+$).
_WORKGROUP_CHARACTERS: Final = "abcdefghijklmnopqrstuvwxyz0123456789-"
# Role path and name: https://docs.aws.amazon.com/IAM/latest/APIReference/API_Role.html;
# the whole ARN is STS's arnType, 20-2048 characters
# (botocore/data/sts/2011-06-15/service-2.json). re.ASCII: no other script's letters/digits.
_ROLE_ARN = _pattern(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}", re.ASCII)
_ARN_MAX: Final = 2048
# SecretIdType: 1-2048 (botocore/data/secretsmanager/2017-10-17/service-2.json).
_SECRET_ID_MAX: Final = 2048
_DB_ROLE = _pattern(r"[A-Za-z_][A-Za-z0-9_$.\-]{0,126}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = _pattern(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\.?")
# Redshift names (databases, users): UTF-8 printable characters, 1 to 127 bytes
# (https://docs.aws.amazon.com/redshift/latest/dg/r_names.html).
_NAME_BYTES: Final = 127
# A region is a host label, as botocore.utils.validate_region_name checks it (that check
# raises InvalidRegionError from deep inside client creation, and its "$" lets a
# trailing newline through): ASCII letters, digits, hyphens, not all digits, no hyphen at
# either end, at most 63 characters.
_REGION_CHARACTERS: Final = _WORKGROUP_CHARACTERS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PROVISIONED_HOST = _pattern(r".*\.redshift\.amazonaws\.com(\.cn)?\.?", re.IGNORECASE)
# The RedshiftDbRoles session tag joins role names with ":"; STS caps a tag value at 256.
_TAG_VALUE_MAX: Final = 256


def is_workgroup_name(value: str) -> bool:
    """Whether ``value`` fully matches ``[a-z0-9-]{3,64}`` (without compiling a regex at
    import: stripping the allowed characters leaves nothing only if there is no other)."""
    return 3 <= len(value) <= 64 and not value.strip(_WORKGROUP_CHARACTERS)


def is_region_name(value: str) -> bool:
    """Whether ``value`` fully matches ``(?![0-9]+\\Z)(?!-)[A-Za-z0-9-]{1,63}(?<!-)``."""
    return (
        1 <= len(value) <= 63
        and not value.strip(_REGION_CHARACTERS)
        and not value.isdigit()  # only ASCII characters are left: isdigit() means 0-9
        and value[0] != "-"
        and value[-1] != "-"
    )


def _string(name: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise ConfigurationError(f"{name}={_shown(raw)}: expected a non-empty string")
    return raw


def _text(name: str, raw: object) -> str:
    """Free text (a profile name): anything printed on one line."""
    value = _string(name, raw)
    if control_characters().search(value):
        raise ConfigurationError(
            f"{name}={value!r}: a control character (newline, NUL, ...) cannot be part of it"
        )
    return value


def _password(name: str, raw: object) -> str:
    # Never repeats the value, whatever is wrong with it.
    if not isinstance(raw, str) or not raw:
        raise ConfigurationError(f"{name}: expected a non-empty string, got {type(raw).__name__}")
    if control_characters().search(raw):
        raise ConfigurationError(
            f"{name}: a control character (newline, NUL, ...) cannot be part of a password"
        )
    return raw


def _redshift_name(name: str, raw: object) -> str:
    value = _string(name, raw)
    if not value.isprintable() or len(value.encode("utf-8", "surrogatepass")) > _NAME_BYTES:
        raise ConfigurationError(
            f"{name}={_shown(raw)}: a Redshift name is 1 to {_NAME_BYTES} bytes (UTF-8) of "
            "printable characters"
        )
    return value


def _secret_id(name: str, raw: object) -> str:
    if not isinstance(raw, str) or not (1 <= len(raw) <= _SECRET_ID_MAX) or not (
        raw.isascii() and raw.isprintable()
    ):
        raise ConfigurationError(
            f"{name}={_shown(raw)}: a secret name or ARN is 1 to {_SECRET_ID_MAX} printable "
            "ASCII characters"
        )
    return raw


def _shown(raw: object, limit: int = 80) -> str:
    """``repr`` of a value, cut short: a refused 2 KB string need not be repeated whole."""
    text = repr(raw)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _region(name: str, raw: object) -> str:
    if not isinstance(raw, str) or not is_region_name(raw):
        raise ConfigurationError(
            f"{name}={_shown(raw)}: an AWS region such as 'eu-west-1' is a host label: 1 to "
            "63 ASCII letters, digits and hyphens, not all digits, no hyphen first or last"
        )
    return raw


def _workgroup(name: str, raw: object) -> str:
    value = _string(name, raw)
    if not is_workgroup_name(value):
        raise ConfigurationError(
            f"{name}={value!r}: a workgroup name is 3 to 64 characters of "
            "lowercase letters a-z, digits 0-9 and hyphens '-'"
        )
    return value


def _custom_domain(name: str, raw: object) -> str:
    value = _string(name, raw)
    if not _HOSTNAME().fullmatch(value) or "." not in value:
        raise ConfigurationError(
            f"{name}={value!r}: expected a fully qualified DNS name such as 'redshift.example.com'"
        )
    return value


def _method(name: str, raw: object) -> str:
    value = _string(name, raw).lower()
    if value not in METHODS:
        raise ConfigurationError(
            f"{name}={raw!r}: unknown login method; accepted: {', '.join(METHODS)}"
        )
    return value


def _whole_number(raw: object) -> int | None:
    """An int, or a string of ASCII digits (``"²".isdigit()`` is true too); else None."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        return int(raw)
    return None


def _duration(name: str, raw: object) -> int:
    value = _whole_number(raw)
    if value is None or not DURATION_MIN <= value <= DURATION_MAX:
        raise ConfigurationError(
            f"{name}={raw!r}: expected a whole number of seconds from "
            f"{DURATION_MIN} to {DURATION_MAX}"
        )
    return value


def _seconds(name: str, raw: object) -> float:
    value: float | None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    else:
        value = None
    if value is None or not 0 < value <= RESUME_TIMEOUT_MAX:
        raise ConfigurationError(
            f"{name}={_shown(raw)}: expected a number of seconds greater than 0 and at most "
            f"{RESUME_TIMEOUT_MAX:g}"
        )
    return value


def _role_arn(name: str, raw: object) -> str:
    value = _string(name, raw)
    if len(value) > _ARN_MAX or not _ROLE_ARN().fullmatch(value):
        raise ConfigurationError(
            f"{name}={_shown(value)}: expected an IAM role ARN such as "
            "'arn:aws:iam::123456789012:role/RedshiftAdmin' (ASCII letters, digits and "
            f"+=,.@_-/ in the path and name; at most {_ARN_MAX} characters)"
        )
    return value


def _db_roles(name: str, raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: Sequence[object] = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, Sequence):
        items = raw
    else:
        raise ConfigurationError(f"{name}={raw!r}: expected a list of database role names")
    roles: list[str] = []
    for role in items:
        if not isinstance(role, str) or not _DB_ROLE().fullmatch(role):
            raise ConfigurationError(
                f"{name}: {role!r} is not a database role name; accepted: 1 to 127 "
                "characters of letters, digits, '_', '$', '.', '-', not starting with a digit"
            )
        roles.append(role)
    if len(":".join(roles)) > _TAG_VALUE_MAX:
        raise ConfigurationError(
            f"{name}: the role names joined with ':' must fit in {_TAG_VALUE_MAX} characters "
            "(the limit of the RedshiftDbRoles session tag)"
        )
    return tuple(roles)


def _port(name: str, raw: object) -> int:
    value = _whole_number(raw)
    if value is None or not 1 <= value <= 65535:
        raise ConfigurationError(f"{name}={raw!r}: expected a TCP port from 1 to 65535")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r}: expected True or False")


def check_host(name: str, raw: object) -> str:
    """Validate a database host: a DNS name or an IP address; a provisioned cluster
    endpoint is refused."""
    value = _string(name, raw)
    if not _HOSTNAME().fullmatch(value) and not _is_ip_address(value):
        raise ConfigurationError(
            f"{name}={_shown(value)}: expected a DNS name such as 'db.example.com' "
            "(ASCII letters, digits, hyphens and dots) or an IP address"
        )
    if _PROVISIONED_HOST().fullmatch(value) and "redshift-serverless" not in value.lower():
        raise ConfigurationError(
            f"{name}={value!r} is a provisioned Redshift cluster endpoint; rsauth is for "
            "Redshift Serverless workgroups. Pass workgroup= (or the workgroup's "
            "'*.redshift-serverless.amazonaws.com' endpoint) instead"
        )
    return value


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class Setting:
    """One configurable value: where it is read from and how it is checked. (A plain class:
    a frozen dataclass costs about a millisecond to define at import.)"""

    __slots__ = ("default", "env", "name", "parse")

    def __init__(
        self, name: str, env: str | None, default: object, parse: Callable[[str, object], object]
    ) -> None:
        self.name = name
        self.env = env
        self.default = default
        self.parse = parse


# The whole configuration surface, in resolution order per row:
# explicit argument, then the environment variable, then the default.
SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("workgroup", "RSAUTH_WORKGROUP", None, _workgroup),
    Setting("custom_domain", "RSAUTH_CUSTOM_DOMAIN", None, _custom_domain),
    Setting("database", "RSAUTH_DATABASE", None, _redshift_name),
    Setting("method", "RSAUTH_METHOD", "auto", _method),
    Setting("duration", "RSAUTH_DURATION", DURATION_MIN, _duration),
    Setting("secret_id", "RSAUTH_SECRET_ID", None, _secret_id),
    Setting("role_arn", "RSAUTH_ROLE_ARN", None, _role_arn),
    Setting("db_roles", None, (), _db_roles),
    Setting("user", None, None, _redshift_name),
    Setting("password", None, None, _password),
    Setting("host", None, None, check_host),
    Setting("port", None, None, _port),
    Setting("region", None, None, _region),
    Setting("profile", None, None, _text),
    Setting("fallback", None, False, _bool),
    Setting("resume_timeout", "RSAUTH_RESUME_TIMEOUT", RESUME_TIMEOUT_DEFAULT, _seconds),
)

SETTING_NAMES: Final = frozenset(setting.name for setting in SETTINGS)
SETTINGS_BY_NAME: Final = {setting.name: setting for setting in SETTINGS}


# The fields of Options, in the order of its arguments.
_OPTION_FIELDS: Final = (
    "method", "workgroup", "custom_domain", "database", "duration", "secret_id", "role_arn",
    "db_roles", "user", "password", "host", "port", "region", "profile", "fallback",
    "resume_timeout",
)


class Options:
    """The resolved, validated options of one call. ``method`` is never ``"auto"``.

    Read-only (resolutions are cached and shared); equal and hashed by its values, as the
    frozen dataclass it replaces was. Never part of a cache key: it may hold the password
    (a resolution with a password is not cached, see :func:`resolve`). ``repr`` leaves
    the password out. (Written out by hand:
    as a frozen dataclass or a NamedTuple it cost most of a millisecond to define at
    import.)
    """

    __slots__ = (*_OPTION_FIELDS, "_values")

    method: str
    workgroup: str | None
    custom_domain: str | None
    database: str | None
    duration: int
    secret_id: str | None
    role_arn: str | None
    db_roles: tuple[str, ...]
    user: str | None
    password: str | None
    host: str | None
    port: int | None
    region: str | None
    profile: str | None
    fallback: bool
    resume_timeout: float
    _values: tuple[Any, ...]

    def __init__(
        self,
        method: str,
        workgroup: str | None = None,
        custom_domain: str | None = None,
        database: str | None = None,
        duration: int = DURATION_MIN,
        secret_id: str | None = None,
        role_arn: str | None = None,
        db_roles: tuple[str, ...] = (),
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        region: str | None = None,
        profile: str | None = None,
        fallback: bool = False,
        resume_timeout: float = RESUME_TIMEOUT_DEFAULT,
    ) -> None:
        values = (
            method, workgroup, custom_domain, database, duration, secret_id, role_arn,
            db_roles, user, password, host, port, region, profile, fallback, resume_timeout,
        )
        setter = object.__setattr__
        for name, value in zip(_OPTION_FIELDS, values, strict=True):
            setter(self, name, value)
        setter(self, "_values", values)  # what equality and the hash compare

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Options are read-only: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Options are read-only: cannot delete {name!r}")

    def __reduce__(self) -> tuple[type[Options], tuple[Any, ...]]:
        # copy and pickle rebuild it through __init__ (setting attributes is refused).
        return Options, self._values

    @property
    def target(self) -> str:
        """How messages name the database this call is for."""
        if self.custom_domain:
            return f"custom domain {self.custom_domain!r}"
        if self.workgroup:
            return f"workgroup {self.workgroup!r}"
        return f"host {self.host!r}"

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` (field names as keywords)."""
        return Options(**{**dict(zip(_OPTION_FIELDS, self._values, strict=True)), **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Options):
            return NotImplemented
        return self._values == other._values

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={value!r}"
            for name, value in zip(_OPTION_FIELDS, self._values, strict=True)
            if name != "password"
        )
        return f"Options({shown})"



_ENV_NAMES: Final = tuple(setting.env for setting in SETTINGS if setting.env)
# Every variable a call's resolution reads: the settings' and the region's.
CALL_ENVIRON: Final = (*_ENV_NAMES, "AWS_REGION", "AWS_DEFAULT_REGION")


def environ_seen(environ: Mapping[str, str]) -> tuple[Any, ...]:
    """The raw values of :data:`CALL_ENVIRON` in ``environ``, to tell whether any changed."""
    if isinstance(environ, ProcessEnviron):
        return environ.snapshot(CALL_ENVIRON)
    return tuple([environ.get(name) for name in CALL_ENVIRON])


# Recent resolutions, keyed by the arguments and the environment they read: resolving
# is pure, and a service calling connect() with the same arguments repeats it.
_RESOLVED: LRUCache[tuple[Any, ...], Options] = LRUCache(maxsize=256)
_RESOLVED_LOCK = threading.Lock()


def _fresh_after_fork() -> None:
    # A thread of the parent may have held the lock, mid-update of the cache, at fork time.
    global _RESOLVED, _RESOLVED_LOCK
    _RESOLVED = LRUCache(maxsize=256)
    _RESOLVED_LOCK = threading.Lock()


call_in_child(_fresh_after_fork)


def given_settings(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The login settings given among a function's ``locals()`` (``None``: not given):
    entry points that spell out their keywords (for typing and help) forward them
    with this in one line. A setting an entry point does not take is not given."""
    return {
        name: value for name in SETTING_NAMES if (value := namespace.get(name)) is not None
    }


def resolve(arguments: Mapping[str, Any], environ: Mapping[str, str]) -> Options:
    """Resolve every setting from ``arguments`` (``None`` or UNSET: not given) and ``environ``."""
    if arguments.get("password") is not None:  # never keep a password in a cache key
        return _resolve(arguments, environ)
    try:
        seen = (
            environ.snapshot(_ENV_NAMES)
            if isinstance(environ, ProcessEnviron)
            else tuple(environ.get(name) for name in _ENV_NAMES)
        )
        key = (tuple(sorted(arguments.items())), seen)
        hash(key)
    except TypeError:  # an unhashable argument (a list of db_roles): resolve afresh
        return _resolve(arguments, environ)
    with _RESOLVED_LOCK:
        found = _RESOLVED.get(key)
    if found is None:
        found = _resolve(arguments, environ)  # raises for bad input: nothing is stored
        with _RESOLVED_LOCK:
            _RESOLVED[key] = found
    return found


def _resolve(arguments: Mapping[str, Any], environ: Mapping[str, str]) -> Options:
    unknown = set(arguments) - SETTING_NAMES
    if unknown:
        raise ConfigurationError(f"unknown option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = arguments.get(setting.name, UNSET)
        label = setting.name
        if raw is None or raw is UNSET:
            raw = environ.get(setting.env, UNSET) if setting.env else UNSET
            label = setting.env or setting.name
            if raw == "":
                raw = UNSET
        values[setting.name] = setting.default if raw is UNSET else setting.parse(label, raw)
    values["method"] = _choose_method(values)
    _check_combination(values)
    return Options(**values)


def _choose_method(values: Mapping[str, Any]) -> str:
    method: str = values["method"]
    if method != "auto":
        return method
    if values["user"] is not None and values["password"] is not None:
        return "password"
    if values["secret_id"] is not None:
        return "secret"
    return "iam"


def _check_combination(values: Mapping[str, Any]) -> None:
    method = values["method"]
    where = values["workgroup"] or values["custom_domain"]
    if method == "password":
        if values["user"] is None or values["password"] is None:
            raise ConfigurationError(
                "method='password' needs both user= and password=; "
                "or leave them out and use method='iam' or 'secret'"
            )
        if not where and values["host"] is None:
            raise ConfigurationError(
                "method='password' needs workgroup=, custom_domain= or host= "
                "to know where to connect"
            )
        return
    if values["password"] is not None:
        raise ConfigurationError(
            f"password= is only used by method='password' (this call resolved to {method!r}); "
            "pass user= and password= together, or neither"
        )
    if values["user"] is not None:
        raise ConfigurationError(
            f"user= is not used by method={method!r}: the database user comes from the IAM "
            "identity; pass user= and password= for method='password'"
        )
    if method in {"iam", "superuser"}:
        if not where:
            raise ConfigurationError(
                f"method={method!r} needs workgroup= (or RSAUTH_WORKGROUP) or custom_domain="
            )
        if values["secret_id"] is not None:
            raise ConfigurationError(f"secret_id= is only used by method='secret', not {method!r}")
    if method == "secret":
        if values["secret_id"] is None and not values["workgroup"]:
            raise ConfigurationError(
                "method='secret' needs secret_id= or workgroup= (whose namespace's "
                "Redshift-managed admin secret is then used)"
            )
        if values["db_roles"]:
            raise ConfigurationError("db_roles= is only used by method='iam' or 'superuser'")
    if values["db_roles"] and values["role_arn"] is None:
        raise ConfigurationError(
            "db_roles= is passed as a session tag when assuming role_arn=; give role_arn= too"
        )


# Regions already found well-formed (a process uses one or a few): the check runs on
# every call, before the cache, and a set lookup costs a fraction of the regex.
_GOOD_REGIONS: set[str] = set()


def checked_region(source: str, region: str) -> str:
    """``region`` if it is a well-formed region name, else a ConfigurationError naming
    ``source`` (where it came from)."""
    if region not in _GOOD_REGIONS:
        _region(source, region)
        if len(_GOOD_REGIONS) < 64:
            _GOOD_REGIONS.add(region)
    return region


def resolve_region(
    explicit: str | None,
    broker_default: str | None,
    environ: Mapping[str, str],
    session_region: str | Callable[[], str | None] | None,
) -> str:
    """Region: argument > ``Broker(region=)`` > AWS_REGION > AWS_DEFAULT_REGION > the profile's.

    ``session_region`` may be a callable, asked only when nothing before it gave a region
    (reading the profile's region costs several microseconds on every call otherwise).
    """
    for source, candidate in (
        ("region", explicit),
        ("Broker(region=)", broker_default),
        ("AWS_REGION", environ.get("AWS_REGION")),
        ("AWS_DEFAULT_REGION", environ.get("AWS_DEFAULT_REGION")),
    ):
        if candidate:
            return checked_region(source, candidate)
    profile_region = session_region() if callable(session_region) else session_region
    if profile_region:
        return checked_region("the profile's region", profile_region)
    raise ConfigurationError(
        f"no AWS region: pass region=, {python_only('Broker(region=), ')}set AWS_REGION or "
        "AWS_DEFAULT_REGION, or give the profile a region"
    )


class ProcessEnviron(Mapping[str, str]):
    """``os.environ``, read on every call, without its cost for missing keys.

    ``os.environ.get`` raises and catches a KeyError inside for every variable
    that is not set, which is most ``RSAUTH_*`` ones; looking the encoded key up
    in its underlying dict does the same read at a fraction of the cost.
    """

    def __getitem__(self, key: str) -> str:
        return os.environ[key]

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)

    def __init__(self) -> None:
        self._encoded: dict[str, Any] = {}
        self._encoded_names: dict[tuple[str, ...], tuple[Any, ...]] = {}

    def get(self, key: str, default: Any = None) -> Any:
        environ: Any = os.environ
        data = getattr(environ, "_data", None)
        if data is None:  # not CPython's os._Environ: take the ordinary path
            return os.environ.get(key, default)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._encoded[key] = environ.encodekey(key)
        value = data.get(encoded)
        return default if value is None else environ.decodevalue(value)

    def snapshot(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        """The raw values of ``names`` (undecoded), to tell whether any has changed."""
        data = getattr(os.environ, "_data", None)
        if data is None:
            return tuple(os.environ.get(name) for name in names)
        keys = self._encoded_names.get(names)
        if keys is None:
            keys = self._encoded_names[names] = tuple(map(os.environ.encodekey, names))
        return tuple(map(data.get, keys))


PROCESS_ENVIRON = ProcessEnviron()
