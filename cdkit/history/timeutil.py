"""Times for the history: `--since 30d|DATE` parsing, ISO 8601 UTC for JSON, local time for people."""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from cdkit.errors import UsageError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hdw])\s*$")
_UNIT_SECONDS = {"h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_when(text: str, *, now: float, option: str = "--since") -> float:
    """`30d`, `12h`, `2w` (before `now`), or an ISO 8601 date/time (a date alone is local midnight)."""
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a duration or a date (use e.g. 30d, 12h, 2w, "
                         "2026-01-31 or 2026-01-31T09:00:00Z)") from None
    return parsed.timestamp()  # naive values are local time, as people type them


def iso(epoch: float | None) -> str | None:
    """ISO 8601 in UTC with a Z, to the second (what `--json` prints)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> float | None:
    """GitHub's `2026-01-31T09:00:00Z` -> epoch seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def local(epoch: float | None) -> str:
    """Local time for the terminal."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch is not None else "-"


def span(seconds: float | None) -> str:
    """A duration people read at a glance: 45s, 12m, 3.5h, 2.1d."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
