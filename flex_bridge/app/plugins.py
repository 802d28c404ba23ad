"""Loading user code named in the policy file: a dotted path, or an entry point's name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from flex_bridge.errors import ConfigError


def load_callable(path: str, what: str, entry_point_group: str | None = None) -> Callable[..., Any]:
    """The callable ``package.module:name`` (or ``package.module.name``) names.

    With ``entry_point_group``, a bare name (no ``:`` and no ``.``) is looked up among the
    entry points of that group that installed packages declare. ``what`` opens every error
    message (for example ``"enricher 'crm'"``), so a ``ConfigError`` says whose path is wrong.
    """
    if entry_point_group is not None and path and ":" not in path and "." not in path:
        found = [ep for ep in entry_points(group=entry_point_group) if ep.name == path]
        if not found:
            raise ConfigError(f"{what}: no entry point {path!r} in group {entry_point_group}")
        try:
            loaded = found[0].load()
        except Exception as exc:
            raise ConfigError(f"{what}: entry point {path!r} failed to load: {exc}") from exc
        if not callable(loaded):
            raise ConfigError(f"{what}: entry point {path!r} is not callable")
        return loaded  # type: ignore[no-any-return]
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{what}: {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ConfigError(
            f"{what}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from exc
    found_attr = getattr(module, attr, None)
    if not callable(found_attr):
        raise ConfigError(f"{what}: {attr} is not a callable in {module_name}")
    return found_attr  # type: ignore[no-any-return]
