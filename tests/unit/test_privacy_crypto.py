"""The cryptography of protected values (docs/privacy.md §2–§3), pure."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import canonical, errors
from ledger.privacy import crypto
from ledger.privacy.fields import MARK, REGISTRY, is_envelope

STREAM = "task-00000000-0000-7000-8000-000000000001"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def seal(value: object, key: bytes, **over: str) -> dict[str, object]:
    args = {"stream": STREAM, "field": "/payload/client_name", "kid": "dk-" + "0" * 32,
            "subject": "client:C-1", "kind": "personal", **over}  # fmt: skip
    return crypto.seal(key, value=value, **args)  # type: ignore[arg-type]


@given(json_values)
def test_a_sealed_value_opens_to_itself_and_is_an_envelope(value: object) -> None:
    key = crypto.new_data_key()
    env = seal(value, key)
    assert is_envelope(env)
    assert crypto.open_(key, STREAM, env[MARK]) == value  # type: ignore[arg-type]


def test_the_additional_data_binds_stream_field_subject_and_key() -> None:
    key = crypto.new_data_key()
    inner = seal("Ada Lovelace", key)[MARK]
    assert isinstance(inner, dict)
    with pytest.raises(crypto.KeyError_):
        crypto.open_(key, "task-00000000-0000-7000-8000-000000000002", inner)
    for name, other in (("field", "/payload/address"), ("subject", "client:C-2"),
                        ("class", "confidential"), ("kid", "dk-" + "1" * 32)):  # fmt: skip
        with pytest.raises(crypto.KeyError_):
            crypto.open_(key, STREAM, {**inner, name: other})
    with pytest.raises(crypto.KeyError_):
        crypto.open_(crypto.new_data_key(), STREAM, inner)
    two = seal("Ada Lovelace", key)[MARK]
    assert isinstance(two, dict) and two["nonce"] != inner["nonce"] and two["ct"] != inner["ct"]


def test_data_keys_unwrap_only_with_their_kek(tmp_path: Path) -> None:
    kek, made = crypto.load_or_create_kek(tmp_path / "kek.key")
    assert made and (tmp_path / "kek.key").stat().st_mode & 0o777 == 0o600
    again, made_again = crypto.load_or_create_kek(tmp_path / "kek.key")
    assert not made_again and again == kek and kek.key.hex() not in repr(kek)
    dk = crypto.new_data_key()
    wrapped = kek.wrap(dk)
    assert len(wrapped) == 40 and kek.unwrap(wrapped) == dk
    other, _ = crypto.load_or_create_kek(tmp_path / "other.key")
    assert other.id != kek.id
    with pytest.raises(crypto.KeyError_):
        other.unwrap(wrapped)
    os.chmod(tmp_path / "kek.key", 0o644)
    with pytest.raises(PermissionError):
        crypto.load_kek(tmp_path / "kek.key")


def test_subjects_come_from_plain_payload_fields() -> None:
    policy = REGISTRY.policies["client_exposure_review"]
    subjects = policy.subjects_of({"client_id": "C-9", "desk": "rates"})
    assert subjects == {"personal": "client:C-9", "confidential": "desk:rates"}
    for bad in ({"desk": "rates"}, {"client_id": "", "desk": "rates"},
                {"client_id": True, "desk": "rates"}, {"client_id": "a b", "desk": "x"}):  # fmt: skip
        with pytest.raises(errors.InvalidInput):
            policy.subjects_of(bad)


def test_the_documented_vector() -> None:
    """docs/privacy.md §2's test vector, as an independent implementer reads it."""
    key, stream = bytes(range(32)), "task-0193f5c2-7e2a-7c3d-9a51-0b1c2d3e4f50"
    envelope = (
        '{"$protected":{"alg":"A256GCM","class":"personal",'
        '"ct":"alq6B1mlOehbDj6Lv0cIFZT3Eu84_NLQiQTvPXVO","field":"/payload/client_name",'
        '"kid":"dk-00112233445566778899aabbccddeeff","nonce":"ZGVmZ2hpamtsbW5v",'
        '"subject":"client:C-1042","v":1}}'
    )
    inner = orjson.loads(envelope)[MARK]
    assert crypto.aad(stream, inner) == (
        b'{"alg":"A256GCM","class":"personal","field":"/payload/client_name",'
        b'"kid":"dk-00112233445566778899aabbccddeeff",'
        b'"stream":"task-0193f5c2-7e2a-7c3d-9a51-0b1c2d3e4f50","subject":"client:C-1042","v":1}'
    )
    assert crypto.open_(key, stream, inner) == "Ada Lovelace"
    assert canonical.canonical_bytes(orjson.loads(envelope)) == envelope.encode()
    kek_key = bytes(range(32, 64))
    assert crypto.b64u(kek_key) == "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"
    kek = crypto.Kek(crypto.kek_id(kek_key), kek_key)
    assert kek.id == "kek-99af199677c6348d"
    wrapped = "c1a9bb689aeab408aa5250b5fa27911a34d09cf2c3c5db0f1a54c6bc2773a21dfe64e0c6d7be9352"
    assert kek.wrap(key).hex() == wrapped and kek.unwrap(bytes.fromhex(wrapped)) == key
