"""Schemathesis against the bridge's own ``/flex`` OpenAPI document, served by a running bridge.

Every operation of ``GET /flex/openapi.json`` gets generated inputs, valid ones (positive
mode) and invalid ones (negative mode: wrong types, missing fields, bodies that are not JSON
or not UTF-8, out-of-range query values, ...). Every answer must pass schemathesis' checks:
no 5xx, a status the document lists for the operation, the documented content type, and a body
that matches the documented schema.

Three passes:
- generated path parameters (SIDs that exist nowhere), with a valid supervisor Flex token;
- the same without any token;
- live targets: each reservation op on a pending reservation of its own, the attributes of a
  real task, and real intent ids, so the 200/202/409 answers are checked too.

Hypothesis runs derandomized (the same examples every run) with a bounded number of examples
per operation and mode, so the suite is repeatable and quick.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flex_bridge.domain.types import OPS
from tests.support.bridge import RunningBridge
from tests.support.emulator import RunningEmulator

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
MAX_EXAMPLES = 30
REQUEST_TIMEOUT = 60.0  # ?wait= may be up to 30 s; nothing here asserts a duration
StartBridge = Callable[..., tuple[RunningBridge, RunningEmulator]]


def _started(start_bridge: StartBridge, **kwargs: Any) -> tuple[RunningBridge, RunningEmulator]:
    bridge, emulator = start_bridge(policy={}, **kwargs)  # defer everything
    # The socket listens before before_serving has run; one answer means the app is ready.
    for _ in range(200):
        try:
            if requests.get(bridge.url + "/healthz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    return bridge, emulator


def _token(emulator: RunningEmulator, roles: list[str]) -> str:
    answer = requests.post(
        emulator.url + "/_emulator/tokens",
        json={"worker_sid": None, "roles": roles, "ttl": 3600},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def _operations(bridge: RunningBridge) -> list[Any]:
    schema = schemathesis.openapi.from_url(bridge.url + "/flex/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    # Every route of the /flex API that takes input: the eight reservation ops, the
    # attributes patch and the intent lookup (schemathesis leaves out the document's own URL).
    labels = {op.label for op in operations}
    expected = {f"POST /flex/reservations/{{ReservationSid}}/{op}" for op in OPS}
    expected |= {"PATCH /flex/tasks/{TaskSid}/attributes", "GET /flex/intents/{intent_id}"}
    assert expected <= labels, sorted(labels)
    return operations


def _fuzz(
    strategy: st.SearchStrategy[Any],
    bridge: RunningBridge,
    headers: dict[str, str],
    seen: Counter[str],
    label: str,
    *,
    max_examples: int = MAX_EXAMPLES,
) -> None:
    """Send every generated case to the bridge and run the checks on the answer."""

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        seen[label] += 1
        response = case.call(base_url=bridge.url, headers=headers, timeout=REQUEST_TIMEOUT)
        case.validate_response(response, checks=CHECKS)

    run()


def _summary(name: str, seen: Counter[str]) -> None:
    per_op = ", ".join(f"{label}={n}" for label, n in sorted(seen.items()))
    print(f"\nschemathesis {name}: {sum(seen.values())} examples ({per_op})")


def test_generated_inputs_with_a_supervisor_token(start_bridge: StartBridge) -> None:
    bridge, emulator = _started(start_bridge)
    headers = {"Authorization": f"Bearer {_token(emulator, ['supervisor'])}"}
    seen: Counter[str] = Counter()
    for operation in _operations(bridge):
        for mode in MODES:
            label = f"{operation.label} [{mode.value}]"
            _fuzz(operation.as_strategy(generation_mode=mode), bridge, headers, seen, label)
    _summary("with a supervisor token", seen)


def test_generated_inputs_without_a_token(start_bridge: StartBridge) -> None:
    bridge, _ = _started(start_bridge)
    seen: Counter[str] = Counter()
    for operation in _operations(bridge):
        for mode in MODES:
            label = f"{operation.label} [{mode.value}]"
            _fuzz(operation.as_strategy(generation_mode=mode), bridge, {}, seen, label)
    _summary("without a token", seen)


def _create_pending(emulator: RunningEmulator, n: int) -> list[tuple[str, str]]:
    """``n`` tasks, each with its pending reservation (the bridge defers them)."""
    assert emulator.state is not None
    auth = (emulator.config.account_sid, emulator.config.auth_token)
    base = f"{emulator.url}/taskrouter/v1/Workspaces/{emulator.state.workspace_sid}/Tasks"
    out = []
    for i in range(n):
        task = requests.post(
            base,
            data={"Attributes": json.dumps({"type": "support", "n": i})},
            auth=auth,
            timeout=10,
        )
        assert task.status_code == 201, task.text
        sid = task.json()["sid"]
        listed = requests.get(f"{base}/{sid}/Reservations", auth=auth, timeout=10)
        [reservation] = listed.json()["reservations"]
        assert reservation["reservation_status"] == "pending"
        out.append((sid, reservation["sid"]))
    return out


def test_generated_inputs_against_live_reservations_tasks_and_intents(
    start_bridge: StartBridge,
) -> None:
    """Valid SIDs, so the ops really run: applied (200), in flight (202), refused (409) ..."""
    bridge, emulator = _started(start_bridge, seed={"workers": tuple(f"A{i}" for i in range(10))})
    headers = {"Authorization": f"Bearer {_token(emulator, ['supervisor'])}"}
    operations = {op.label: op for op in _operations(bridge)}
    reservation_ops = [label for label in operations if "/flex/reservations/" in label]
    targets = dict(
        zip(reservation_ops, _create_pending(emulator, len(reservation_ops)), strict=True)
    )
    seen: Counter[str] = Counter()

    for label, (task_sid, reservation_sid) in targets.items():

        def own_task(case: Any, task_sid: str = task_sid) -> Any:
            if isinstance(case.body, dict) and "task_sid" in case.body:
                case.body["task_sid"] = task_sid
            return case

        for mode in MODES:
            strategy = (
                operations[label]
                .as_strategy(
                    generation_mode=mode, path_parameters={"ReservationSid": reservation_sid}
                )
                .map(own_task)
            )
            _fuzz(strategy, bridge, headers, seen, f"{label} [{mode.value}]")

    task_sid = next(iter(targets.values()))[0]
    patch = operations["PATCH /flex/tasks/{TaskSid}/attributes"]
    for mode in MODES:
        strategy = patch.as_strategy(generation_mode=mode, path_parameters={"TaskSid": task_sid})
        _fuzz(strategy, bridge, headers, seen, f"{patch.label} [{mode.value}]")

    async def recent(svc: Any) -> list[str]:
        return [i.intent_id for i in await svc.journal.recent(100)]

    intent_ids = bridge.call(recent)
    assert intent_ids, "the live reservation ops journaled no intent"
    get_intent = operations["GET /flex/intents/{intent_id}"]

    def real_id(pair: tuple[Any, str | None]) -> Any:
        case, intent_id = pair
        if intent_id is not None:
            case.path_parameters["intent_id"] = intent_id
        return case

    for mode in MODES:
        strategy = st.tuples(
            get_intent.as_strategy(generation_mode=mode),
            st.sampled_from([*intent_ids, None]),
        ).map(real_id)
        _fuzz(strategy, bridge, headers, seen, f"{get_intent.label} [{mode.value}]")
    _summary("against live targets", seen)


HOSTILE_BODIES = [
    b"\xb8\xff\xfe",  # not UTF-8 (schemathesis found this one: it was a 500)
    "{}".encode("utf-16"),  # JSON, but UTF-16 with a byte-order mark
    b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
    b"[" * 100_000,  # nested deeper than the parser recurses
    b'{"task_sid": ' * 15_000,
    b'{"task_sid": NaN}',
    b'{"task_sid": "WT' + b"0" * 32 + b'", "task_sid": 1}',  # a duplicate key
    b"\x00",
    b"null",
    b"",
]


def test_hand_picked_hostile_bodies_are_refused_cleanly(start_bridge: StartBridge) -> None:
    """What a generator rarely produces: encodings, nesting, NaN, duplicate keys."""
    bridge, emulator = _started(start_bridge)
    headers = {"Authorization": f"Bearer {_token(emulator, ['supervisor'])}"}
    reservation = "WR" + "0" * 32
    for op in OPS:
        for body in HOSTILE_BODIES:
            for content_type in ("application/json", "text/plain"):
                answer = requests.post(
                    f"{bridge.url}/flex/reservations/{reservation}/{op}",
                    data=body,
                    headers={**headers, "Content-Type": content_type},
                    timeout=REQUEST_TIMEOUT,
                )
                assert answer.status_code in (400, 404), (op, body[:20], answer.text)
                error = answer.json()["error"]
                assert set(error) == {"code", "message"} and error["message"], error
    too_large = requests.post(
        f"{bridge.url}/flex/reservations/{reservation}/accept",
        data=b" " * (256 * 1024 + 1),
        headers={**headers, "Content-Type": "application/json"},
        timeout=REQUEST_TIMEOUT,
    )
    assert too_large.status_code == 413, too_large.text  # documented for every op
    assert set(too_large.json()["error"]) == {"code", "message"}
    for body in HOSTILE_BODIES:
        answer = requests.patch(
            f"{bridge.url}/flex/tasks/WT{'0' * 32}/attributes",
            data=body,
            headers={**headers, "Content-Type": "application/merge-patch+json"},
            timeout=REQUEST_TIMEOUT,
        )
        assert answer.status_code in (400, 404, 413), (body[:20], answer.text)  # 64 KiB cap
