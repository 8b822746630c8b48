"""RFC 9162 Merkle tree hashing, proofs and proof verification. Pure: no I/O.

Leaf ``i`` (0-based) of the ledger's tree is the raw 32-byte hash of the event
at position ``i + 1`` (SPEC §5). ``leaf_hash`` is ``SHA-256(0x00 || leaf)``,
an interior node ``SHA-256(0x01 || left || right)``.

Every hash in an inclusion (§2.1.3) or consistency (§2.1.4) proof is the root
of a contiguous range of leaves. ``inclusion_ranges`` and
``consistency_ranges`` name those ranges; a :class:`NodeSource` answers the
hash of a *perfect* subtree (``2**level`` leaves starting at
``index * 2**level``), and ``range_hash`` composes any range the proofs use
from O(log n) perfect subtrees. That is what lets a stored tree answer a
proof for any position with O(log n) reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, index): the perfect subtree of 2**level leaves starting at index * 2**level
Node = tuple[int, int]
# hash of a perfect subtree
NodeSource = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not verify, or a request no proof can answer."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class _Subtree(NamedTuple):
    level: int  # of 2**level leaves
    hash: bytes


class RootBuilder:
    """MTH of leaf hashes fed one at a time, in O(log n) memory: a stack of
    perfect subtrees, merged like a binary counter."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[_Subtree] = []

    def add(self, h: bytes) -> None:
        stack = self._stack
        level, cur = 0, h
        while stack and stack[-1].level == level:
            cur = node_hash(stack.pop().hash, cur)
            level += 1
        stack.append(_Subtree(level, cur))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        # the right edge, largest subtree first, folded as any range is
        return compose([s.hash for s in self._stack])


def root_of_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """MTH over leaf hashes (already ``leaf_hash``-ed), in O(n) time, O(log n) memory."""
    b = RootBuilder()
    for h in hashes:
        b.add(h)
    return b.root()


def root(leaves: Iterable[bytes]) -> bytes:
    """MTH over raw leaves (RFC 9162 §2.1.1)."""
    return root_of_leaf_hashes(leaf_hash(x) for x in leaves)


def perfect_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees whose composition is the RFC 9162 root of leaves
    ``[start, end)``, left to right (largest first).

    Valid for the ranges the tree itself is made of: ``start`` is a multiple
    of a power of two at least ``end - start``'s largest power of two.
    """
    if end <= start:
        raise ValueError(f"empty range [{start}, {end})")
    out: list[Node] = []
    pos = start
    remaining = end - start
    while remaining:
        level = remaining.bit_length() - 1
        size = 1 << level
        if pos % size:
            raise ValueError(f"range [{start}, {end}) is not a subtree of the tree")
        out.append((level, pos >> level))
        pos += size
        remaining -= size
    return out


def compose(hashes: Sequence[bytes]) -> bytes:
    """Fold the hashes of ``perfect_nodes`` (left to right) into the range's root."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def range_hash(source: NodeSource, start: int, end: int) -> bytes:
    return compose([source(level, index) for level, index in perfect_nodes(start, end)])


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots form PATH(index, D[0:size]) (RFC 9162 §2.1.3.1),
    in proof order (bottom up)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    # walk down, collecting siblings top-down, then reverse
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots form PROOF(old_size, D[0:new_size])
    (RFC 9162 §2.1.4.1), in proof order."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    out: list[tuple[int, int]] = []
    lo, hi, m = 0, new_size, old_size
    complete = True  # SUBPROOF's b: the old tree is a complete subtree so far
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    out.reverse()
    return out


def inclusion_proof(source: NodeSource, index: int, size: int) -> list[bytes]:
    return [range_hash(source, a, b) for a, b in inclusion_ranges(index, size)]


def consistency_proof(source: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    return [range_hash(source, a, b) for a, b in consistency_ranges(old_size, new_size)]


def memory_source(leaf_hashes: Sequence[bytes]) -> NodeSource:
    """A NodeSource over leaf hashes held in memory (tests, offline tools)."""

    def source(level: int, index: int) -> bytes:
        start = index << level
        return root_of_leaf_hashes(leaf_hashes[start : start + (1 << level)])

    return source


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof for the leaf *hash* ``leaf``
    (RFC 9162 §2.1.3.2). Raises ProofError when the proof is malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError("a proof hash is not 32 bytes")
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index``
    of the tree of ``size`` leaves whose root is ``expected_root``."""
    if root_from_inclusion(index, size, leaf, proof) != expected_root:
        raise ProofError(f"leaf {index} is not in the tree of size {size} with this root")


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Raise ProofError unless ``proof`` shows the tree of ``old_size`` leaves
    with ``old_root`` is a prefix of the tree of ``new_size`` with ``new_root``
    (RFC 9162 §2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"size {old_size} is larger than size {new_size}")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("a proof hash is not 32 bytes")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    # 2.1.4.2 step 2: if first is an exact power of 2, prepend first_hash
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"the proof does not lead to the old root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"the proof does not lead to the new root of size {new_size}")
