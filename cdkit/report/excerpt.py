"""What a person needs from a failed stage's output: the lines that point at code, and how it ended.

A linter or compiler names every problem as `path:line[:col]`; a test runner prints its
failures far above its last lines. So an excerpt is every such line (up to a bound) and
the last lines of the log, read in blocks: a log of any size costs bounded memory.
"""
from __future__ import annotations

import collections
import re
from collections.abc import Iterator

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

TAIL_LINES = 20
MAX_LOCATION_LINES = 50
BLOCK = 1 << 20

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A colon before a digit: the cheap test (the regex engine searches for its literal ':') that
# every `path:line` passes; only lines that pass it are matched against the full shape.
_COLON_DIGIT = re.compile(r":\d")
# `src/app.py:12`, `./lib/x.rs:3:5`, `(tests/test_a.py:40)`: a path (with a `/` or a `.`, no
# spaces or colons), then a line number and maybe a column. `12:30:01` and URLs are not locations.
_LOCATION = re.compile(r"(?:^|[\s(\[\"'])(?:[^\s:()\[\]\"']*[./])[^\s:()\[\]\"']*:\d+(?::\d+)?(?=$|[\s:,;)\]\"'])")


def is_location_line(line: str) -> bool:
    return bool(_LOCATION.search(_ANSI_RE.sub("", line)))


def colon_digit_lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset, line) of each line of `text` with a colon before a digit (any `path:line` has one), once."""
    line_end = -1
    for match in _COLON_DIGIT.finditer(text):
        if match.start() < line_end:
            continue  # this line was yielded already
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.start())
        if line_end < 0:
            line_end = len(text)
        yield line_start, text[line_start:line_end].rstrip("\r")


def location_lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset, line) of each line of `text` that names a `path:line[:col]`, in order."""
    return ((offset, line) for offset, line in colon_digit_lines(text) if is_location_line(line))


class Excerpt(NamedTuple):
    locations: list[str]  # `path:line` lines from before the tail
    more_locations: int  # how many more there were past MAX_LOCATION_LINES
    tail: list[str]  # the last TAIL_LINES lines

    def lines(self) -> list[str]:
        out = list(self.locations)
        if self.more_locations:
            out.append(f"... and {self.more_locations} more line(s) naming a file and line (see the log)")
        if self.locations:
            out.append("...")
        return out + self.tail


def failure_excerpt(path: str, *, tail_lines: int = TAIL_LINES, max_locations: int = MAX_LOCATION_LINES) -> Excerpt:
    """The excerpt of the log at `path` (empty when it cannot be read)."""
    located: list[tuple[int, str]] = []  # (line number, text), up to the bound plus a tail's worth
    past_bound: collections.deque[int] = collections.deque(maxlen=tail_lines)  # line numbers of the latest extras
    extra = 0
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    number = 0  # lines before the current block
    try:
        with open(path, "rb") as log:
            rest = b""
            while True:
                block = log.read(BLOCK)
                data = rest + block
                cut = len(data) if not block else data.rfind(b"\n") + 1
                if not cut and block:
                    rest = data if len(data) < 4 * BLOCK else b""  # a huge line: its start is dropped
                    continue
                text, rest = data[:cut].decode("utf-8", "replace"), data[cut:]
                counted_to, line_number = 0, number
                for offset, line in location_lines(text):
                    line_number += text.count("\n", counted_to, offset)
                    counted_to = offset
                    if len(located) < max_locations + tail_lines:
                        located.append((line_number, line))
                    else:
                        extra += 1
                        past_bound.append(line_number)
                lines = text.splitlines()
                tail.extend(lines[-tail_lines:])
                number += len(lines)
                if not block:
                    break
    except OSError:
        return Excerpt([], 0, [])
    first_tail_line = number - len(tail)
    extra -= sum(1 for n in past_bound if n >= first_tail_line)  # shown in the tail anyway
    before = [line for n, line in located if n < first_tail_line]
    return Excerpt(before[:max_locations], extra + max(0, len(before) - max_locations), list(tail))
