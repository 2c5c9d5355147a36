"""`paths` globs with GitHub Actions filter semantics: `*` and `?` stay within a directory, `**` crosses them."""
from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable

LAST_CHAR = "\U0010ffff"  # sorts after every character a path can hold


@functools.lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """GitHub Actions filter semantics: `*` and `?` stay within a directory, `**` crosses them."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += f"[{body}]"
                i = end + 1
        else:
            out += re.escape(c)
            i += 1
    if pattern.endswith("/"):
        out += ".*"  # a directory pattern matches everything below it
    return re.compile(out + r"\Z", re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    return glob_regex(pattern).match(path) is not None


def literal_prefix(pattern: str) -> str:
    """The text every path `pattern` matches begins with (up to its first wildcard)."""
    cut = len(pattern)
    for wildcard in "*?[":
        found = pattern.find(wildcard)
        if found != -1:
            cut = min(cut, found)
    return pattern[:cut]


class Matcher:
    """A stage's `paths` compiled once: one regex for all its patterns, and where to look.

    Patterns apply in order and the last one that matches a path decides (a later
    `!pattern` removes earlier matches, a later pattern adds them back), so the regex
    lists them last first, one group each: the group that matched is that last pattern.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        alternatives, self._positive = [], [False]  # group 0 is the whole match
        for pattern in reversed(self.patterns):
            negative = pattern.startswith("!")
            alternatives.append(f"({glob_regex(pattern[1:] if negative else pattern).pattern})")
            self._positive.append(not negative)
        self._regex = re.compile("|".join(alternatives) or r"(?!)", re.DOTALL)
        self._only_positive = all(self._positive[1:])
        positives = [literal_prefix(p) for p in self.patterns if not p.startswith("!")]
        # With no empty prefix, only the changed files under these prefixes can match: a
        # binary search finds them in the sorted list instead of testing every file.
        self._prefixes = None if "" in positives else _outermost(positives)

    def selects(self, path: str) -> bool:
        found = self._regex.match(path)
        return found is not None and (self._only_positive or self._positive[found.lastindex or 0])

    def first_match(self, files: SortedFiles) -> str | None:
        """The first selected file in sorted order; stops there (a plan only needs "does it run")."""
        if self._prefixes is None:
            return next(filter(self.selects, files.paths), None)
        found = [m for m in (next(filter(self.selects, files.under(p)), None) for p in self._prefixes) if m]
        return min(found) if found else None

    def matching(self, files: Iterable[str]) -> list[str]:
        return list(filter(self.selects, files))


def _outermost(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The prefixes no other one contains (`src/` covers `src/api/`)."""
    kept: list[str] = []
    for prefix in sorted(set(prefixes)):
        if not kept or not prefix.startswith(kept[-1]):
            kept.append(prefix)
    return tuple(kept)


class SortedFiles:
    """Changed files sorted once per plan, so each stage's matcher can seek to its prefixes."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(paths)  # git lists them sorted already: timsort checks that in one pass

    def under(self, prefix: str) -> list[str]:
        """The paths that start with `prefix`: one contiguous run of the sorted list."""
        start = bisect.bisect_left(self.paths, prefix)
        end = bisect.bisect_left(self.paths, prefix + LAST_CHAR, lo=start)
        return self.paths[start:end]

    def __len__(self) -> int:
        return len(self.paths)


def matching_files(patterns: Iterable[str], files: Iterable[str]) -> list[str]:
    """Files selected by `patterns`, where a later `!pattern` removes earlier matches."""
    return Matcher(patterns).matching(files)
