"""``python -m bench.soak --seconds N``: run the soak and print its figures.

Exit status 0 when every verdict holds (nothing lost or applied twice, no
task claimed twice or stranded, chain, checkpoints and views verify, the
service recovered from every fault), 1 otherwise."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from bench.pgctl import OwnPostgres
from bench.soak import checks
from bench.soak.faults import FAULTS, Faults, Injected
from bench.soak.load import Agent, Record, auditor, officer
from bench.soak.proxy import CuttingProxy
from bench.soak.service import Service
from ledger import db
from tests.support import create_key

DRAIN_LIMIT = 90.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", 600)))
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--rate", type=float, default=8.0, help="tasks submitted per second, in all")
    p.add_argument("--gap", type=float, default=5.0, help="seconds of calm after a recovery")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"which faults, in this order, comma-separated (default: {','.join(FAULTS)}; "
        "empty: none)",
    )
    return p.parse_args(argv)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def _statuses(record: Record, faults: list[Injected]) -> dict[str, dict[str, int]]:
    """What the clients saw from each fault's start until it had recovered."""
    out: dict[str, Counter[str]] = {}
    for f in faults:
        until = f.ended + f.recovered.get("write", 0.0)
        seen = Counter(s for t, s in record.seen if f.began <= t <= until)
        out.setdefault(f.kind, Counter()).update(seen)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _figures(
    args: argparse.Namespace, record: Record, faults: Faults, facts: dict[str, Any], **more: Any
) -> dict[str, Any]:
    recovery: dict[str, Any] = {}
    for kind in FAULTS:
        done = [f for f in faults.done if f.kind == kind and f.happened]
        recovery[kind] = {
            "injected": len(done),
            "not_injected": sum(1 for f in faults.done if f.kind == kind and not f.happened),
        } | {
            what: {
                "p50_s": _pct([f.recovered[what] for f in done if what in f.recovered], 0.5),
                "p99_s": _pct([f.recovered[what] for f in done if what in f.recovered], 0.99),
                "missing": sum(1 for f in done if what not in f.recovered),
            }
            for what in ("write", "view", "checkpoint")
        }
    return {
        "seconds": args.seconds,
        "agents": args.agents,
        "target_rate": args.rate,
        **facts,
        "recovery_after_fault_ended": recovery,
        "statuses_during_outages": _statuses(record, faults.done),
        "clients": {
            "server_errors": sum(1 for _, st in record.seen if st.startswith("5") and st != "503"),
            "statuses_seen": dict(sorted(Counter(st for _, st in record.seen).items())),
            "gave_up": record.gave_up,
            "claims_lost_to_lapsed_leases": record.claims_lost,
            "claims_lost_examples": record.claims_lost_why[:5],
            "unexpected_answers": len(record.unexpected),
            "unexpected_examples": record.unexpected[:5],
        },
        **more,
    }


def _verdict(fig: dict[str, Any]) -> list[str]:
    bad = [
        k
        for k in ("acknowledged_lost", "applied_twice", "claimed_twice", "stranded", "illegal")
        if fig.get(k)
    ]
    bad += [
        k
        for k in ("chain_verify_api", "chain_verify_offline", "checkpoints_consistent")
        if not fig["audit"].get(k)
    ]
    bad += [f"view {n}" for n, ok in fig["views_check"].items() if not ok]
    bad += [
        f"{kind} not recovered ({what})"
        for kind, r in fig["recovery_after_fault_ended"].items()
        for what in ("write", "view", "checkpoint")
        if r[what]["missing"]
    ]
    bad += [
        f"{kind} not injected"
        for kind, r in fig["recovery_after_fault_ended"].items()
        if r["not_injected"]
    ]
    if fig["clients"]["unexpected_answers"]:
        bad.append("unexpected answers")
    if fig["clients"]["server_errors"]:
        bad.append("5xx answers other than 503")
    return bad


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="ledger-soak-"))
    pg = OwnPostgres()
    service: Service | None = None
    proxy: CuttingProxy | None = None
    try:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE ledger")
        url = pg.url.replace("/postgres?", "/ledger?")
        db.apply_schema(url)
        agents = {f"agent-{i}": create_key(url, f"agent-{i}", "agent") for i in range(args.agents)}
        prober = create_key(url, "prober", "agent")
        officer_key = create_key(url, "officer-1", "officer")
        auditor_key = create_key(url, "auditor-1", "auditor")
        service = Service(url, work / "home", work / "ledger.log")
        service.start()
        proxy = CuttingProxy(service.port)
        proxy.start()
        record = Record()
        stop, submitting = threading.Event(), threading.Event()
        submitting.set()
        workers = [
            Agent(name, key, proxy.url, record, args.rate / args.agents)
            for name, key in agents.items()
        ]
        threads = [threading.Thread(target=a.run, args=(stop, submitting)) for a in workers]
        threads += [
            threading.Thread(target=officer, args=(proxy.url, officer_key, record, stop)),
            threading.Thread(target=auditor, args=(proxy.url, auditor_key, record, stop)),
        ]
        for t in threads:
            t.start()
        faults = Faults(service, pg, "ledger", proxy, prober, auditor_key)
        t0 = time.monotonic()
        kinds = [k for k in args.faults.split(",") if k]
        unknown = set(kinds) - set(FAULTS)
        if unknown:
            raise SystemExit(f"no such fault: {', '.join(sorted(unknown))}")
        gap = args.gap
        i = 0
        stop.wait(3.0)
        # round after round of the faults, each once at least, while the run lasts
        while kinds and (i < len(kinds) or time.monotonic() - t0 < args.seconds - gap):
            kind = kinds[i % len(kinds)]
            f = faults.inject(kind)
            print(
                f"soak: {time.monotonic() - t0:6.1f} s {kind}: {f.note}; recovered "
                + ", ".join(f"{k} {v:.2f} s" for k, v in f.recovered.items()),
                flush=True,
            )
            i += 1
            stop.wait(gap)
        stop.wait(max(0.0, args.seconds - (time.monotonic() - t0)))
        submitting.clear()  # the drain: every task submitted gets to a final status
        drain_from = time.monotonic()
        while time.monotonic() - drain_from < DRAIN_LIMIT:
            if not checks.ledger_facts(url, record)["stranded"]:
                break
            time.sleep(1.0)
        ran = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(timeout=PERSIST_JOIN)
        facts = checks.ledger_facts(url, record)
        fig = _figures(
            args,
            record,
            faults,
            facts,
            ran_seconds=round(ran, 1),
            acknowledged_per_second=round(len(record.acks) / ran, 1),
            audit=checks.audit(service.url, auditor_key, record, work),
            views_check=checks.views_check(url),
            proxy_cuts=proxy.cuts,
            service_restarts=len(service.restarts),
        )
        bad = _verdict(fig)
        fig["verdict"] = "ok" if not bad else f"FAILED: {', '.join(bad)}"
        print(json.dumps(fig, indent=2))
        if args.json:
            args.json.write_text(json.dumps(fig, indent=2) + "\n")
        if bad:
            print(f"soak: logs kept in {work}", file=sys.stderr)
        return 0 if not bad else 1
    finally:
        if proxy is not None:
            proxy.stop()
        if service is not None:
            service.stop()
        pg.close()
        if "bad" in locals() and not locals()["bad"]:
            shutil.rmtree(work, ignore_errors=True)


PERSIST_JOIN = 150.0


def main(argv: list[str] | None = None) -> int:
    return run(_parse(argv))


if __name__ == "__main__":
    raise SystemExit(main())
