"""``ledger signing-key show | rotate``: the checkpoint signing key."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ledger import db
from ledger.proofs.origin import settings_with_stored_origin
from ledger.proofs.signing import key_path, load_keys, retired_path, rotate_key_file
from ledger.settings import Settings

HELP = "show or rotate the checkpoint signing key"


def configure(p: argparse.ArgumentParser) -> None:
    p.description = "show the checkpoint signing key's verifier key, or rotate the key"
    sub = p.add_subparsers(dest="signing_cmd", required=True)
    sub.add_parser("show", help="print the verifier key (vkey), creating the key if needed")
    sub.add_parser(
        "rotate",
        help="replace the key; the running leader announces the new one in the ledger "
        "before it signs, and the old one co-signs the checkpoint covering that",
    )


def run(args: Any) -> int:
    settings = Settings()
    url = db.resolve_url(settings)
    db.apply_schema(url)
    settings = settings_with_stored_origin(settings, url)
    path = key_path(settings)
    if args.signing_cmd == "show":
        print(load_keys(settings).get().verifier.vkey)
        return 0
    old, new = rotate_key_file(path, settings.origin)
    print(new.verifier.vkey)
    print(
        f"rotated {path}: {old.verifier.key_id.hex()} -> {new.verifier.key_id.hex()}; the old "
        f"key is kept as {retired_path(path, old.verifier.key_id).name} to co-sign the "
        "announcement",
        file=sys.stderr,
    )
    return 0
