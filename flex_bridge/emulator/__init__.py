"""A local emulator of TaskRouter v1, Sync v1 and Flex token validation."""
