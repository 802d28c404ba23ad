"""The emulator's HTTP surface as Quart blueprints, one per concern.

- ``rest``: TaskRouter and Sync (one blueprint per product) under ``/<product>/v1/``.
- ``iam``: Flex token validation under ``/iam/v1/``.
- ``admin``: the admin API under ``/_emulator/``.
- ``feed``: the live feed, ``/_emulator/ws``.

``guard`` holds what they share in front of an API (authentication, injected faults) and
``responses`` the JSON answers; ``flex_bridge.emulator.app`` puts them together.
"""
