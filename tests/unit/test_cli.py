"""The ``ledger`` command line's own parsing: no database."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from ledger import cli


class HandedOver(Exception):
    pass


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        (["project"], ["run"]),
        (["project", "--only", "tasks"], ["run", "--only", "tasks"]),
        (["project", "-h"], ["run", "-h"]),
        (["projections", "--help"], ["--help"]),
        (["projections", "check", "tasks"], ["check", "tasks"]),
    ],
)
def test_projections_commands_hand_their_arguments_over_whole(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], program: list[str]
) -> None:
    seen: list[Any] = []

    def execv(path: str, args: list[str]) -> None:
        seen.append(args)
        raise HandedOver

    monkeypatch.setattr(cli.projections.os, "execv", execv)
    with pytest.raises(HandedOver):
        cli.main(argv)
    assert seen == [[sys.executable, "-m", "projections", *program]]


def test_worker_against_an_unreachable_url_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert cli.main(["worker", "--url", url, "--key", "lk_test", "--once"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"ledger: cannot reach {url}/tasks/claim: ")
    assert len(err.splitlines()) == 1, err
