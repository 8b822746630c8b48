"""C2SP tlog-tiles resource paths: ``tile/<L>/<N>[.p/<W>]`` and
``tile/entries/<N>[.p/<W>]``. Pure.

``<N>`` is the tile index in zero-padded 3-digit path elements, every one but
the last prefixed with ``x`` (1234067 is ``x001/x234/067``); ``<L>`` is 0..63
and ``<W>`` 1..255, decimal without leading zeroes. Only the one canonical
spelling of a resource is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL = 256


@dataclass(frozen=True, slots=True)
class TilePath:
    level: int | None  # None: an entry bundle
    index: int
    width: int  # FULL for a full tile

    @property
    def partial(self) -> bool:
        return self.width < FULL


def _decimal(text: str, low: int, high: int) -> int | None:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    return value if low <= value <= high else None


def encode_index(n: int) -> str:
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def encode(tp: TilePath) -> str:
    level = "entries" if tp.level is None else str(tp.level)
    tail = f".p/{tp.width}" if tp.partial else ""
    return f"tile/{level}/{encode_index(tp.index)}{tail}"


def parse(path: str) -> TilePath | None:
    """The resource ``path`` (after ``<prefix>/tile/``) names, or None."""
    parts = path.split("/")
    if len(parts) < 2:
        return None
    if parts[0] == "entries":
        level: int | None = None
    else:
        level = _decimal(parts[0], 0, 63)
        if level is None:
            return None
    rest = parts[1:]
    width = FULL
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = _decimal(rest[-1], 1, FULL - 1)
        if w is None:
            return None
        width = w
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    if not rest:
        return None
    index = 0
    for i, seg in enumerate(rest):
        digits = seg[1:] if i < len(rest) - 1 else seg
        if i < len(rest) - 1 and not seg.startswith("x"):
            return None
        if len(digits) != 3 or not digits.isascii() or not digits.isdigit():
            return None
        index = index * 1000 + int(digits)
    tp = TilePath(level, index, width)
    return tp if encode(tp) == f"tile/{path}" else None  # one spelling per resource
