"""One shape for every `--json` document.

Each command that prints data prints one JSON object on stdout, on every outcome:

- `schema_version` first, so a consumer can tell a change of shape from a change of data;
- `command`, the document's name: its schema is `cdkit/schemas/<command>.schema.json`;
- times as ISO 8601 in UTC (`2026-12-02T05:58:16Z`), never epoch floats or local time: every key named
  `at` or `since`, or ending in `_at` or `_since`, holds a time (`document` converts what is still epoch seconds);
- stages as a list of objects with the same keys everywhere (`STAGE_KEYS`).

The schemas are the contract; the tests validate every command's output against them.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from collections.abc import Mapping
from typing import Any

from cdkit import output

SCHEMA_VERSION = 1
STAGE_KEYS = ("name", "status", "reason", "duration", "exit_code", "log")


def stage(name: str, status: str, *, reason: str | None = None, duration: float | None = None,
          exit_code: int | None = None, log: str | None = None, **extra: Any) -> dict[str, Any]:
    """A stage as every document shows it; `extra` adds what one document knows more of (run_id, needs...)."""
    return {"name": name, "status": status, "reason": reason,
            "duration": round(duration, 3) if duration is not None else None,
            "exit_code": exit_code, "log": log, **extra}


def when(value: float | str | None) -> str | None:
    """A time for a document: epoch seconds become ISO 8601 UTC; GitHub's ISO text passes through."""
    if value is None or isinstance(value, str):
        return value
    # Milliseconds: stage times a second apart say nothing about which ran first.
    moment = datetime.fromtimestamp(float(value), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def is_time_key(key: str) -> bool:
    return key in ("at", "since") or key.endswith(("_at", "_since"))


def _times_as_iso(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        return {k: _times_as_iso(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_times_as_iso(v, key) for v in value]
    if is_time_key(key) and isinstance(value, int | float) and not isinstance(value, bool):
        return when(value)
    return value


def document(command: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The document as printed: its version and name first, every time in ISO 8601 UTC."""
    converted: dict[str, Any] = _times_as_iso(data)
    return {"schema_version": SCHEMA_VERSION, "command": command, **converted}


def write(command: str, data: Mapping[str, Any]) -> None:
    output.write_line(json.dumps(document(command, data), indent=2))
