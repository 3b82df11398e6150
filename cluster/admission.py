"""What the service checks of a submission beyond its spec: priority, client token, where outputs go.

The spec (``cluster.jobs``) says what a job is; admission says whether this service takes it: a priority
SQLite can hold, a client token that is a real token, and an ``output_dir`` inside the roots the operator
configured (symlinks resolved first) that this controller can write. Every refusal names its field.
"""

from __future__ import annotations

import os
from pathlib import Path

from cluster.errors import SpecError

MAX_PRIORITY = 10**9
"""Priorities are kept in SQLite's integers; anything near its limit is a mistake, not a priority."""
MAX_TOKEN = 256
"""Longest client token (an idempotency key: a UUID, a shot name, a path)."""


def check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise SpecError("priority", f"expected int, got {type(priority).__name__} {priority!r}")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise SpecError("priority", f"must be in [-{MAX_PRIORITY}, {MAX_PRIORITY}], got {priority}")
    return priority


def check_client_token(token: object) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str):
        raise SpecError("client_token", f"expected a string or none, got {type(token).__name__} {token!r}")
    if not token.strip():
        raise SpecError("client_token", "must not be empty: an empty token would make every such job one job")
    if len(token) > MAX_TOKEN or not token.isprintable():
        raise SpecError("client_token", f"must be at most {MAX_TOKEN} printable characters")
    return token


def check_output_dir(output_dir: str, roots: list[str] | None) -> None:
    """``output_dir`` lies inside one of ``roots`` (None: anywhere) once symlinks are resolved, and this process
    can create and write it."""
    if "\0" in output_dir:
        raise SpecError("output_dir", "must not contain a NUL byte")
    try:
        target = Path(output_dir).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop, a name too long
        raise SpecError("output_dir", f"cannot be resolved: {err}") from err
    if roots is not None:
        resolved = [Path(root).resolve() for root in roots]
        if not any(target == root or root in target.parents for root in resolved):
            allowed = ", ".join(str(root) for root in resolved)
            raise SpecError("output_dir", f"{target} is outside the output roots this service writes to ({allowed})")
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise SpecError("output_dir", f"{target} cannot be a directory: {existing} is not one")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError("output_dir", f"{existing} is not writable by the service")
