"""``ledger serve`` (the API alone) and ``ledger run`` (the API and its
companion processes, supervised: a companion that dies is started again,
and so is the API once it has served)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from ledger import db
from ledger.proofs.origin import settings_with_stored_origin
from ledger.settings import Settings

RUN_HELP = "serve the API with its projection runner and tree builder"
SERVE_HELP = "serve the API only (--tree: and stand by for the tree builder)"

# Background processes `ledger run` starts beside the API: argv lists (python -m ...).
RUN_COMPANIONS: list[list[str]] = [
    ["projections"],  # the projection runner
    ["ledger", "tree"],  # the tree builder and checkpoint signer
]
RESTART_SECONDS = 5.0
# An API that exits sooner than this after its start is not restarted: it could
# not start (a port taken, a bad setting), and `ledger run` exits with its code.
API_SETTLE_SECONDS = 10.0


def configure(s: argparse.ArgumentParser) -> None:
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    if s.prog.endswith(" serve"):
        s.add_argument(
            "--tree",
            action="store_true",
            help="also run the tree builder and checkpoint signer in the API process"
            " (a standby for `ledger tree`: one leader across processes)",
        )


def _refuse_another_origin(settings: Settings, url: str) -> None:
    """Before anything starts: a LEDGER_ORIGIN other than the ledger's own is a
    one-line refusal (OriginMismatch), not a traceback out of a started server."""
    db.apply_schema(url)
    settings_with_stored_origin(settings, url)


def _raise_open_files() -> None:
    """Each connection is a file: a burst of clients must meet backpressure
    (a 503), not a soft limit of 1,024 open files (refused connections)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def serve(args: Any) -> int:
    import uvicorn

    _raise_open_files()
    settings = Settings()
    url = db.resolve_url(settings)
    if args.workers > 1 and not settings.database_url:
        # one embedded server for every worker: resolve it here and hand it down
        os.environ["LEDGER_DATABASE_URL"] = url
    _refuse_another_origin(settings, url)
    uvicorn.run(
        "ledger.api.app:create_app_with_tree" if args.tree else "ledger.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


def run(args: Any) -> int:
    """The API and its companion processes (projection runner), one database."""
    settings = Settings()
    url = db.resolve_url(settings)
    _refuse_another_origin(settings, url)
    env = {**os.environ, "LEDGER_DATABASE_URL": url}
    print(f"ledger: database {db.redact(url)}", file=sys.stderr)
    print(f"ledger: serving on http://{args.host}:{args.port}  (Ctrl-C stops)", file=sys.stderr)

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", *argv], env=env)

    companions = [start(argv) for argv in RUN_COMPANIONS]
    api_argv = ["ledger", "serve", "--host", args.host, "--port", str(args.port)]
    api_argv += ["--workers", str(args.workers)]
    api = start(api_argv)
    api_started = time.monotonic()
    stopping: list[bool] = []

    def stop(*_: Any) -> None:
        stopping.append(True)
        for p in [*companions, api]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    restarts = [0.0] * len(RUN_COMPANIONS)
    try:
        while True:
            code = api.poll()
            if code is not None:
                if stopping or code == 0 or time.monotonic() - api_started < API_SETTLE_SECONDS:
                    break  # asked to stop, or it could not start: say so, do not loop
                # the API died after serving (killed, crashed): start it again at once;
                # the companions go on, and clients retrying meanwhile get in again
                print(f"ledger: the API exited with {code}; restarting it", file=sys.stderr)
                api, api_started = start(api_argv), time.monotonic()
            time.sleep(0.5)
            for i, p in enumerate(companions):
                if stopping or p.poll() in (None, 0) or time.monotonic() < restarts[i]:
                    continue  # running, or it stopped cleanly: asked to (a signal), not a crash
                # a companion died (a runner killed, a crash): start it again,
                # at most every 5 s, so the views never quietly stop moving
                name = " ".join(RUN_COMPANIONS[i])
                print(f"ledger: {name} exited with {p.returncode}; restarting it", file=sys.stderr)
                restarts[i] = time.monotonic() + RESTART_SECONDS
                companions[i] = start(RUN_COMPANIONS[i])
    except KeyboardInterrupt:
        code = 0
    stop()
    for p in [*companions, api]:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    if stopping and code in (-signal.SIGTERM, -signal.SIGINT):
        code = 0  # asked to stop, and stopped (uvicorn re-raises the signal it handled)
    return code
