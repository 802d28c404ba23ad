"""The emulated TaskRouter v1: its resources, lifecycles, matching engine and REST API.

Emulated rules (from ../shared/TWILIO.md) are described where they are kept:

- ``models``: the records a workspace holds, and finding them by SID (or a 404).
- ``resources``: creating, changing and deleting workspaces, activities, task channels, task
  queues, workflows, workers and tasks.
- ``lifecycle``: task and reservation states, instructions, reservation timeouts, task TTLs,
  the Max Assignment Count.
- ``instructions``: what an instruction must satisfy before TaskRouter takes it, and the
  error code of each refusal.
- ``voice``: voice instructions ring the worker's leg and settle when it is answered or not.
- ``retention``: finished tasks, and tasks assigned too long, deleted by the system.
- ``matching``: which pending task is offered to which available worker. One reservation at
  a time per task (``MaxReservedWorkers`` is stored but not used) and one task at a time per
  worker.
- ``callbacks``: events (kept, fed live, posted to the event callback URL) and assignment
  callbacks.
- ``engine``: :class:`TaskRouter`, which puts them together.
- ``rendering``, ``queries`` and ``routes``: the REST API (answers, list filters, handlers).
"""

from flex_bridge.emulator.taskrouter.callbacks import ASSIGNMENT_TIMEOUT
from flex_bridge.emulator.taskrouter.engine import TaskRouter
from flex_bridge.emulator.taskrouter.rendering import Renderer
from flex_bridge.emulator.taskrouter.routes import register_taskrouter_routes

__all__ = ["ASSIGNMENT_TIMEOUT", "Renderer", "TaskRouter", "register_taskrouter_routes"]
