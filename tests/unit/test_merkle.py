"""RFC 9162 tree code against the published transparency-dev/merkle vectors,
and the signed-note code against the golang.org/x/mod/sumdb/note reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.proofs import merkle, note, signing

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "rfc9162.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]
LEAF_HASHES = [merkle.leaf_hash(x) for x in LEAVES]


def test_empty_root() -> None:
    assert merkle.root([]) == bytes.fromhex(VECTORS["empty_root"])


@pytest.mark.parametrize("n", range(1, 9))
def test_published_roots(n: int) -> None:
    assert merkle.root(LEAVES[:n]) == ROOTS[n - 1]
    # composed from stored perfect subtrees, as the database tree does
    assert merkle.range_hash(merkle.memory_source(LEAF_HASHES), 0, n) == ROOTS[n - 1]


def test_eight_leaf_root_is_the_published_one() -> None:
    assert merkle.root(LEAVES).hex().startswith("5dc9da79")


@pytest.mark.parametrize(
    "case", VECTORS["inclusion"], ids=lambda c: f"{c['leaf']}of{c['tree_size']}"
)
def test_published_inclusion_proofs(case: dict[str, Any]) -> None:
    index, size = case["leaf"] - 1, case["tree_size"]
    want = [bytes.fromhex(h) for h in case["proof"]]
    got = merkle.inclusion_proof(merkle.memory_source(LEAF_HASHES), index, size)
    assert got == want
    merkle.verify_inclusion(index, size, LEAF_HASHES[index], want, ROOTS[size - 1])
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, LEAF_HASHES[index], want, ROOTS[size - 2])


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: f"{c['from']}to{c['to']}")
def test_published_consistency_proofs(case: dict[str, Any]) -> None:
    m, n = case["from"], case["to"]
    want = [bytes.fromhex(h) for h in case["proof"]]
    got = merkle.consistency_proof(merkle.memory_source(LEAF_HASHES), m, n)
    assert got == want
    merkle.verify_consistency(m, n, ROOTS[m - 1], ROOTS[n - 1], want)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(m, n, ROOTS[m - 2] if m > 1 else ROOTS[1], ROOTS[n - 1], want)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 300))
def test_random_proofs_verify_and_any_flip_fails(data: st.DataObject, n: int) -> None:
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    src = merkle.memory_source(hashes)
    m = data.draw(st.integers(1, n))
    i = data.draw(st.integers(0, m - 1))
    root_m, root_n = merkle.root_of_leaf_hashes(hashes[:m]), merkle.root_of_leaf_hashes(hashes)
    inc = merkle.inclusion_proof(src, i, m)
    merkle.verify_inclusion(i, m, hashes[i], inc, root_m)
    con = merkle.consistency_proof(src, m, n)
    merkle.verify_consistency(m, n, root_m, root_n, con)
    for proof, check in (
        (inc, lambda p: merkle.verify_inclusion(i, m, hashes[i], p, root_m)),
        (con, lambda p: merkle.verify_consistency(m, n, root_m, root_n, p)),
    ):
        if not proof:
            continue
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        flipped = bytearray(bad[j])
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad[j] = bytes(flipped)
        with pytest.raises(merkle.ProofError):
            check(bad)
        with pytest.raises(merkle.ProofError):
            check(proof[:-1])
        with pytest.raises(merkle.ProofError):
            check([*proof, proof[0]])


def test_out_of_range_requests_are_refused() -> None:
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(merkle.ProofError):
        merkle.consistency_ranges(6, 5)


# -- signed notes ----------------------------------------------------------------

REF = VECTORS["signed_note"]


def test_reference_signed_note_verifies() -> None:
    v = note.Verifier.parse(REF["vkey"])
    assert v.vkey == REF["vkey"]
    text, good = note.open_note(REF["note"], [v])
    assert good == [v]
    assert text.startswith("If you think cryptography")


def test_reference_note_altered_is_refused() -> None:
    v = note.Verifier.parse(REF["vkey"])
    with pytest.raises(note.NoteError):
        note.open_note(REF["note"].replace("answer", "Answer"), [v])


def test_checkpoint_round_trip_and_refusals() -> None:
    s = note.Signer.generate("ledger.example/test")
    other = note.Signer.generate("ledger.example/test")
    cp = note.Checkpoint("ledger.example/test", 8, ROOTS[7])
    signed = note.sign_checkpoint(cp, s)
    assert signed.splitlines()[1:3] == ["8", "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="]
    assert "\n\n— ledger.example/test " in signed
    got, good = note.open_checkpoint(signed, [s.verifier])
    assert got == cp and good == [s.verifier]
    # signed by another key (same name): refused
    with pytest.raises(note.NoteError):
        note.open_checkpoint(note.sign_checkpoint(cp, other), [s.verifier])
    # text altered: refused
    with pytest.raises(note.NoteError):
        note.open_checkpoint(signed.replace("\n8\n", "\n9\n"), [s.verifier])
    # round trip of the key forms
    assert note.Signer.parse(s.skey()).verifier == s.verifier
    assert note.Verifier.parse(s.verifier.vkey) == s.verifier


def test_key_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    s, created = signing.load_or_create(path, "ledger.example/x")
    assert created and (path.stat().st_mode & 0o777) == 0o600
    again, created2 = signing.load_or_create(path, "ledger.example/x")
    assert not created2 and again.verifier == s.verifier
    path.chmod(0o640)
    with pytest.raises(signing.KeyFileError, match="group and others"):
        signing.load_key_file(path)
    path.chmod(0o604)
    with pytest.raises(signing.KeyFileError):
        signing.load_key_file(path)
