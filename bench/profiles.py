"""Summaries of py-spy profiles (``--format raw``: one collapsed stack and its count a line)
and of ``strace -c`` tables, by component.

``python -m bench.profiles FILE.raw [...]`` prints the summary of each file.

A sample counts *inclusively* for every component that has a frame anywhere on its stack (so
the inclusive shares add up to more than 100 %), and *exclusively* for one: the innermost
frame that belongs to a named component (a frame of the standard library that is not one of
them, ``re`` or ``urllib.parse`` say, counts for its nearest caller that is). py-spy leaves out
idle threads, so the samples are on-CPU time (or time runnable, on a busy machine).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

EVENT_LOOP = "asyncio event loop"
# (component, substrings of a frame's file path), first match wins, innermost first. The
# order matters only where paths overlap: the bridge's modules before the package as a whole.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("journal (sqlite3)", ("/flex_bridge/adapters/journal/", "/sqlite3/")),
    ("coordinator", ("/flex_bridge/app/coordinator.py", "/flex_bridge/app/ownership.py")),
    (
        "sync_channel / taskrouter adapters",
        (
            "/flex_bridge/adapters/sync_channel.py",
            "/flex_bridge/adapters/taskrouter.py",
            "/flex_bridge/adapters/twilio_errors.py",
        ),
    ),
    ("http adapter + pacing", ("/flex_bridge/adapters/http.py", "/flex_bridge/adapters/pacing.py")),
    ("retry (tenacity)", ("/flex_bridge/adapters/retry.py", "/tenacity/")),
    ("bridge web/ + app/ (webhook, use cases)", ("/flex_bridge/web/", "/flex_bridge/app/")),
    ("emulator: sync", ("/flex_bridge/emulator/sync/",)),
    ("emulator: taskrouter", ("/flex_bridge/emulator/taskrouter/",)),
    (
        "emulator: request check (spec, api)",
        (
            "/flex_bridge/emulator/api.py",
            "/flex_bridge/emulator/spec.py",
            "/flex_bridge/emulator/expressions.py",
        ),
    ),
    (
        "emulator: REST entry, log, faults",
        (
            "/flex_bridge/emulator/log.py",
            "/flex_bridge/emulator/faults.py",
            "/flex_bridge/emulator/blueprints/",
        ),
    ),
    ("emulator: other", ("/flex_bridge/emulator/",)),
    ("flex_bridge: other", ("/flex_bridge/",)),
    ("twilio RequestValidator (signature)", ("/twilio/request_validator.py",)),
    ("twilio client (build, parse)", ("/twilio/",)),
    (
        "aiohttp client (+ yarl, multidict)",
        ("/aiohttp/", "/yarl/", "/multidict/", "/aiohappyeyeballs/"),
    ),
    ("requests / urllib3 client", ("/requests/", "/urllib3/", "/http/client.py")),
    ("hypercorn + h11 (HTTP server)", ("/hypercorn/", "/h11/", "/h2/", "/wsproto/", "/priority/")),
    # uvloop and httptools are compiled: py-spy charges their time to the Python frame that
    # called them (``Runner.run`` for the loop itself), so this is uvicorn's Python part only.
    ("uvicorn (HTTP server)", ("/uvicorn/", "/httptools/", "/uvloop/")),
    (
        "quart + werkzeug (app, routing)",
        ("/quart/", "/werkzeug/", "/quart_cors/", "/flask/", "/blinker/", "/jinja2/"),
    ),
    ("prometheus_client", ("/prometheus_client/",)),
    ("json", ("/json/",)),
    ("logging", ("/logging/",)),
    (
        "thread hand-off (futures, queue)",
        ("/concurrent/futures/", "/queue.py", "/threading.py"),
    ),
    (EVENT_LOOP, ("/asyncio/", "/selectors.py")),
)
OTHER = "other (stdlib, interpreter)"
# The frames every stack starts with: the process's start, not its work.
BOOTSTRAP = (
    "/flex_bridge/cli.py",
    "/flex_bridge/__main__.py",
    "/flex_bridge/serving.py",
    "<frozen runpy>",
    "/asyncio/runners.py",
)
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?):(?P<line>\d+)\)$")


def component(path: str) -> str | None:
    if any(needle in path for needle in BOOTSTRAP):
        return None
    for name, needles in COMPONENTS:
        if any(needle in path for needle in needles):
            return name
    return None


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    """(frames outermost first, count) per line of a py-spy raw profile."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _file_of(frame: str) -> str:
    match = FRAME.match(frame)
    return match.group("file") if match else frame


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path}:{match.group('line')})"


def summarise(stacks: Iterable[tuple[list[str], int]], top: int = 15) -> JSON:
    """Inclusive and exclusive shares by component, and the hottest functions."""
    total = 0
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    functions: Counter[str] = Counter()  # inclusive, by function
    for frames, count in stacks:
        total += count
        names = [component(_file_of(f)) for f in frames]
        for name in set(names):
            if name is not None:
                inclusive[name] += count
        # The innermost frame of a named component other than the event loop: asyncio code
        # run for a caller (run_in_executor, wait_for, create_task) counts for the caller.
        innermost = next((n for n in reversed(names) if n not in (None, EVENT_LOOP)), None)
        if innermost is None and EVENT_LOOP in names:
            innermost = EVENT_LOOP
        exclusive[innermost or OTHER] += count
        if frames:
            leaf[_short(frames[-1])] += count
        for frame in set(frames):
            functions[_short(frame)] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "inclusive_pct": {k: pct(v) for k, v in inclusive.most_common()},
        "exclusive_pct": {k: pct(v) for k, v in exclusive.most_common()},
        "top_self_pct": {k: pct(v) for k, v in leaf.most_common(top)},
        "top_inclusive_pct": {
            k: pct(v)
            for k, v in functions.most_common(top * 3)
            if not k.startswith(("<module>", "run (", "_run_once", "run_forever", "_run ("))
        },
    }


def py_spy_summary(
    path: Path, what: str, process_cpu_s: float, rate_hz: int, top: int = 15
) -> JSON:
    """The summary of a py-spy raw profile taken at ``rate_hz`` of a process that spent
    ``process_cpu_s`` CPU seconds meanwhile, with both times; printed, titled ``what``."""
    summary = summarise(read_raw(path), top)
    summary["sampled_s"] = round(summary["samples"] / rate_hz, 2)
    summary["process_cpu_s"] = process_cpu_s
    title = f"{what} ({summary['sampled_s']} s sampled, {process_cpu_s} s CPU)"
    print(render(summary, title, top), flush=True)
    return summary


def strace_counts(text: str) -> dict[str, int]:
    """Calls per syscall from an ``strace -c`` table."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0].replace(".", "", 1).isdigit() and parts[-1] != "total":
            calls = parts[3]
            if calls.isdigit():
                counts[parts[-1]] = int(calls)
    return counts


def render(summary: JSON, title: str, top: int = 12) -> str:
    lines = [f"{title}: {summary['samples']:,} samples"]
    lines.append(f"  {'component':<44} {'inclusive':>9} {'exclusive':>9}")
    names = list(summary["inclusive_pct"]) + [
        n for n in summary["exclusive_pct"] if n not in summary["inclusive_pct"]
    ]
    for name in sorted(names, key=lambda n: -summary["exclusive_pct"].get(n, 0.0)):
        inc = summary["inclusive_pct"].get(name)
        exc = summary["exclusive_pct"].get(name, 0.0)
        lines.append(f"  {name:<44} {'' if inc is None else f'{inc:.1f} %':>9} {exc:>7.1f} %")
    lines.append("  hottest functions (self):")
    for name, pct in list(summary["top_self_pct"].items())[:top]:
        lines.append(f"    {pct:5.1f} %  {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="py-spy raw profiles")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    for path in args.files:
        print(render(summarise(read_raw(path), args.top), str(path), args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
