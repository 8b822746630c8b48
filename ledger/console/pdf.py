"""The regulator's report as PDF (fpdf2: pure Python, installs from PyPI).

The PDF's built-in fonts hold Latin-1 only: any other character is written as
its ``\\u`` escape, and the report says so; the HTML page and the audit
bundle keep the exact text."""

from __future__ import annotations

from typing import Any

import orjson
from fpdf import FPDF
from fpdf.enums import WrapMode

from ledger.console.evidence import Report, TaskReport, Verification

WIDTH = 0  # full line


def latin(text: Any) -> str:
    s = str(text)
    try:
        s.encode("latin-1")
        return s
    except UnicodeEncodeError:
        return "".join(
            c if ord(c) < 256 else (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
            for c in s
        )


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class _Doc(FPDF):
    footer_text = ""

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("helvetica", size=7)
        self.cell(0, 5, latin(f"{self.footer_text}    page {self.page_no()}/{{nb}}"), align="C")


def _para(pdf: FPDF, text: str, size: float = 9, style: str = "", mono: bool = False) -> None:
    pdf.set_font("courier" if mono else "helvetica", style=style, size=size)
    pdf.multi_cell(
        WIDTH, size * 0.5, latin(text), new_x="LMARGIN", new_y="NEXT", wrapmode=WrapMode.CHAR
    )


def _heading(pdf: FPDF, text: str, size: float = 13) -> None:
    pdf.ln(2)
    _para(pdf, text, size=size, style="B")
    pdf.ln(1)


def _verification(pdf: FPDF, v: Verification) -> None:
    _para(pdf, "Result: " + ("VERIFIED" if v.ok else "NOT VERIFIED"), style="B")
    for line in v.lines:
        _para(pdf, f"- {line}")
    if v.checkpoint_size is not None:
        _para(
            pdf,
            f"Checked against the signed checkpoint of size {v.checkpoint_size}, root {v.checkpoint_root}"
            + (f", signed {v.checkpoint_at}" if v.checkpoint_at else ""),
        )
        _para(pdf, f"Verifier key: {v.key}", mono=True, size=7)
    if v.checkpoint_note:
        _para(pdf, v.checkpoint_note, mono=True, size=7)


def _task(pdf: FPDF, r: TaskReport) -> None:
    t = r.task
    _heading(pdf, f"Task {t['id']}")
    _para(
        pdf,
        f"Type {t['task_type']}; status now {t['status']}; submitted {t['created_at']} by {t['agent_name']}; last change {t['updated_at']} (version {t['version']}, position {t['position']}).",
    )
    _para(pdf, "Actors: " + ", ".join(f"{a} ({role})" for a, role in r.actors))
    _heading(pdf, "Verification", 11)
    _verification(pdf, r.verification)
    _heading(pdf, "Trail", 11)
    for s in r.steps:
        e = s.event
        meta = e.get("meta") or {}
        _para(
            pdf,
            f"#{e['version']}  position {e['position']}  {e['recorded_at']}  {meta.get('actor')} ({meta.get('role')})  {s.summary}",
            style="B",
            size=8,
        )
        _para(
            pdf, f"type {e['type']}  hash {e['hash']}  prev {e['prev_hash']}", mono=True, size=6.5
        )
    _heading(pdf, "Every interim state", 11)
    for s in r.steps:
        e = s.event
        _para(
            pdf,
            f"After #{e['version']} {s.summary} ({e['recorded_at']}, {(e.get('meta') or {}).get('actor')})",
            style="B",
            size=8,
        )
        _para(pdf, "content: " + _json(e.get("data")), mono=True, size=7)
        for c in s.changes:
            before = "(none)" if c.added else _json(c.before)
            _para(pdf, f"changed {c.field}: {before} -> {_json(c.after)}", mono=True, size=7)
        _para(pdf, "state: " + _json(s.state), mono=True, size=6.5)
        pdf.ln(1)


def render(report: Report) -> bytes:
    pdf = _Doc(format="A4")
    pdf.footer_text = f"{report.title} - generated {report.generated_at}"
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(latin(report.title))
    pdf.set_author("Audit ledger compliance console")
    pdf.add_page()
    _heading(pdf, report.title, 16)
    _para(
        pdf,
        f"Generated {report.generated_at} for {report.generated_by}. Ledger head: position {report.chain.head}, hash {report.chain.head_hash}.",
    )
    _para(
        pdf,
        "Times are UTC as recorded on the ledger. Characters outside Latin-1 are written as \\u escapes; the HTML report and the audit bundle hold the exact text.",
        size=7,
    )
    if report.range_verification is not None and report.positions is not None:
        _heading(pdf, f"Verification of positions {report.positions[0]}..{report.positions[1]}", 11)
        _verification(pdf, report.range_verification)
        if report.truncated:
            _para(pdf, f"Only the first {len(report.tasks)} tasks of the range are included.")
    for r in report.tasks:
        _task(pdf, r)
    return bytes(pdf.output())
