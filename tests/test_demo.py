"""The demo end to end, small: everything converges, nothing is accepted twice."""

from __future__ import annotations

import pytest

from flex_bridge.demo import DemoOptions, run_demo


async def test_small_demo_converges_with_no_double_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = await run_demo(DemoOptions(tasks=12, agents=3, rate=30.0, seed=3, deadline=30.0))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Sync vs TaskRouter mismatches                0" in out
    assert "double accepts                               0" in out
    assert "12/12 tasks done" in out
    assert "result: OK" in out
