"""Fixtures for the interop tests against real third-party SIP peers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import require_binary
from interop.baresip.config import BaresipConfig
from interop.baresip.process import Baresip


@pytest.fixture
def baresip_factory(tmp_path: Path) -> Iterator[Callable[[BaresipConfig], Baresip]]:
    """Starts baresip instances (each in tmp_path/NAME); all are stopped at teardown."""
    binary = require_binary("baresip")
    started: list[Baresip] = []

    def start(config: BaresipConfig) -> Baresip:
        b = Baresip(binary, config, tmp_path)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
