"""Which fields a task type protects, and the envelope a protected value is
stored as (docs/privacy.md §1–§2). Pure: no keys, no database.

A :class:`TaskPolicy` names, for one task type, the subjects its data is
about (a personal subject, e.g. a client, or a confidential one, e.g. a deal
or a desk, each read from a plain payload field) and the fields it protects
in the submission's ``payload``, the completion's ``result`` and the steps'
``content``, each of class ``personal`` or ``confidential``. A field named
``*`` is the whole part (a step's content may be any JSON value).

Task types without a policy are stored exactly as before: nothing here
touches their events.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ledger import errors

PERSONAL = "personal"
CONFIDENTIAL = "confidential"
CLASSES = (PERSONAL, CONFIDENTIAL)

# The single key of a protected value's object, stored and shown.
MARK = "$protected"
ENVELOPE_VERSION = 1
ALG = "A256GCM"

# Which part of which event a field lives in.
PARTS = {"TaskSubmitted": "payload", "TaskCompleted": "result", "TaskStepRecorded": "content"}
WHOLE = "*"

# Roles that read a protected value in clear (docs/privacy.md §4); agents only
# in tasks they submitted or worked (reveal.readable). Auditors and admins see
# the marker: verifying the ledger needs no personal data.
READERS: dict[str, frozenset[str]] = {
    PERSONAL: frozenset({"agent", "officer"}),
    CONFIDENTIAL: frozenset({"agent", "officer"}),
}

SUBJECT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}:[\x21-\x7e]{1,200}$")


@dataclass(frozen=True, slots=True)
class Protected:
    part: str  # payload | result | content
    name: str  # a top-level key of that part, or "*" for the whole part
    kind: str  # personal | confidential

    @property
    def pointer(self) -> str:
        """The field's place in the event's data, as a JSON pointer."""
        return f"/{self.part}" if self.name == WHOLE else f"/{self.part}/{_escape(self.name)}"


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    task_type: str
    # class -> (subject prefix, the payload field holding the subject's id)
    subjects: dict[str, tuple[str, str]]
    fields: tuple[Protected, ...]
    # days after a finished task's last event that its protected fields expire
    retention_days: int | None = None
    rule: str = ""  # the retention rule's name, recorded when it applies

    def __post_init__(self) -> None:
        for p in self.fields:
            if p.kind not in self.subjects:
                raise ValueError(f"{self.task_type}: {p.pointer} is {p.kind}, with no subject")
        subject_fields = {f for _prefix, f in self.subjects.values()}
        for p in self.fields:
            if p.part == "payload" and (p.name in subject_fields or p.name == WHOLE):
                raise ValueError(f"{self.task_type}: a subject's id field cannot be protected")

    def subjects_of(self, payload: dict[str, Any]) -> dict[str, str]:
        """class -> subject id, from the submission's payload (422 when missing)."""
        out: dict[str, str] = {}
        for kind, (prefix, name) in self.subjects.items():
            value = payload.get(name)
            subject = f"{prefix}:{value}" if isinstance(value, str | int) else ""
            if isinstance(value, bool) or not SUBJECT_RE.match(subject):
                raise errors.InvalidInput(
                    f"payload.{name}: task type {self.task_type} protects {kind} fields "
                    f"per {prefix}; give the {prefix}'s id (1-200 printable ASCII characters)",
                    errors=[{"field": f"payload.{name}", "rule": "subject", "message": "missing"}],
                )
            out[kind] = subject
        return out

    def in_part(self, part: str) -> list[Protected]:
        return [p for p in self.fields if p.part == part]


@dataclass(slots=True)
class Registry:
    """The task types with protected fields, by name."""

    policies: dict[str, TaskPolicy] = field(default_factory=dict)

    def get(self, task_type: str) -> TaskPolicy | None:
        return self.policies.get(task_type)

    def with_retention(self) -> list[TaskPolicy]:
        return [p for p in self.policies.values() if p.retention_days is not None]


def _p(part: str, name: str, kind: str) -> Protected:
    return Protected(part, name, kind)


# The ledger's declarations (docs/privacy.md §1 lists them). Retention rules:
# MiFIR art. 25 keeps order records five years; SEC 17a-4 six.
REGISTRY = Registry(
    {
        "kyc_review": TaskPolicy(
            "kyc_review",
            subjects={PERSONAL: ("client", "client_id")},
            fields=(
                _p("payload", "client_name", PERSONAL),
                _p("payload", "date_of_birth", PERSONAL),
                _p("payload", "address", PERSONAL),
                _p("result", "findings", PERSONAL),
                _p("content", WHOLE, PERSONAL),
            ),
            retention_days=5 * 365,
            rule="mifir-5y",
        ),
        "deal_terms_review": TaskPolicy(
            "deal_terms_review",
            subjects={CONFIDENTIAL: ("deal", "deal_id")},
            fields=(
                _p("payload", "counterparty", CONFIDENTIAL),
                _p("payload", "terms", CONFIDENTIAL),
                _p("result", "recommendation", CONFIDENTIAL),
                _p("content", WHOLE, CONFIDENTIAL),
            ),
            retention_days=6 * 365,
            rule="sec-17a-4-6y",
        ),
        "client_exposure_review": TaskPolicy(
            "client_exposure_review",
            subjects={PERSONAL: ("client", "client_id"), CONFIDENTIAL: ("desk", "desk")},
            fields=(
                _p("payload", "client_name", PERSONAL),
                _p("payload", "limits", CONFIDENTIAL),
                _p("result", "exposure", CONFIDENTIAL),
            ),
            retention_days=6 * 365,
            rule="sec-17a-4-6y",
        ),
    }
)


# -- envelopes -------------------------------------------------------------------


def is_envelope(value: Any) -> bool:
    """A stored protected value: ``{"$protected": {"v": 1, "kid": ..., "ct": ...}}``."""
    if type(value) is not dict or len(value) != 1 or MARK not in value:
        return False
    inner = value[MARK]
    return (
        type(inner) is dict
        and inner.get("v") == ENVELOPE_VERSION
        and isinstance(inner.get("kid"), str)
        and isinstance(inner.get("ct"), str)
    )


def contains_mark(value: Any) -> bool:
    """True when ``value`` holds an object with a ``$protected`` key anywhere."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            if MARK in v:
                return True
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
    return False


def envelopes(value: Any) -> Iterator[dict[str, Any]]:
    """Every envelope's inner object in ``value``, depth first."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            if is_envelope(v):
                yield v[MARK]
            else:
                stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)


def transform(value: Any, show: Callable[[dict[str, Any]], Any]) -> Any:
    """``value`` with each envelope replaced by ``show(inner)``; containers
    without one come back as the same objects (nothing copied)."""
    if type(value) is dict:
        if is_envelope(value):
            return show(value[MARK])
        out = None
        for k, v in value.items():
            nv = transform(v, show)
            if nv is not v:
                out = out if out is not None else dict(value)
                out[k] = nv
        return value if out is None else out
    if type(value) is list:
        items = [transform(v, show) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def marker(inner: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    """What a reader who may not (or can no longer) read a value sees."""
    shown = {k: inner[k] for k in ("class", "subject", "field") if k in inner}
    return {MARK: {**shown, "status": status, **extra}}


def seal_data(
    policy: TaskPolicy,
    event_type: str,
    data: dict[str, Any],
    seal: Callable[[Protected, Any], dict[str, Any]],
) -> dict[str, Any]:
    """``data`` with the policy's fields of this event replaced by ``seal(field,
    value)``; the same object when the event protects nothing."""
    part = PARTS.get(event_type)
    if part is None or part not in data:
        return data
    targets = policy.in_part(part)
    if not targets:
        return data
    value = data[part]
    for p in targets:
        if p.name == WHOLE:
            return {**data, part: seal(p, value)}
    if type(value) is not dict:
        return data
    sealed = dict(value)
    for p in targets:
        if p.name in sealed:
            sealed[p.name] = seal(p, sealed[p.name])
    return {**data, part: sealed}


def needs_sealing(policy: TaskPolicy, event_type: str, data: dict[str, Any]) -> set[str]:
    """The classes of the fields this event would seal."""
    part = PARTS.get(event_type)
    if part is None or part not in data:
        return set()
    value = data[part]
    return {
        p.kind
        for p in policy.in_part(part)
        if p.name == WHOLE or (type(value) is dict and p.name in value)
    }


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
