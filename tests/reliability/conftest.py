"""The reliability suite reuses the crash rig of the end-to-end crash tests."""

from tests.e2e.test_crash_recovery import start_rig  # noqa: F401  (a fixture)
