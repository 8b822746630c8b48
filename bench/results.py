"""Rows, ratios and how they are printed: the terminal table, JSON and
``docs/benchmarks.md``."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

NOT_BUILT = "n/a (not built)"


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass(slots=True)
class Row:
    """One system on one workload: a sample per repetition."""

    key: str  # stable id, used by the ratios: "http.ledger", "append64.eventsourcing"
    workload: str
    system: str
    unit: str  # of the samples: "events/s", "req/s", "s"
    samples: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    commits_per_event: float | None = None
    note: str = ""
    status: str = "ok"  # ok | n/a (not built) | error: ...

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.samples)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["median"] = self.median
        d["min"] = min(self.samples) if self.samples else None
        d["max"] = max(self.samples) if self.samples else None
        d["p50_ms_median"] = statistics.median(self.p50_ms) if self.p50_ms else None
        d["p99_ms_median"] = statistics.median(self.p99_ms) if self.p99_ms else None
        return d


@dataclass(slots=True)
class Ratio:
    name: str
    target: str
    value: float | None
    meets: bool | None  # None: could not be measured in this run
    detail: str = ""


def _num(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if unit == "s" or abs(x) < 10:
        return f"{x:.3g}" if abs(x) >= 0.001 else f"{x:.2g}"
    return f"{x:,.0f}"


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cpe(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


HEADER = (
    "workload",
    "system",
    "median",
    "min",
    "max",
    "unit",
    "p50 ms",
    "p99 ms",
    "commits/event",
    "note",
)


def table_rows(rows: list[Row], width: int = 70) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        if r.ok:
            out.append(
                (
                    r.workload,
                    r.system,
                    _num(r.median, r.unit),
                    _num(min(r.samples), r.unit),
                    _num(max(r.samples), r.unit),
                    r.unit,
                    _num(_med(r.p50_ms), "s"),
                    _num(_med(r.p99_ms), "s"),
                    _cpe(r.commits_per_event),
                    r.note,
                )
            )
        else:
            status = r.status if len(r.status) <= width else r.status[: width - 1] + "…"
            out.append((r.workload, r.system, status, "", "", "", "", "", "", r.note))
    return out


def ratio_rows(ratios: list[Ratio]) -> list[tuple[str, ...]]:
    out = []
    for x in ratios:
        if x.value is None:
            verdict = "n/a"
        else:  # a ratio told without a target (scaling) has no verdict
            verdict = "–" if x.meets is None else ("meets" if x.meets else "SHORT")
        out.append((x.name, x.target, _num(x.value, "s"), verdict, x.detail))
    return out


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])


def md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


RATIO_HEADER = ("ratio", "target", "measured", "verdict", "how")
