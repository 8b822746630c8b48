"""What /openapi.json says besides the generated schema: the bearer key every
operation but the public ones needs (so /docs can authorize and generated
clients send it), and an example of each request body and answer.

Examples live here, one per schema component, and are put on the media
types that use them (a list answer gets a list of one); ``tests/api/
test_openapi.py`` holds each to its schema."""

from __future__ import annotations

from typing import Any

import orjson

SCHEME = "bearer"
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "an API key (lk_...): 'ledger keys create --name NAME --role ROLE', "
    "or POST /admin/keys",
}

_HASH = "d5da547436baef2d4e394d2255014ed3109bac0f3ef63473a8e57af2d7acf9d8"
_PREV = "585bc50b7fb143ce6942cafbe57ec14bfc2d3c93d411f12cbfa6f36d74740d3c"
_TASK = "0193f5c2-7d1e-7a55-9c3b-4f1d2e3a4b5c"
_AT = "2026-11-25T09:00:01.250000Z"
_TASK_OUT = {
    "id": _TASK,
    "agent_name": "trade-review-agent",
    "task_type": "position_check",
    "status": "running",
    "payload": {"symbol": "AAPL", "quantity": 250},
    "result": None,
    "error": None,
    "created_at": "2026-11-25T09:00:00.000000Z",
    "updated_at": _AT,
    "version": 2,
    "position": 7,
    "priority": 0,
    "worker": "pricing-worker",
    "lease_expires_at": "2026-11-25T09:01:01.250000Z",
    "retryable": None,
    "approval_reason": None,
    "officer_comment": None,
    "reason": None,
    "attempts": 1,
    "steps": 0,
}
_EVENT = {
    "position": 7,
    "stream": f"task-{_TASK}",
    "version": 2,
    "type": "TaskClaimed",
    "data": {"worker": "pricing-worker", "lease_expires_at": "2026-11-25T09:01:01.250000Z"},
    "meta": {"actor": "pricing-worker", "role": "agent", "request_id": "req-7f3a"},
    "recorded_at": _AT,
    "prev_hash": _PREV,
    "hash": _HASH,
}
_PROJECTION = {
    "name": "tasks",
    "position": 7,
    "hash": _HASH,
    "applied": 5,
    "lag_events": 0,
    "lag_seconds": 0.0,
    "leading": True,
    "holder": "ledger-host:4242",
    "updated_at": _AT,
    "rebuilt_at": None,
}
_NOTE = (
    "ledger.example/audit-ledger\n7\nq4nSeh9gWiJEgXmLKSkWbt3ZbL3nIVcc5ZaGPh2kA0Y=\n\n"
    "\u2014 ledger.example/audit-ledger Az3grkDGZ9OiQEbEzWOwC1zL9VAXGxr8OTt6jlC+1jHqoZSaQ9yW"
    "lxxsKYtVeLsLNnDLvi8WmRR0GeNGsLVKyUdVkwM=\n"
)
_CHECKPOINT = {
    "tree_size": 7,
    "root": "ab89d27a1f605a224481798b292916b6ddd96cbde72157d3e5968c3e1da4034",
    "key_ids": ["033de0ae"],
    "signed_at": "2026-11-25T09:00:02.000000+00:00",
    "note": _NOTE,
}

EXAMPLES: dict[str, Any] = {
    "TaskSubmit": {"task_type": "position_check", "payload": {"symbol": "AAPL", "quantity": 250}},
    "TaskSubmitted": {"id": _TASK, "status": "queued", "version": 1, "position": 6},
    "LeaseRequest": {"lease_seconds": 120},
    "ClaimNext": {"task_types": ["position_check"], "lease_seconds": 60},
    "StepRequest": {"kind": "tool_call", "content": {"tool": "price_lookup", "symbol": "AAPL"}},
    "ReasonRequest": {"reason": "notional above the desk limit"},
    "CommentRequest": {"comment": "within the client's approved limit"},
    "CompleteRequest": {"result": {"status": "processed", "notional_eur": 41250.5}},
    "FailRequest": {"error": "pricing service timed out", "retryable": True},
    "Written": {"version": 3, "position": 8},
    "TaskOut": _TASK_OUT,
    "TaskPage": {"items": [_TASK_OUT], "next_cursor": None},
    "Replay": {"state": _TASK_OUT, "events": [_EVENT]},
    "TaskStats": {
        "position": 7,
        "by_agent": {"trade-review-agent": {"queued": 3, "running": 1}},
        "by_task_type": {"position_check": {"queued": 3, "running": 1}},
    },
    "EventOut": _EVENT,
    "EventPage": {"items": [_EVENT], "next_after": 7},
    "Head": {"position": 7, "hash": _HASH},
    "VerifyResult": {
        "ok": True,
        "verified_from": 1,
        "verified_to": 7,
        "head_hash": _HASH,
        "first_bad_position": None,
        "reason": None,
        "checked": 2,
        "rechecked": 5,
    },
    "Health": {
        "status": "ok",
        "database": "ok",
        "head_position": 7,
        "appended_since_start": 7,
        "tree": "ok",
        "tree_size": 7,
        "reason": None,
    },
    "KeyCreate": {"name": "trade-review-agent", "role": "agent"},
    "KeyCreated": {
        "name": "trade-review-agent",
        "role": "agent",
        "key": "lk_qZ5UBkyYPt-ChTY4fDnMy48Hqtdulmxc_uVMiVzKr4A",
        "position": 3,
    },
    "KeyRevoke": {"reason": "rotation"},
    "KeyRevoked": {"name": "trade-review-agent", "position": 9},
    "PrincipalOut": {
        "name": "trade-review-agent",
        "role": "agent",
        "created_position": 3,
        "revoked_position": None,
    },
    "ProjectionOut": _PROJECTION,
    "ProjectionsOut": {"head_position": 7, "items": [_PROJECTION]},
    "InclusionProof": {"leaf_index": 2, "tree_size": 7, "hashes": [_HASH, _PREV]},
    "ConsistencyProof": {"from": 3, "to": 7, "hashes": [_HASH, _PREV]},
    "CheckpointOut": _CHECKPOINT,
    "CheckpointPage": {"items": [_CHECKPOINT], "next_after": 7},
    "Problem": {
        "type": "https://ledger.example/problems/invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "payload.qty: numbers whose value is an integer must lie within ±(2^53 − 1)",
        "instance": "/tasks",
    },
}
_ERASURE: dict[str, Any] = {
    "id": "0193f5d0-1c2b-7e4f-8a9b-0c1d2e3f4a5b",
    "subject": "client:C-1042",
    "reason": "GDPR art. 17 request REQ-2026-118",
    "status": "proposed",
    "proposed_by": "officer-1",
    "proposed_at": _AT,
    "decided_by": None,
    "decided_at": None,
    "keys": [],
    "version": 1,
    "position": 12,
}
_HOLD: dict[str, Any] = {
    "id": "0193f5d1-2d3c-7f50-9bac-1d2e3f4a5b6c",
    "scope": "subject",
    "target": "client:C-1042",
    "position": 13,
    "reason": "litigation LIT-2026-7",
    "placed_by": "officer-1",
    "released_by": None,
}
EXAMPLES |= {
    "ForgetRequest": {"subject": "client:C-1042", "reason": "GDPR art. 17 request REQ-2026-118"},
    "ErasureOut": _ERASURE,
    "Decision": {"comment": "no hold applies; identity of the requester checked"},
    "HoldRequest": {"scope": "subject", "target": "client:C-1042", "reason": "LIT-2026-7"},
    "HoldOut": _HOLD,
    "ReleaseRequest": {"reason": "litigation closed"},
}
# Free-form JSON answers (no component), by path.
PATH_EXAMPLES: dict[str, Any] = {
    "/audit/public-key": {
        "keys": [
            {"vkey": "ledger.example/audit-ledger+033de0ae+AUtJ", "from_size": 1, "to_size": 7}
        ]
    },
    "/privacy/retention/plan": {"as_of": _AT, "expiring": []},
    "/privacy/policies": {"readers": {}, "task_types": {}},
}
_PROBLEMS = {
    "401": ("unauthenticated", "Authentication required", "this API key is unknown or revoked"),
    "403": ("forbidden", "Forbidden", "role 'agent' may not do this; it needs one of: auditor"),
    "404": ("not-found", "Not found", "no task 0193f5c2-7d1e-7a55-9c3b-4f1d2e3a4b5c"),
    "409": ("conflict", "Conflict", "TaskClaimed is not allowed when the task is done"),
    "412": ("precondition-failed", "Precondition failed", "the task is at version 3, not 2"),
    "422": (
        "invalid-input",
        "Invalid input",
        "payload.qty: numbers whose value is an integer must lie within ±(2^53 − 1)",
    ),
    "503": ("unavailable", "Service unavailable", "the database is unavailable; retry shortly"),
}
# Paths public unless the operator sets a token of their own (not an API key).
OPTIONAL_TOKEN = {"/log/": "logReadToken"}
READ_TOKEN_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "LEDGER_LOG_READ_TOKEN, when the operator set one; else no credentials",
}
# Answers that are not JSON, by media type.
TEXT_EXAMPLES = {
    "/audit/checkpoint": _NOTE,
    "/audit/public-key": "ledger.example/audit-ledger+033de0ae+AUtJJ0dcHnPvK2vLRDuYqjsvGOcEW"
    "DDDiDvLjBDKgWTE\n",
    "/audit/export": orjson.dumps(_EVENT).decode() + "\n",
    "/audit/receipt": "ledger.example/audit-ledger\nindex 2\n" + _HASH + "\n\n" + _NOTE,
    "/log/checkpoint": _NOTE,
    "/log/tile/{path}": "(binary: 32-byte hashes, concatenated)",
}


def _example_for(schema: dict[str, Any]) -> Any:
    ref = schema.get("$ref", "")
    if ref:
        return EXAMPLES.get(ref.rsplit("/", 1)[-1])
    if schema.get("type") == "array" and "items" in schema:
        item = _example_for(schema["items"])
        return None if item is None else [item]
    for choice in schema.get("anyOf", []):  # an optional body: Model | None
        if (example := _example_for(choice)) is not None:
            return example
    return None


def _problem(status: str, path: str) -> dict[str, Any]:
    slug, title, detail = _PROBLEMS.get(status, (f"http-{status}", "HTTP error", "see title"))
    return {
        "type": f"https://ledger.example/problems/{slug}",
        "title": title,
        "status": int(status),
        "detail": detail,
        "instance": path,
    }


def _exemplify(content: dict[str, Any], path: str, status: str | None = None) -> None:
    for media, body in content.items():
        if "example" in body or "examples" in body:
            continue
        example: Any
        if media == "application/problem+json" and status is not None:
            example = _problem(status, path)
        elif media == "application/json":
            example = _example_for(body.get("schema", {})) or PATH_EXAMPLES.get(path)
        else:
            example = TEXT_EXAMPLES.get(path)
        if example is not None:
            body["example"] = example


def document(schema: dict[str, Any], public_paths: set[str]) -> None:
    """Declare the bearer key on every operation outside ``public_paths`` (an
    optional token of their own on ``OPTIONAL_TOKEN``'s paths) and put an
    example on every request body and answer that has one."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[SCHEME] = SECURITY_SCHEME
    for path, ops in schema.get("paths", {}).items():
        token = next((t for p, t in OPTIONAL_TOKEN.items() if path.startswith(p)), None)
        for op in ops.values():
            if path in public_paths:
                op["security"] = []
            elif token:
                schemes[token] = READ_TOKEN_SCHEME
                op["security"] = [{}, {token: []}]
            else:
                op["security"] = [{SCHEME: []}]
            _exemplify(op.get("requestBody", {}).get("content", {}), path)
            for status, answer in op.get("responses", {}).items():
                _exemplify(answer.get("content", {}), path, status)
