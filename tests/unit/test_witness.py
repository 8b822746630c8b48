"""The witness's add-checkpoint rules (C2SP tlog-witness) and cosignature/v1
(C2SP tlog-cosignature), with its real file state."""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.proofs import cosignature, merkle, note
from ledger.witness.protocol import Witness
from ledger.witness.state import FileState

ORIGIN = "ledger.example/witnessed"


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(tag + i.to_bytes(8, "big")).digest() for i in range(n)]


class Log:
    def __init__(self, tag: bytes = b"") -> None:
        self.signer = note.Signer.generate(ORIGIN)
        self.tag = tag

    def checkpoint(self, size: int, signer: note.Signer | None = None) -> str:
        cp = note.Checkpoint(ORIGIN, size, merkle.root(leaves(size, self.tag)))
        return note.sign_checkpoint(cp, signer or self.signer)

    def proof(self, old: int, new: int) -> list[bytes]:
        src = merkle.memory_source([merkle.leaf_hash(x) for x in leaves(new, self.tag)])
        return merkle.consistency_proof(src, old, new)

    def request(self, old: int, new: int, proof: list[bytes] | None = None) -> str:
        lines = [f"old {old}"] + [
            base64.b64encode(h).decode() for h in (self.proof(old, new) if proof is None else proof)
        ]
        return "\n".join(lines) + "\n\n" + self.checkpoint(new)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Witness:
    return Witness(
        cosignature.Cosigner.generate("witness.example/w1"),
        [log.signer.verifier],
        FileState(tmp_path / "w"),
        clock=lambda: 1_700_000_000.5,
    )


def test_cosigns_a_consistent_run_of_checkpoints(witness: Witness, log: Log) -> None:
    a = witness.add_checkpoint(log.request(0, 5))
    assert a.status == 200 and a.body.startswith("— witness.example/w1 ") and a.body.endswith("\n")
    # the cosignature as the text defines it, checked by hand
    raw = base64.b64decode(a.body.split(" ")[2])
    key = witness.cosigner.key
    assert raw[:4] == hashlib.sha256(b"witness.example/w1\n\x04" + key.public).digest()[:4]
    assert struct.unpack(">Q", raw[4:12]) == (1_700_000_000,)
    body = cosignature.note_text(log.checkpoint(5))
    Ed25519PublicKey.from_public_bytes(key.public).verify(
        raw[12:], b"cosignature/v1\ntime 1700000000\n" + body.encode()
    )
    assert key.verify_line(a.body, body) == 1_700_000_000
    assert cosignature.CosignerKey.parse(key.vkey) == key
    for old, new in [(5, 9), (9, 9), (9, 300), (300, 301)]:
        got = witness.add_checkpoint(log.request(old, new))
        assert got.status == 200, (old, new, got.body)
    known = witness.state.get(ORIGIN)
    assert known is not None and known.size == 301
    assert key.timestamp_in(known.note) == 1_700_000_000  # the stored note carries it


def test_refusals_say_what_the_text_says(witness: Witness, log: Log, tmp_path: Path) -> None:
    assert witness.add_checkpoint(log.request(0, 10)).status == 200
    stale = witness.add_checkpoint(log.request(4, 12))
    assert (stale.status, stale.body, stale.content_type) == (409, "10\n", "text/x.tlog.size")
    assert witness.add_checkpoint(log.request(0, 12)).status == 409
    assert witness.add_checkpoint(log.request(13, 12, proof=[])).status == 400
    assert witness.add_checkpoint("old 01\n\n" + log.checkpoint(12)).status == 400
    assert witness.add_checkpoint("nonsense").status == 400
    other = Log()  # same origin, a key the witness does not trust
    assert witness.add_checkpoint(other.request(10, 12)).status == 403
    forged = log.checkpoint(12).replace("\n12\n", "\n13\n")  # the log's signature no longer holds
    assert witness.add_checkpoint("old 10\n\n" + forged).status == 403
    stranger = note.Signer.generate("another.example/log")
    cp = note.sign_checkpoint(
        note.Checkpoint("another.example/log", 0, merkle.EMPTY_ROOT), stranger
    )
    assert witness.add_checkpoint("old 0\n\n" + cp).status == 404
    assert witness.add_checkpoint(log.request(10, 12, proof=[b"\x00" * 32])).status == 422
    assert witness.state.get(ORIGIN).size == 10  # type: ignore[union-attr]


def test_a_fork_is_refused_and_recorded(witness: Witness, log: Log) -> None:
    assert witness.add_checkpoint(log.request(0, 20)).status == 200
    fork = Log(tag=b"rewritten")
    fork.signer = log.signer  # the log's own key signs a rewritten history
    same_size = witness.add_checkpoint(fork.request(20, 20))
    assert same_size.status == 422
    longer = witness.add_checkpoint(fork.request(20, 25))
    assert longer.status == 422
    assert isinstance(witness.state, FileState)
    forks = witness.state.forks()
    assert [f["origin"] for f in forks] == [ORIGIN, ORIGIN]
    assert "\n25\n" in forks[1]["request"]
    assert witness.state.get(ORIGIN).size == 20  # type: ignore[union-attr]
    assert witness.add_checkpoint(log.request(20, 21)).status == 200  # the true log goes on


def test_size_zero_needs_the_empty_root(witness: Witness, log: Log) -> None:
    bad = note.sign_checkpoint(note.Checkpoint(ORIGIN, 0, b"\x01" * 32), log.signer)
    assert witness.add_checkpoint("old 0\n\n" + bad).status == 422
    assert witness.add_checkpoint(log.request(0, 0)).status == 200


def test_racing_submissions_never_roll_the_state_back(tmp_path: Path, log: Log) -> None:
    """Two witnesses over one state directory (as two processes would be), many
    threads each: every cosigned size is above the one before it."""
    home = tmp_path / "shared"
    cosigner = cosignature.Cosigner.generate("witness.example/w1")
    ws = [Witness(cosigner, [log.signer.verifier], FileState(home)) for _ in range(2)]
    assert ws[0].add_checkpoint(log.request(0, 1)).status == 200
    accepted: list[tuple[int, int]] = []
    lock = threading.Lock()

    def submit(w: Witness, new: int) -> None:
        for _ in range(20):
            known = w.state.get(ORIGIN)
            assert known is not None
            if known.size >= new:
                return
            if w.add_checkpoint(log.request(known.size, new)).status == 200:
                with lock:
                    accepted.append((known.size, new))
                return

    threads = [
        threading.Thread(target=submit, args=(ws[i % 2], n)) for i, n in enumerate(range(2, 40))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = ws[1].state.get(ORIGIN)
    assert final is not None and final.size == max(n for _, n in accepted)
    # the accepted steps form one path from size 1: none started from a size
    # another step had already moved past (that would be a rollback)
    path = sorted(accepted)
    assert path[0][0] == 1
    for (_o1, n1), (o2, _n2) in itertools.pairwise(path):
        assert o2 == n1
