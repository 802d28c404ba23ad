"""The crash tests' launcher (tests/support/crashing_bridge.py) parses its kill point strictly."""

from __future__ import annotations

import argparse

import pytest

from tests.support.crashing_bridge import kill_at


@pytest.mark.parametrize(
    ("value", "expected"),
    [("applied", ("applied", 1)), ("recorded:3", ("recorded", 3)), ("announced", ("announced", 1))],
)
def test_crash_points(value: str, expected: tuple[str, int]) -> None:
    assert kill_at(value) == expected


@pytest.mark.parametrize("value", ["settled", "later", ":1", "applied:0", "applied:x"])
def test_malformed_crash_point(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="recorded, announced, applied"):
        kill_at(value)
