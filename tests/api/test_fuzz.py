"""Fuzzing from the API's own document: schemathesis generates requests for
every operation in /openapi.json, valid and not, and sends them with a key of
each role to a real server on a real PostgreSQL. Every answer must be no 5xx,
a status the document lists for the operation, of its media type, and match
its schema; requests the document does not admit (negative mode) included. Bounded (a few examples per operation and role, derandomized so a
failure repeats), so it runs in the suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledger.settings import Settings
from tests.support import (
    app_with_runner,
    auth,
    create_key,
    drop_db,
    fresh_db,
    live_server,
    proof_settings,
    url_for,
)

ROLES = ("agent", "officer", "auditor", "admin")
# A few per operation, role and mode keep it well under a minute;
# LEDGER_FUZZ_EXAMPLES=200 (and LEDGER_FUZZ_RANDOM=1 for new inputs) digs deeper.
EXAMPLES_PER_OPERATION = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "5"))
RANDOM = os.environ.get("LEDGER_FUZZ_RANDOM") == "1"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(
    pg_server: dict[str, Any], template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A server with a key of each role, a task or two and a signed checkpoint."""
    name = fresh_db(pg_server["url"], template_db)
    url = url_for(pg_server["url"], name)
    keys = {role: create_key(url, f"fuzz-{role}", role) for role in ROLES}
    home = tmp_path_factory.mktemp("fuzz-home")
    base_settings: Settings = proof_settings(url, home / "signing.key")
    try:
        with live_server(app_with_runner(base_settings)) as base:
            agent = auth(keys["agent"])
            for i in range(2):
                r = httpx.post(
                    f"{base}/tasks", headers=agent, json={"task_type": "t", "payload": {"i": i}}
                )
                assert r.status_code == 201, r.text
            yield base, keys
    finally:
        drop_db(pg_server["url"], name)


def _fuzzer(operation: Any, base: str, headers: dict[str, str], mode: GenerationMode) -> Any:
    """A bounded hypothesis test of one operation under one key: requests the
    document admits (positive) or ones it does not (negative: each must be
    refused with a 4xx)."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        response = case.call(base_url=base, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    return fuzz


def test_every_operation_answers_as_documented_for_every_role(
    served: tuple[str, dict[str, str]],
) -> None:
    base, keys = served
    raw = httpx.get(f"{base}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 25
    failures: list[str] = []
    for role in ROLES:
        for operation in operations:
            for mode in GenerationMode:
                try:
                    _fuzzer(operation, base, auth(keys[role]), mode)()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing in it can be made wrong
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(
                        f"{role} {mode.value} {operation.label}: {type(exc).__name__}: {exc}"[:1500]
                    )
    assert not failures, "\n\n".join(failures)


def test_the_served_document_is_the_one_tested(served: tuple[str, dict[str, str]]) -> None:
    """The fuzzed document is what clients fetch, with the bearer scheme in it."""
    base, _keys = served
    doc = httpx.get(f"{base}/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
