"""Fixtures of the API tier beside the shared ones in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A signing key of the test's own (made by the service on first start)."""
    return tmp_path / "keys" / "signing.key"
