"""Hypothesis over task histories with protected fields and erasures (pure:
the sealing, the fold and what a reader sees, with the keys in memory).

* sealed or not, the fold moves the task the same way (it never looks inside
  a protected value), and revealing commutes with folding;
* with every key, a reader sees exactly the plain history;
* after erasures, exactly the forgotten subjects' values are erased, for
  every role, whatever the order the subjects were forgotten in; the rest
  reads as before, and the events' hashes do not move.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import canonical, tasks
from ledger.privacy import crypto
from ledger.privacy.fields import MARK, REGISTRY, Protected, envelopes, seal_data
from ledger.privacy.reveal import KeyState, readable, reveal

POLICY = REGISTRY.policies["kyc_review"]
SUBJECTS = ["C-1", "C-2", "C-3"]
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@st.composite
def histories(draw: Any) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """Tasks: (stream, client id, plain events), each a TaskSubmitted, a claim,
    some steps and maybe a completion."""
    out = []
    position = 0
    for n in range(draw(st.integers(1, 4))):
        stream = f"task-00000000-0000-7000-8000-{n:012d}"
        cid = draw(st.sampled_from(SUBJECTS))
        payload = {"client_id": cid, "client_name": draw(text), "jurisdiction": "GB"}
        if draw(st.booleans()):
            payload["date_of_birth"] = draw(text)
        plan: list[tuple[str, dict[str, Any]]] = [
            ("TaskSubmitted", {"task_type": "kyc_review", "payload": payload, "priority": 0}),
            ("TaskClaimed", {"worker": "w", "lease_expires_at": "2030-01-01T00:00:00.000000Z"}),
        ]
        for _ in range(draw(st.integers(0, 3))):
            safe = st.integers(-(2**53) + 1, 2**53 - 1)  # what the ledger accepts (SPEC §1)
            content = draw(st.one_of(text, st.dictionaries(text, safe, max_size=2)))
            plan.append(("TaskStepRecorded", {"kind": "note", "content": content}))
        if draw(st.booleans()):
            plan.append(("TaskCompleted", {"result": {"findings": draw(text), "score": 3}}))
        events = []
        for version, (etype, data) in enumerate(plan, 1):
            position += 1
            events.append(
                {
                    "stream": stream,
                    "version": version,
                    "position": position,
                    "type": etype,
                    "data": data,
                    "meta": {"actor": "a", "role": "agent", "request_id": "r"},
                    "recorded_at": f"2026-01-01T00:00:{position:02d}.000000Z",
                }
            )
        out.append((stream, cid, events))
    return out


def seal_all(
    history: list[tuple[str, str, list[dict[str, Any]]]],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, KeyState], dict[str, str]]:
    """Sealed events per stream, the live key states, and each key's subject."""
    sealed: dict[str, list[dict[str, Any]]] = {}
    states: dict[str, KeyState] = {}
    subject_of: dict[str, str] = {}
    for i, (stream, cid, events) in enumerate(history):
        kid, key = f"dk-{i:032x}", hashlib.sha256(stream.encode()).digest()
        states[kid], subject_of[kid] = KeyState(kid, key), f"client:{cid}"

        def one(p: Protected, value: Any, stream: str = stream, kid: str = kid) -> Any:
            return crypto.seal(
                states[kid].key or b"",
                stream=stream,
                field=p.pointer,
                kid=kid,
                subject=subject_of[kid],
                kind=p.kind,
                value=value,
            )

        sealed[stream] = [
            {**e, "data": seal_data(POLICY, e["type"], e["data"], one)} for e in events
        ]
    return sealed, states, subject_of


def forget(
    states: dict[str, KeyState], subject_of: dict[str, str], subject: str, position: int
) -> dict[str, KeyState]:
    return {
        k: KeyState(k, None, position, "SubjectForgotten") if subject_of[k] == subject else s
        for k, s in states.items()
    }


def may(role: str) -> frozenset[str]:
    """What ``role`` reads in clear in a task whose worker it is (agents: "w")."""
    return readable(role, "w", ["a", "w", None])


def test_agents_read_in_clear_only_the_tasks_they_submitted_or_worked() -> None:
    both = frozenset({"personal", "confidential"})
    assert readable("agent", "a", ["a", None, None]) == both  # the submitter
    assert readable("agent", "w", ["a", None, "w"]) == both  # the last worker
    assert readable("agent", "x", ["a", "w", "w"]) == frozenset()  # anyone else
    assert readable("officer", "o", []) == both
    assert readable("auditor", "a", ["a"]) == readable("admin", "a", ["a"]) == frozenset()


def marks(value: Any) -> list[dict[str, Any]]:
    """The inner objects of every ``$protected`` object in ``value`` (markers included)."""
    if isinstance(value, dict):
        if MARK in value:
            return [value[MARK]]
        return [m for v in value.values() for m in marks(v)]
    if isinstance(value, list):
        return [m for v in value for m in marks(v)]
    return []


def moves(state: tasks.TaskState | None) -> Any:
    v = tasks.view(state) if state else None
    return v and {k: v[k] for k in ("status", "version", "position", "attempts", "steps")}


@settings(max_examples=60, deadline=None)
@given(histories(), st.lists(st.sampled_from(SUBJECTS), unique=True), st.randoms())
def test_fold_with_protected_fields_and_erasures(
    history: list[tuple[str, str, list[dict[str, Any]]]], forgotten: list[str], rnd: Any
) -> None:
    sealed, states, subject_of = seal_all(history)
    for stream, cid, plain in history:
        events = sealed[stream]
        # sealed in the policy's fields only, never the subject's id
        for e in events:
            assert canonical.canonical_bytes(e)  # hashable as it is
        first = events[0]["data"]["payload"]
        assert first["client_id"] == cid and MARK in first["client_name"]
        assert first["jurisdiction"] == "GB"
        # the fold moves alike, and revealing commutes with folding
        assert moves(tasks.fold(events)) == moves(tasks.fold(plain))
        for role in ("officer", "agent"):
            state = tasks.fold(events)
            assert state is not None
            revealed_view = reveal(may(role), stream, tasks.view(state), states)
            folded_reveal = tasks.fold([reveal(may(role), stream, e, states) for e in events])
            assert folded_reveal is not None
            assert revealed_view == tasks.view(folded_reveal) == tasks.view(tasks.fold(plain))  # type: ignore[arg-type]

    hashes = {s: [canonical.compute_event_hash(e) for e in es] for s, es in sealed.items()}
    # erasures in any order give the same reads
    after = states
    for i, subject in enumerate(forgotten):
        after = forget(after, subject_of, f"client:{subject}", 1000 + i)
    shuffled = list(forgotten)
    rnd.shuffle(shuffled)
    other = states
    for subject in shuffled:
        other = forget(other, subject_of, f"client:{subject}", 1000 + forgotten.index(subject))
    assert after == other

    for stream, cid, plain in history:
        events = sealed[stream]
        assert [canonical.compute_event_hash(e) for e in events] == hashes[stream]
        gone = cid in forgotten
        plain_view = tasks.view(tasks.fold(plain))  # type: ignore[arg-type]
        for role in ("officer", "agent", "auditor", "admin"):
            state = tasks.fold(events)
            assert state is not None
            seen = reveal(may(role), stream, tasks.view(state), after)
            reads = role in ("officer", "agent")
            shown_marks = marks(seen)
            assert len(shown_marks) == (0 if reads and not gone else len(marks(tasks.view(state))))
            for inner_seen in shown_marks:
                assert "ct" not in inner_seen and inner_seen["subject"] == f"client:{cid}"
                assert inner_seen["status"] == ("erased" if gone else "withheld")
            if reads and not gone:
                assert seen == plain_view
            if gone or not reads:
                payload = seen["payload"]
                assert payload["client_id"] == cid and payload["jurisdiction"] == "GB"
                assert MARK in payload["client_name"]
                assert {k: v for k, v in seen.items() if k not in ("payload", "result")} == {
                    k: v for k, v in plain_view.items() if k not in ("payload", "result")
                }
            # events: readers see the plain data or erased markers; others, the stored bytes
            for e_plain, e in zip(plain, events, strict=True):
                shown = reveal(may(role), stream, e, after, as_stored=True)
                if not reads:
                    assert shown == e
                elif not gone:
                    assert shown == e_plain
                else:
                    assert len(marks(shown)) == len(list(envelopes(e)))
                    assert all(i["status"] == "erased" for i in marks(shown))
