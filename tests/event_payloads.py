"""Real GitHub webhook payloads (tests/data/github/events), with their SHAs rewritten to a test repository's commits."""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.helpers import DATA

EVENTS = DATA / "github" / "events"

# SHAs that occur in the payloads, by role.
PR_HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
PR_BASE = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
PUSH_AFTER = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
GROUP_HEAD = "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d"
GROUP_BASE = "380387fbc80638b734a49e1be1c4dfec1c01b33c"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


def rewrite(value: Any, shas: Mapping[str, str]) -> Any:
    """Every string equal to (or, in URLs, containing) an old SHA gets the new one."""
    if isinstance(value, dict):
        return {k: rewrite(v, shas) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, shas) for v in value]
    if isinstance(value, str):
        for old, new in shas.items():
            value = value.replace(old, new)
        return value
    return value


def event(name: str, shas: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A real payload with SHAs rewritten and dotted-path fields overridden (`pull_request__head__sha=...`)."""
    data = rewrite(copy.deepcopy(load(name)), shas or {})
    for dotted, new in overrides.items():
        parts = dotted.split("__")
        target = data
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = new
    assert isinstance(data, dict)
    return data


def write_event(path: Path, payload: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(payload))
    return path
