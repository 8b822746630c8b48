"""C2SP tlog-tiles paths: the text's example, and one spelling per resource."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.proofs import tilepath
from ledger.proofs.tilepath import TilePath


def test_the_texts_example() -> None:
    assert tilepath.encode_index(1234067) == "x001/x234/067"
    assert tilepath.parse("0/x001/x234/067") == TilePath(0, 1234067, 256)
    assert tilepath.parse("entries/x001/x234/067.p/7") == TilePath(None, 1234067, 7)
    assert tilepath.encode(TilePath(3, 5, 17)) == "tile/3/005.p/17"


@given(
    st.one_of(st.none(), st.integers(0, 63)),
    st.integers(0, 10**15),
    st.integers(1, 256),
)
def test_encode_and_parse_agree(level: int | None, index: int, width: int) -> None:
    tp = TilePath(level, index, width)
    path = tilepath.encode(tp)
    assert tilepath.parse(path.removeprefix("tile/")) == tp


@given(st.text(alphabet="0123456789x./pentris", max_size=24))
def test_anything_parsed_is_the_canonical_spelling(path: str) -> None:
    tp = tilepath.parse(path)
    if tp is not None:
        assert tilepath.encode(tp) == f"tile/{path}"
