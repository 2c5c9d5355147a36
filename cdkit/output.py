"""All console output goes through here, so NO_COLOR, non-TTY and tests work in one place."""
from __future__ import annotations

import os
import sys
from typing import IO

COLORS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36", "dim": "2", "bold": "1"}


def use_color(stream: IO[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org), always with FORCE_COLOR."""
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty() and environ.get("TERM") != "dumb"


def paint(text: str, color: str, *, enabled: bool) -> str:
    if not enabled or color not in COLORS:
        return text
    return f"\033[{COLORS[color]}m{text}\033[0m"


def write(text: str = "", *, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(text)
    stream.flush()


def write_line(text: str = "", *, stream: IO[str] | None = None) -> None:
    write(text + "\n", stream=stream)


def error(text: str) -> None:
    write_line(text, stream=sys.stderr)
