"""flex-bridge: Sync-first coordination between TaskRouter, Sync and Flex plugins."""

__version__ = "0.1.0"
