"""Test-wide settings: models converted on first use go to a temporary model directory, and
nothing is written to the user's home."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if "HEROES_MODEL_DIR" not in os.environ:
        os.environ["HEROES_MODEL_DIR"] = tempfile.mkdtemp(prefix="heroes-models-")
    os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="heroes-cache-"))
    # Ray takes seconds to start: tests of other parts use the local engine, which makes the same
    # records (tests/pipeline/test_raypass.py compares them); Ray tests and the end-to-end test
    # ask for the Ray engine themselves.
    os.environ.setdefault("HEROES_ENGINE", "local")
