"""Every path ``tests/conftest.py`` marks slow still exists, so no rename escapes the mark."""

from __future__ import annotations

import pytest

from tests.conftest import SLOW_PATHS, TESTS


@pytest.mark.parametrize("path", SLOW_PATHS)
def test_every_path_marked_slow_exists(path: str) -> None:
    assert (TESTS / path).exists(), f"tests/{path} is gone: update SLOW_PATHS in tests/conftest.py"
