"""The console's colours meet WCAG 2.1 AA contrast (4.5:1 for text) on the
backgrounds they are used on."""

from __future__ import annotations

import re

from ledger.console.pages import HERE

CSS = (HERE / "static" / "console.css").read_text()


def _var(name: str) -> str:
    m = re.search(rf"--{name}:\s*(#[0-9a-fA-F]{{6}})", CSS)
    assert m, name
    return m.group(1)


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_text_colours_have_aa_contrast_on_white_and_on_the_bands() -> None:
    backgrounds = ["#ffffff", _var("band"), "#fff7d6", "#fbeaea", "#e8eef8"]
    for name in ("ink", "muted", "link", "ok", "bad", "warn"):
        for bg in backgrounds:
            assert contrast(_var(name), bg) >= 4.5, (name, bg, contrast(_var(name), bg))


def test_white_on_the_changed_badge_is_readable() -> None:
    assert ".badge { font-size: .75em; background: var(--warn); color: #fff;" in CSS
    assert contrast("#ffffff", _var("warn")) >= 4.5


def test_the_contrast_formula_matches_known_pairs() -> None:
    assert round(contrast("#000000", "#ffffff"), 1) == 21.0
    assert contrast("#777777", "#ffffff") < 4.5 < contrast("#767676", "#ffffff")
