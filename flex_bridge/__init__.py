"""flex-bridge: Sync-first coordination between TaskRouter, Sync and Flex plugins."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

__version__ = "0.1.0"  # what the source says; the installed package's metadata wins


def version() -> str:
    """The installed distribution's version (``importlib.metadata``), else ``__version__``."""
    try:
        return _distribution_version("flex-bridge")
    except PackageNotFoundError:
        return __version__
