"""The demo end to end, small: everything converges, nothing is accepted twice."""

from __future__ import annotations

import os
import re

import aiohttp
import pytest

from flex_bridge.cli import main
from flex_bridge.demo import DemoOptions, run_demo
from flex_bridge.demo.crm import load_customers, start_crm
from flex_bridge.demo.postgres import server_binaries


@pytest.mark.slow
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
    enriched = re.search(r"^tasks enriched\s+(\d+)$", out, re.MULTILINE)
    assert enriched is not None, out
    assert int(enriched.group(1)) > 0  # from the demo CRM, on task.created and before accepts


@pytest.mark.slow
async def test_the_demo_with_three_bridges_on_one_postgresql_journal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``demo --instances 3``: three bridges behind a round-robin balancer, on an embedded
    PostgreSQL journal; every callback is spread over them, and still nothing is lost,
    inconsistent or accepted twice."""
    if server_binaries() is None:
        message = "Debian's postgresql package is not installed (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = DemoOptions(tasks=12, agents=3, rate=30.0, seed=5, deadline=30.0, instances=3)
    code = await run_demo(options)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 bridges on one PostgreSQL journal" in out
    assert "Sync vs TaskRouter mismatches                0" in out
    assert "double accepts                               0" in out
    shares = re.search(r"^callbacks answered per bridge: (.*)$", out, re.MULTILINE)
    assert shares is not None, out
    counts = [int(part.rsplit(": ", 1)[1]) for part in shares.group(1).split(", ")]
    assert len(counts) == 3 and all(n > 0 for n in counts)


@pytest.mark.parametrize("count", ["0", "5"])
def test_a_bad_instance_count_is_a_configuration_error(
    count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--instances", count]) == 2
    assert "--instances must be between 1 and 4" in capsys.readouterr().err


async def test_the_demo_crm_serves_its_packaged_file() -> None:
    customers = load_customers()
    assert sorted(customers) == [f"C-{n}" for n in range(1000, 1040)]
    assert all(
        set(record) == {"name", "tier", "open_cases", "preferred_language"}
        for record in customers.values()
    )
    crm = await start_crm()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(crm.url, params={"customer_id": "C-1000"}) as found:
                assert found.status == 200
                assert await found.json() == {"customer_id": "C-1000", **customers["C-1000"]}
            async with session.get(crm.url, params={"customer_id": "C-1040"}) as unknown:
                assert unknown.status == 404
            async with session.get(crm.url) as missing:
                assert missing.status == 400
    finally:
        await crm.close()
