"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real anonymous mosquitto on a free loopback port (skips where mosquitto is not installed)."""
    with Mosquitto(tmp_path) as b:
        yield b
