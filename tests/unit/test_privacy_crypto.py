"""The cryptography of protected values (docs/privacy.md §2–§3), pure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import errors
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
