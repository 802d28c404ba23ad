"""README.md's Python blocks run as written (issue 13), against a real emulator on a socket.

The README tells the reader to start ``flex-bridge emulator ... --state-file emulator.json``
and then run its snippet beside it. Here the emulator runs in a thread instead, its state file
is written exactly as the command writes it, and each ```python block is executed unchanged
in that directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flex_bridge.emulator.core import Emulator
from tests.support.emulator import RunningEmulator

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[int, str]]:
    """Each ```python block of the README, with the line it starts on."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_readme_has_a_python_block() -> None:
    assert python_blocks(), "README.md has no ```python block: this test would check nothing"


@pytest.mark.parametrize(("line", "code"), python_blocks(), ids=lambda v: str(v)[:12])
def test_each_python_block_runs_as_written(
    line: int,
    code: str,
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = start_emulator()
    assert running.state is not None
    # What `flex-bridge emulator --state-file emulator.json` writes (flex_bridge/cli.py).
    (tmp_path / "emulator.json").write_text(
        replace(running.state, base_url=running.url).to_json() + "\n"
    )
    monkeypatch.chdir(tmp_path)
    workspace_sid = running.state.workspace_sid
    before: set[str] = running.call(lambda emu: set(emu.taskrouter.workspaces[workspace_sid].tasks))

    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)

    # The block created a task through the official client, on this emulator, and said so.
    def created(emu: Emulator) -> dict[str, Any]:
        tasks = emu.taskrouter.workspaces[workspace_sid].tasks
        return {sid: json.loads(t.attributes) for sid, t in tasks.items() if sid not in before}

    new_tasks: dict[str, Any] = running.call(created)
    assert list(new_tasks.values()) == [{"type": "support"}]
    (sid,) = new_tasks
    printed = capsys.readouterr().out.split()
    assert printed[0] == sid
    assert re.fullmatch(r"WT[0-9a-f]{32}", sid)
    assert printed[1] in ("pending", "reserved")
