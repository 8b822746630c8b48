"""``python -m bench [--quick] [--scale]``: every workload, ours and the
comparators in one run; prints the table and the target ratios, writes them
as JSON (``bench/results/``) and as ``docs/benchmarks.md``."""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import pg
from bench.results import (
    HEADER,
    RATIO_HEADER,
    Ratio,
    Row,
    md_table,
    ratio_rows,
    table_rows,
    text_table,
)
from bench.witnessing import witnessing
from bench.workloads import WORKLOADS, Config, bench

WORKLOADS["witness"] = witnessing  # it builds on bench.workloads

ROOT = Path(__file__).resolve().parent.parent
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"
DOCS = ROOT / "docs" / "benchmarks.md"


def _get(rows: list[Row], key: str) -> Row | None:
    for r in rows:
        if r.key == key and r.ok:
            return r
    return None


def _ratio(
    rows: list[Row], name: str, target: str, num: str, den: str, at_least: float | None
) -> Ratio:
    """``num / den`` of the two rows' medians; ``at_least`` None: told, not judged."""
    a, b = _get(rows, num), _get(rows, den)
    if a is None or b is None or not b.median:
        return Ratio(name, target, None, None, "not measured in this run")
    assert a.median is not None
    value = a.median / b.median
    detail = "medians of the two rows"
    if "stand-in" in a.note:
        detail += "; ours on the stand-in route"
    return Ratio(name, target, value, None if at_least is None else value >= at_least, detail)


def _p99(rows: list[Row], key: str) -> float | None:
    r = _get(rows, key)
    return statistics.median(r.p99_ms) if r and r.p99_ms else None


def ratios(rows: list[Row], config: Config) -> list[Ratio]:
    w = max(config.writers)
    out = [
        _ratio(
            rows, "HTTP submit: ledger / original design", "≥ 3×", "http.ledger", "http.original", 3
        ),
        _ratio(rows, "HTTP submit: ledger / HTTP floor", "≥ 0.5", "http.ledger", "http.floor", 0.5),
    ]
    p99 = _p99(rows, "http.ledger")
    out.append(
        Ratio("HTTP submit: ledger p99 (ms)", "< 50 ms", p99, None if p99 is None else p99 < 50)
    )
    out.append(
        _ratio(
            rows,
            "HTTP submit: ledger serve alone / floor",
            "≥ 0.5",
            "http.serve",
            "http.floor",
            0.5,
        )
    )
    out.append(
        _ratio(
            rows,
            "HTTP submit: ledger / the floor without FastAPI",
            "(told)",
            "http.ledger",
            "http.asgi",
            None,
        )
    )
    p99 = _p99(rows, "http.serve")
    out.append(
        Ratio(
            "HTTP submit: ledger serve alone p99 (ms)",
            "< 50 ms",
            p99,
            None if p99 is None else p99 < 50,
        )
    )
    for n in config.scale_workers:
        out.append(
            _ratio(
                rows,
                f"HTTP submit, {n} workers: ledger / floor ({n} workers)",
                "≥ 0.5",
                f"http.ledger.w{n}",
                f"http.floor.w{n}",
                0.5,
            )
        )
        out.append(
            _ratio(
                rows,
                f"HTTP submit: ledger {n} workers / 1 worker",
                "(scaling)",
                f"http.ledger.w{n}",
                "http.ledger",
                None,
            )
        )
        p99 = _p99(rows, f"http.ledger.w{n}")
        out.append(
            Ratio(
                f"HTTP submit, {n} workers: ledger p99 (ms)",
                "< 50 ms",
                p99,
                None if p99 is None else p99 < 50,
            )
        )
    out += [
        _ratio(
            rows,
            f"append, {w} writers: ledger / eventsourcing",
            "≥ 20×",
            f"append{w}.ledger",
            f"append{w}.eventsourcing",
            20,
        ),
        _ratio(
            rows, "batch appends: ledger / COPY limit", "≥ 0.5", "batch.ledger", "batch.copy", 0.5
        ),
        _ratio(
            rows,
            "batch appends: COPY into events / COPY limit",
            "(told)",
            "batch.copy_events",
            "batch.copy",
            None,
        ),
        _ratio(
            rows,
            "batch appends: ledger / COPY into events",
            "(told)",
            "batch.ledger",
            "batch.copy_events",
            None,
        ),
        _ratio(
            rows,
            "verify server side / read limit",
            "≥ 0.7",
            "verify.server",
            "verify.readlimit",
            0.7,
        ),
        _ratio(
            rows, "verify offline / read limit", "≥ 0.7", "verify.offline", "verify.readlimit", 0.7
        ),
        _ratio(
            rows,
            "verify offline: every core / one process",
            "(scaling)",
            "verify.offline",
            "verify.offline1",
            None,
        ),
    ]
    lag = _p99(rows, "lag2000.ledger")
    out.append(
        Ratio(
            "projection lag p99 at 2,000 events/s (ms)",
            "< 50 ms",
            lag,
            None if lag is None else lag < 50,
        )
    )
    rb = _get(rows, "rebuild.ledger")
    limit = 30 * config.big_events / 1_000_000
    out.append(
        Ratio(
            f"rebuild of {config.big_events:,} events (s)",
            f"< {limit:.3g} s" + ("" if config.big_events == 1_000_000 else " (30 s per million)"),
            rb.median if rb else None,
            None if rb is None or rb.median is None else rb.median < limit,
        )
    )
    rp = _p99(rows, "replay.ledger")
    out.append(Ratio("replay p99 (ms)", "< 10 ms", rp, None if rp is None else rp < 10))
    pages = [p for r in rows if r.key.startswith("console.") and (p := _p99(rows, r.key))]
    worst = max(pages) if pages else None
    out.append(
        Ratio(
            "console page p99, slowest page (ms)",
            "< 200 ms",
            worst,
            None if worst is None else worst < 200,
        )
    )
    if config.scale:
        out.append(
            _ratio(
                rows,
                f"appends with {config.scale_events:,} stored / empty",
                "≥ 0.9",
                "scale.full",
                "scale.empty",
                0.9,
            )
        )
        out.append(
            _ratio(
                rows,
                f"HTTP submit with {config.scale_events:,} stored / empty",
                "≥ 0.9",
                "scale.http.full",
                "scale.http.empty",
                0.9,
            )
        )
        hf, he = _p99(rows, "scale.http.full"), _p99(rows, "scale.http.empty")
        out.append(
            Ratio(
                f"HTTP submit p99 with {config.scale_events:,} stored (ms)",
                "< 50 ms",
                hf,
                None if hf is None else hf < 50,
                f"empty: {he:.1f} ms" if he else "",
            )
        )
        full, empty = _p99(rows, "scale.full"), _p99(rows, "scale.empty")
        v = full / empty if full and empty else None
        out.append(
            Ratio(
                f"append p99 with {config.scale_events:,} stored / empty",
                "≤ 1.1",
                v,
                None if v is None else v <= 1.1,
            )
        )
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(report: dict[str, Any], rows: list[Row], rs: list[Ratio]) -> str:
    m = report["machine"]
    pgs = m["postgresql"]
    c = report["config"]
    mode = {"full": "full run", "quick": "QUICK run (smaller sizes)", "tiny": "tiny smoke run"}
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`python -m bench`); every figure below comes from one run,",
        "ours and the comparators side by side on the same machine and the same PostgreSQL.",
        "Absolute figures drift on shared machines; the ratios in one run are what count.",
        "",
        f"- Run: {report['started']} UTC, {mode.get(c['mode'], c['mode'])}"
        + (", with SCALE" if c["scale"] else "")
        + f", {report['seconds']:.0f} s in all, code at `{report['commit']}`.",
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, {m['os']},"
        f" Python {m['python']}.",
        f"- PostgreSQL {pgs['server_version']} ({m['postgresql_kind']}): fsync={pgs['fsync']},"
        f" synchronous_commit={pgs['synchronous_commit']}, wal_sync_method={pgs['wal_sync_method']},"
        f" full_page_writes={pgs['full_page_writes']}, shared_buffers={pgs['shared_buffers']}."
        " Every commit is durable.",
        f"- Versions: {pg.versions_line(m)} (every other dependency pinned in"
        " `requirements.lock`, which `make` installs).",
        f"- {c['reps']} repetitions per row (median, min, max); HTTP rows: {c['http_seconds']} s of"
        f" load each after {c['http_warmup']} s of warm-up, {c['connections']} keep-alive"
        f" connections, {c['workers']} uvicorn worker(s) per server; in-process rows:"
        f" {c['append_seconds']} s each after {c['append_warmup']} s of warm-up.",
        "",
        "## Results",
        "",
        md_table(HEADER, table_rows(rows)),
        "",
        "## Targets",
        "",
        md_table(RATIO_HEADER, ratio_rows(rs)),
        "",
        "## How it is measured",
        "",
        *[f"- {n}" for n in report["notes"]],
        "",
    ]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(lines)


def render(path: Path, docs: Path) -> int:
    """docs/benchmarks.md from a saved report: the same figures, current notes."""
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    fields = set(Row.__slots__)
    rows = [Row(**{k: v for k, v in r.items() if k in fields}) for r in report["rows"]]
    rs = [
        Ratio(x["name"], x["target"], x["value"], x["meets"], x.get("detail", ""))
        for x in report["ratios"]
    ]
    docs.write_text(markdown(report, rows, rs))
    print(f"bench: wrote {docs.name} from {path.name}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs (< 2 min)")
    p.add_argument("--tiny", action="store_true", help="a smoke run of seconds (tests)")
    p.add_argument("--scale", action="store_true", help="also append on a big ledger (COPY first)")
    p.add_argument("--only", help=f"comma-separated workloads out of: {', '.join(WORKLOADS)}")
    p.add_argument("--reps", type=int, help="repetitions per row (at least 3 for a report)")
    p.add_argument("--workers", type=int, help="uvicorn workers per HTTP server (default 1)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--docs",
        type=Path,
        help="where to write the markdown (default: docs/benchmarks.md, for a full run only;"
        " QUICK and tiny runs write their JSON but leave the recorded run alone)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: write docs/benchmarks.md again from a run's JSON"
        " (after bench/analysis.md changed)",
    )
    args = p.parse_args(argv)
    if args.render:
        return render(args.render, args.docs or DOCS)

    from ledger import logs

    logs.configure("console" if sys.stderr.isatty() else "json", "warning")
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    config = Config.for_mode(mode, scale=args.scale)
    if args.reps:
        config.reps = args.reps
    if args.workers:
        config.workers = args.workers
    chosen = list(WORKLOADS) if not args.only else [w.strip() for w in args.only.split(",")]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s): {', '.join(unknown)}")

    started = dt.datetime.now(dt.UTC)
    t_start = time.perf_counter()
    server = pg.Server()
    rows: list[Row] = []
    try:
        machine = pg.machine(server)
        print(f"bench: {pg.versions_line(machine)}", file=sys.stderr, flush=True)
        with bench(server, config) as b:
            for name in chosen:
                t0 = time.perf_counter()
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                got = WORKLOADS[name](b)
                rows += got
                print(
                    f"bench: {name} done in {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            notes = [
                "Load generator: `python -m bench.loadgen` in its own process, asyncio sockets on"
                " uvloop, HTTP/1.1 keep-alive, the same for every HTTP server; latency is per request"
                " (send to last byte). Servers are real uvicorn processes on 127.0.0.1, request"
                " logging off for all.",
                "HTTP floor: the same route and pydantic-validated body, no database. Original design:"
                " FastAPI + SQLAlchemy (sync, psycopg 3), a `tasks` table, one INSERT and one commit"
                " per request, no chain (`bench/apps.py`).",
                "In-process appends go through `ledger.appender.Appender` (one connection, group"
                " commit through `ledger_append()`); one new task stream per command with"
                " expected version 0, named `task-<UUIDv7>` as `POST /tasks` names them (time-ordered"
                " keys: new streams land at the right edge of the (stream, version) index, also for"
                " plain INSERT). `eventsourcing` runs in threads with its PostgreSQL persistence"
                " (psycopg 3), a pool of one connection per thread; plain INSERT runs one autocommit"
                " connection per writer.",
                "commits/event: counted by the appender for ours; from `pg_stat_database.xact_commit`"
                " for HTTP rows (read-only transactions such as key look-ups count too); by"
                " construction for the others.",
                "Verification server side is what `GET /audit/verify?from=1` runs (`verify_rows`"
                " over a server-side cursor), without HTTP; offline is the `ledger verify FILE`"
                " command itself (`verify_path`: every core, or `--jobs 1`) on an export written"
                " first, timed from its start; the read limit COPYs the same rows out and SHA-256s"
                " each event's stored bytes.",
                *b.notes,
            ]
    finally:
        server.close()
    rs = ratios(rows, config)
    seconds = time.perf_counter() - t_start

    print()
    print(pg.versions_line(machine))
    print(text_table(HEADER, table_rows(rows)))
    print()
    print(text_table(RATIO_HEADER, ratio_rows(rs)))
    print()
    print(f"bench: {mode} run in {seconds:.0f} s", file=sys.stderr)

    report: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "seconds": seconds,
        "commit": _git_commit(),
        "machine": machine,
        "config": {
            "mode": mode,
            "scale": config.scale,
            "reps": config.reps,
            "http_seconds": config.http_seconds,
            "http_warmup": config.http_warmup,
            "append_seconds": config.append_seconds,
            "append_warmup": config.append_warmup,
            "connections": config.connections,
            "workers": config.workers,
            "scale_workers": list(config.scale_workers),
            "writers": list(config.writers),
            "batch_writers": config.batch_writers,
            "big_events": config.big_events,
            "copy_rows": config.copy_rows,
            "scale_events": config.scale_events,
        },
        "notes": notes,
        "rows": [r.as_dict() for r in rows],
        "ratios": [
            {
                "name": x.name,
                "target": x.target,
                "value": x.value,
                "meets": x.meets,
                "detail": x.detail,
            }
            for x in rs
        ],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%S")
    for path in (args.out_dir / f"bench-{mode}-{stamp}.json", args.out_dir / "latest.json"):
        path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    docs = args.docs or (DOCS if mode == "full" and chosen == list(WORKLOADS) else None)
    if docs is not None and not args.no_docs:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(markdown(report, rows, rs))
        print(f"bench: wrote {docs.name}", file=sys.stderr)
    else:
        print(
            "bench: docs/benchmarks.md left as it is (only a full run of every workload"
            " rewrites it, or --docs PATH)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
