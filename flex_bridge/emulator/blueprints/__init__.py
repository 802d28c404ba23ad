"""The emulator's HTTP surface as Quart blueprints, one per concern.

- ``rest``: TaskRouter and Sync (one blueprint per product) under ``/<product>/v1/``.
- ``iam``: Flex token validation under ``/iam/v1/``.
- ``admin``: the admin API under ``/_emulator/``, behind ``admin_guard`` (Host, Origin, admin
  token, JSON bodies).
- ``feed``: the live feed, ``/_emulator/ws``.
- ``sdk`` and ``sdk_ws``: what a browser's Twilio SDKs would reach, under ``/sdk/``: Sync Maps,
  their items and a WebSocket of their changes, and Flex's own accept and reject, all with the
  agent's Flex token (the stand-in ``SyncClient`` of ``sync/client`` talks to it).

``guard`` holds what they share in front of an API (authentication, injected faults) and
``responses`` the JSON answers, both adapters over the framework-free REST core
(``flex_bridge.emulator.rest``, ``flex_bridge.emulator.answers``), which the ASGI front door
(``flex_bridge.emulator.front_door``) serves REST requests with, ahead of these blueprints;
``flex_bridge.emulator.app`` puts them together.
"""
