"""Voice instructions as TaskRouter runs them: asynchronously.

TaskRouter takes a ``conference``, ``dequeue`` or ``call`` instruction at once (the REST update
answers 200 with the reservation still ``pending``) and then rings the worker's leg. Only when
the worker answers does a conference or dequeue accept the reservation (``reservation.accepted``
then). If nobody answers within the instruction's own timeout (``Timeout``, ``DequeueTimeout``,
``CallTimeout``; 60 s when not given) or the reservation's timeout, whichever comes first, the
reservation times out as if nobody had answered the assignment. A call instruction with
``CallAccept`` accepts first and then rings; without it, answering runs the TwiML at its URL
(not emulated) and leaves the reservation pending for that TwiML or a REST update to settle.

How long each worker takes to answer is the emulator's to decide (:class:`Phones`, set through
the admin API, on the emulator clock): ``None`` is a phone nobody answers.

While the leg rings the reservation is not pending in TaskRouter's own sense: a second
instruction is refused with that instruction's "not pending" code, and accepting or rejecting
it over REST or in an assignment reply is refused with 20001. Canceling the task hangs up (a
conference instruction cut short that way is Twilio's error 40144, noted in the log).

The worker's leg has a call SID (``worker_call_sid`` in ``/_emulator/state``). Twilio puts it in
no TaskRouter event; Flex voice tasks carry it in their attributes, ``conference.participants.
worker``, which the emulator writes when the worker answers a conference instruction.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from flex_bridge.emulator.taskrouter.instructions import TASK_CANCELED, Instruction
from flex_bridge.emulator.taskrouter.models import (
    Reservation,
    Ring,
    Workspace,
    new_sid,
    parse_attributes,
)

if TYPE_CHECKING:
    from flex_bridge.emulator.taskrouter.lifecycle import Lifecycle

# Seconds a worker takes to answer when the admin API set nothing for it.
DEFAULT_RING_SECONDS = 5.0
ATTRIBUTES_LIMIT = 4096


class Phones:
    """How long each worker's phone rings before it is answered; None: it is never answered."""

    def __init__(self, default: float | None = DEFAULT_RING_SECONDS) -> None:
        self.default = default
        self.by_worker: dict[str, float | None] = {}

    def ring_time(self, worker_sid: str) -> float | None:
        if worker_sid in self.by_worker:
            return self.by_worker[worker_sid]
        return self.default

    def set(self, worker_sid: str, seconds: float | None) -> None:
        self.by_worker[worker_sid] = seconds

    def reset(self, worker_sid: str) -> None:
        self.by_worker.pop(worker_sid, None)


class Voice:
    """Rings workers' legs for voice instructions and settles reservations when they end."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.runtime = lifecycle.runtime
        self.phones = Phones()

    def take(self, ws: Workspace, res: Reservation, ins: Instruction) -> None:
        """Take a checked voice instruction: accept first (a call with accept) or ring."""
        now = self.runtime.now()
        res.voice = ins.name
        res.worker_call_sid = new_sid("CA")
        if ins.name == "call" and ins.accepts:
            self.lifecycle.accept(ws, res)
            return
        ring = Ring(ins.name, res.worker_call_sid, now, accepts=ins.name != "call")
        res.ring = ring
        answer_in = self.phones.ring_time(res.worker_sid)
        if answer_in is not None and answer_in < ins.timeout and now + answer_in < res.deadline:
            ring.timer = self.runtime.scheduler.call_at(
                now + answer_in, lambda: self._answered(ws.sid, res.sid, ring)
            )
        elif now + ins.timeout < res.deadline:
            ring.timer = self.runtime.scheduler.call_at(
                now + ins.timeout, lambda: self._unanswered(ws.sid, res.sid, ring)
            )
        # Otherwise the reservation's own timer ends the ringing.
        self._note(res, f"{ins.name} instruction taken; the worker's leg is ringing")

    def hang_up(self, res: Reservation) -> None:
        """The reservation left pending while its worker's leg rang: the leg is dropped."""
        ring = res.ring
        if ring is None:
            return
        res.ring = None
        if ring.timer is not None:
            ring.timer.cancel()
        if ring.instruction == "conference" and res.status == "canceled":
            # Only a canceled (or deleted) task cancels a pending reservation.
            self._note(res, "conference instruction failed: the task was canceled", TASK_CANCELED)
        else:
            self._note(res, f"{ring.instruction} instruction ended: reservation {res.status}")

    def _stop_ringing(
        self, ws_sid: str, res_sid: str, ring: Ring, who: str
    ) -> tuple[Workspace, Reservation] | None:
        """The ring's timer fired: end the ring, noting ``who`` answered, and give back the
        reservation; None when that reservation is no longer ringing this ring."""
        ws = self.lifecycle.workspaces.get(ws_sid)
        res = ws.reservations.get(res_sid) if ws else None
        if ws is None or res is None or res.ring is not ring or res.status != "pending":
            return None
        res.ring = None
        self._note(res, f"{who} answered the {ring.instruction} instruction's call")
        return ws, res

    def _answered(self, ws_sid: str, res_sid: str, ring: Ring) -> None:
        found = self._stop_ringing(ws_sid, res_sid, ring, "the worker")
        if found is None:
            return
        ws, res = found
        if ring.accepts:
            self.lifecycle.accept(ws, res)
            if ring.instruction == "conference":
                self._join_conference(ws, res)
        self.lifecycle.match(ws)

    def _unanswered(self, ws_sid: str, res_sid: str, ring: Ring) -> None:
        found = self._stop_ringing(ws_sid, res_sid, ring, "nobody")
        if found is not None:
            self.lifecycle.time_out(*found)

    def _join_conference(self, ws: Workspace, res: Reservation) -> None:
        """Flex records the conference and its participants' calls on the voice task."""
        task = ws.tasks[res.task_sid]
        attributes = parse_attributes(task.attributes)
        if not attributes and task.attributes.strip() not in ("", "{}"):
            return  # not a JSON object: nothing to add to
        attributes["conference"] = {
            "sid": new_sid("CF"),
            "participants": {
                "worker": res.worker_call_sid,
                "customer": attributes.get("call_sid"),
            },
        }
        text = json.dumps(attributes)
        if len(text) > ATTRIBUTES_LIMIT:
            return
        task.attributes = text
        task.touch(self.runtime.now())
        self.lifecycle.events.task(ws, task, "task.updated", "Task updated")

    def _note(self, res: Reservation, message: str, code: int | None = None) -> None:
        fields: dict[str, object] = {"reservation_sid": res.sid, "message": message}
        if code is not None:
            fields["code"] = code
        self.runtime.log.append("note", **fields)
