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

    monkeypatch.setattr(cli.os, "execv", execv)
    with pytest.raises(HandedOver):
        cli.main(argv)
    assert seen == [[sys.executable, "-m", "projections", *program]]
