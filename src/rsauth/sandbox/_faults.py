"""Control-plane faults: throttling, server errors, latency and denied identities.

A rendezvous holds the first call of each of several operations until one call of
every one of them has arrived (or a timeout passes), and records whether they
met: proof that a client made those calls side by side, not one after another.

A fault applies to the next ``count`` matching calls, or to a ``fraction`` of
them drawn from a seeded generator so runs repeat. ``operation`` narrows a
fault to one operation (``"GetCredentials"``) or one service's operation
(``"secretsmanager.GetSecretValue"``); by default every AWS call matches.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from rsauth.sandbox._errors import ApiError
from rsauth.sandbox._identity import normalize_identity


@dataclass
class _Rule:
    kind: str
    operation: str | None
    count: int | None
    fraction: float | None
    seconds: float = 0.0
    jitter: float = 0.0

    def matches(self, service: str, operation: str) -> bool:
        return self.operation is None or self.operation in (operation, f"{service}.{operation}")


@dataclass
class _Rendezvous:
    operations: tuple[str, ...]
    timeout: float
    arrived: list[str] = field(default_factory=list)
    met: bool = False
    # A held call waited out the timeout: whoever arrives later came too late to meet.
    missed: bool = False
    everyone: threading.Event = field(default_factory=threading.Event)

    def expects(self, service: str, operation: str) -> str | None:
        """The name under which this call is expected, if it is and has not arrived yet."""
        for name in self.operations:
            if name in (operation, f"{service}.{operation}") and name not in self.arrived:
                return name
        return None


@dataclass
class PlaneFaults:
    seed: int | None = None
    # Guards the rules and the generator: request threads consult them concurrently.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rules: list[_Rule] = field(default_factory=list)
    _denied: set[str] = field(default_factory=set)
    _random: random.Random = field(default_factory=random.Random)
    injected: dict[str, int] = field(default_factory=dict)
    _rendezvous: _Rendezvous | None = None

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def reset(self, seed: int | None = None) -> None:
        with self._lock:
            self._rules.clear()
            self._denied.clear()
            self.injected.clear()
            if self._rendezvous is not None:
                self._rendezvous.everyone.set()  # release anyone still held
            self._rendezvous = None
            self._random.seed(self.seed if seed is None else seed)

    def add(
        self,
        kind: str,
        *,
        count: int | None = None,
        fraction: float | None = None,
        operation: str | None = None,
        seconds: float = 0.0,
        jitter: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if kind not in ("throttle", "server_error", "latency"):
            raise ValueError(f"unknown fault kind {kind!r}: use throttle, server_error or latency")
        if kind != "latency" and (count is None) == (fraction is None):
            raise ValueError(f"{kind}: give exactly one of count= or fraction=")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
        with self._lock:
            if seed is not None:
                self._random.seed(seed)
            self._rules.append(_Rule(kind, operation, count, fraction, seconds, jitter))

    def rendezvous(self, operations: list[str], timeout: float) -> None:
        """Hold the first call of each of ``operations`` until one of every one has arrived,
        or ``timeout`` seconds (a deadlock guard: calls made one after another never meet)."""
        if len(operations) < 2 or not 0 < timeout <= 300:
            raise ValueError("rendezvous: give two or more operations and 0 < timeout <= 300")
        with self._lock:
            self._rendezvous = _Rendezvous(tuple(operations), timeout)

    def rendezvous_result(self) -> dict[str, object] | None:
        """Whether the calls met, and which arrived, in order; ``None`` when none was set."""
        with self._lock:
            meeting = self._rendezvous
            if meeting is None:
                return None
            return {"met": meeting.met, "arrived": list(meeting.arrived)}

    def _meet(self, service: str, operation: str) -> None:
        with self._lock:
            meeting = self._rendezvous
            name = meeting.expects(service, operation) if meeting is not None else None
            if meeting is None or name is None:
                return
            meeting.arrived.append(name)
            if len(meeting.arrived) == len(meeting.operations):
                meeting.met = not meeting.missed
                meeting.everyone.set()
            if meeting.missed:
                return
        if not meeting.everyone.wait(meeting.timeout):
            with self._lock:
                meeting.missed = True

    def deny(self, identity: str) -> None:
        with self._lock:
            self._denied.add(normalize_identity(identity))

    def allow(self, identity: str) -> None:
        with self._lock:
            self._denied.discard(normalize_identity(identity))

    def _fires(self, rule: _Rule) -> bool:
        if rule.count is not None:
            if rule.count <= 0:
                return False
            rule.count -= 1
            return True
        if rule.fraction is not None:
            return self._random.random() < rule.fraction
        return True

    def before_call(self, service: str, operation: str) -> None:
        """Meet at the rendezvous, sleep for latency rules, then raise the first error fault
        that fires."""
        self._meet(service, operation)
        delay = 0.0
        error: ApiError | None = None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(service, operation):
                    continue
                if rule.kind == "latency":
                    if self._fires(rule):
                        delay += rule.seconds + self._random.uniform(0.0, rule.jitter)
                elif error is None and self._fires(rule):
                    error = _error_for(rule.kind)
                    self.injected[rule.kind] = self.injected.get(rule.kind, 0) + 1
        if delay:
            time.sleep(delay)
        if error is not None:
            raise error

    def check_denied(self, principal_arn: str, workgroup_arn: str) -> None:
        with self._lock:
            denied = normalize_identity(principal_arn) in self._denied
        if denied:
            raise ApiError(
                "AccessDeniedException",
                f"User: {principal_arn} is not authorized to perform: "
                f"redshift-serverless:GetCredentials on resource: {workgroup_arn} "
                "because no identity-based policy allows the "
                "redshift-serverless:GetCredentials action",
            )


def _error_for(kind: str) -> ApiError:
    if kind == "throttle":
        return ApiError("ThrottlingException", "Rate exceeded", 400, fault="throttle")
    return ApiError(
        "InternalServerException",
        "The service encountered an internal error.",
        500,
        fault="server_error",
    )
