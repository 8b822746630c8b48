"""The split-view story, every party its own process: the service and two
witnesses. A superuser rewrites history, throws away the tree, the
checkpoints and the cosignatures, and starts the service again. The forged
log is signed by the operator's key, but no witness cosigns it, and an
auditor holding a cosigned checkpoint from before detects the rewrite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ledger.proofs import cosignature, note, signing
from tests.api.test_checkpoint_audit import rewrite_history, wipe_tree
from tests.support import (
    ORIGIN,
    ROOT,
    append_events,
    auth,
    create_key,
    ledger_process,
    ledger_verify,
    wait_until,
)
from tests.witness_support import witness_key, witnesses


def cosigned_checkpoint(base: str, keys: list[cosignature.CosignerKey], size: int) -> Any:
    r = httpx.get(f"{base}/log/checkpoint", timeout=5)
    if r.status_code != 200 or int(r.headers["x-ledger-tree-size"]) < size:
        return None
    return r.text if len(cosignature.count_valid(r.text, keys)[0]) == 2 else None


def test_a_forged_log_gets_no_cosignature_and_is_caught(
    db_url: str,
    tmp_path: Path,
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
) -> None:
    home = tmp_path / "ledger"
    key_file = home / "signing.key"
    log_vkey = signing.create_key_file(key_file, ORIGIN).verifier.vkey
    homes = [tmp_path / "w1", tmp_path / "w2"]
    wk = [witness_key(h, f"witness.example/w{i}") for i, h in enumerate(homes, 1)]
    keys = [cosignature.CosignerKey.parse(k) for k in wk]
    auditor = create_key(db_url, "auditor-1", "auditor")
    a = auth(auditor)
    files = {n: tmp_path / n for n in ("saved.txt", "forged.txt", "proof.json", "now.ndjson")}
    with witnesses(homes, [log_vkey]) as (w1, w2):
        env = {
            "LEDGER_ORIGIN": ORIGIN,
            "LEDGER_SIGNING_KEY_FILE": str(key_file),
            "LEDGER_CHECKPOINT_INTERVAL_SECONDS": "0.1",
            "LEDGER_WITNESSES": f"{w1.url} {wk[0]},{w2.url} {wk[1]}",
            "LEDGER_WITNESS_QUORUM": "2",
            "LEDGER_WITNESS_RETRY_SECONDS": "0.2",
        }
        with ledger_process("run", db_url, home, **env) as (_proc, base):
            append_events(service_conn, 20)
            saved = wait_until(
                lambda: cosigned_checkpoint(base, keys, 21), what="a cosigned checkpoint"
            )
        files["saved.txt"].write_text(saved)  # the auditor keeps it
        saved_size = int(saved.split("\n")[1])

        # the superuser's rewrite, with the service stopped; every trace of
        # the witnesses in the database goes with the checkpoints
        rewrite_history(super_conn, 7)
        super_conn.execute(
            "ALTER TABLE checkpoint_cosignatures DISABLE TRIGGER checkpoint_cosignatures_no_update_delete"
        )
        super_conn.execute("DELETE FROM checkpoint_cosignatures")
        super_conn.execute("DELETE FROM witness_status")
        wipe_tree(super_conn)
        with ledger_process("run", db_url, home, **env) as (_proc, base):
            append_events(service_conn, 3)
            size = saved_size + 3

            def forged_signed() -> Any:
                r = httpx.get(f"{base}/audit/checkpoint", headers=a, timeout=10)
                return (
                    r.text
                    if r.status_code == 200 and int(r.headers["x-ledger-tree-size"]) >= size
                    else None
                )

            forged = wait_until(forged_signed, what="the forged log signed by the operator")
            assert note.open_checkpoint(
                forged, [note.Verifier.parse(log_vkey)]
            )  # a valid log signature

            def refused() -> bool:
                ws = httpx.get(f"{base}/health", timeout=5).json()["witnesses"]
                return len(ws) == 2 and all((w["error"] or "").startswith("422") for w in ws)

            wait_until(refused, what="both witnesses refusing the forged log")
            assert cosignature.count_valid(forged, keys)[0] == []
            assert httpx.get(f"{base}/log/checkpoint", timeout=5).status_code == 503
            r = httpx.get(
                f"{base}/audit/proof/consistency",
                params={"from": saved_size, "to": size},
                headers=a,
            )
            files["proof.json"].write_text(r.text)
            files["now.ndjson"].write_bytes(httpx.get(f"{base}/audit/export", headers=a).content)
        files["forged.txt"].write_text(forged)
        # each witness recorded the fork
        for h in homes:
            forks = [json.loads(line) for line in (h / "forks.ndjson").read_text().splitlines()]
            assert forks and all(f["origin"] == ORIGIN for f in forks)
            # a refused checkpoint is not asked again: one record per forged checkpoint
            assert len({f["request"] for f in forks}) == len(forks)

    # the auditor, offline: the forged checkpoint lacks its quorum...
    quorum = ["--key", log_vkey, "--witness", wk[0], "--witness", wk[1], "--quorum", "2"]
    out = ledger_verify(files["now.ndjson"], "--checkpoint", str(files["forged.txt"]), *quorum)
    assert out.returncode == 1 and "0 valid cosignatures of the 2 demanded" in out.stdout, (
        out.stdout
    )
    # ...the ledger as it now is does not match the cosigned one the auditor kept...
    out = ledger_verify(files["now.ndjson"], "--checkpoint", str(files["saved.txt"]), *quorum)
    assert out.returncode == 1 and "differs from what was signed" in out.stdout
    # ...and the forged checkpoint does not extend it
    out = verify(
        "--checkpoint",
        str(files["forged.txt"]),
        "--old-checkpoint",
        str(files["saved.txt"]),
        "--proof",
        str(files["proof.json"]),
        "--key",
        log_vkey,
    )
    assert out.returncode == 1 and "history was rewritten" in out.stdout, out.stdout


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger", "verify", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
