"""What /openapi.json promises a client: the bearer key on every operation
that needs it (so /docs can authorize), and an example of each request body
and answer, each one valid against its own schema."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import orjson
import pytest

from ledger.api.app import PUBLIC_PATHS, create_app
from ledger.settings import Settings


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    # the document needs no database: it is generated from the routes
    return create_app(Settings(database_url="postgresql://unused")).openapi()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in schema["paths"].items() for m, op in ops.items()]


def test_bearer_auth_is_declared_on_every_operation_that_needs_it(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, op in _operations(schema):
        if path.startswith("/log/"):  # public unless the operator sets a read token
            assert op["security"] == [{}, {"logReadToken": []}], (method, path)
        elif path in PUBLIC_PATHS:
            assert op["security"] == [], (method, path)
            assert "401" not in op["responses"], (method, path)
        else:
            assert op["security"] == [{"bearer": []}], (method, path)
            assert "401" in op["responses"], (method, path)


def _valid(example: Any, body_schema: dict[str, Any], components: dict[str, Any]) -> None:
    jsonschema_rs.Draft202012Validator({**body_schema, "components": components}).validate(example)


def test_every_body_and_answer_has_an_example_that_fits_its_schema(
    schema: dict[str, Any],
) -> None:
    components = schema["components"]
    seen = 0
    for method, path, op in _operations(schema):
        contents = [("request", op["requestBody"]["content"])] if "requestBody" in op else []
        contents += [
            (status, answer["content"])
            for status, answer in op["responses"].items()
            if answer.get("content")
        ]
        for where, content in contents:
            for media, body in content.items():
                assert "example" in body, (method, path, where, media)
                example = body["example"]
                if media in ("application/json", "application/problem+json"):
                    _valid(example, body.get("schema", {}), components)
                elif media == "application/x-ndjson":
                    for line in example.splitlines():
                        _valid(
                            orjson.loads(line),
                            {"$ref": "#/components/schemas/EventOut"},
                            components,
                        )
                else:
                    assert isinstance(example, str) and example, (method, path, media)
                seen += 1
    assert seen > 60  # every operation has at least one
