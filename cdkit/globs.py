"""`paths` globs with GitHub Actions filter semantics: `*` and `?` stay within a directory, `**` crosses them."""
from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re

LAST_CHAR = "\U0010ffff"  # sorts after every character a path can hold


@functools.lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """GitHub Actions filter semantics: `*` and `?` stay within a directory, `**` crosses them."""
    import re  # here, not at import: a pipeline without `paths` never needs it on the hook path

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
    cut = min((i for i in (pattern.find(w) for w in "*?[") if i != -1), default=len(pattern))
    return pattern[:cut]


def literal_suffix(pattern: str) -> str:
    """The text every path `pattern` matches ends with (after its last wildcard); "" for a directory."""
    if pattern.endswith("/"):
        return ""  # `dir/` matches everything below it
    cut = max(pattern.rfind(w) for w in "*?]")
    return pattern[cut + 1:]


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
        import re

        self._regex = re.compile("|".join(alternatives) or r"(?!)", re.DOTALL)
        self._only_positive = all(self._positive[1:])
        # Where a selected file can be: only a positive pattern selects, and every path it
        # matches starts with its literal prefix or ends with its literal suffix. A binary
        # search finds those files; a pattern with neither (`**`, `*`) needs the full scan.
        self._seeks: list[tuple[str, str]] | None = []
        for pattern in self.patterns:
            if pattern.startswith("!"):
                continue
            prefix, suffix = literal_prefix(pattern), literal_suffix(pattern)
            if not (prefix or suffix):
                self._seeks = None
                break
            self._seeks.append(("prefix", prefix) if prefix else ("suffix", suffix))

    def selects(self, path: str) -> bool:
        found = self._regex.match(path)
        return found is not None and (self._only_positive or self._positive[found.lastindex or 0])

    def first_match(self, files: SortedFiles) -> str | None:
        """The first selected file in sorted order; stops there (a plan only needs "does it run")."""
        if self._seeks is None:
            return self._scan(files.paths)
        found: list[str] = []
        for kind, literal in dict.fromkeys(self._seeks):
            if kind == "prefix":
                first = self._scan(files.starting_with(literal))
                if first is not None:
                    found.append(first)
                continue
            candidates = files.ending_with(literal)
            if len(candidates) * 4 > len(files):
                return self._scan(files.paths)  # most files qualify: scanning in order stops soonest
            found.extend(filter(self.selects, candidates))
        return min(found) if found else None

    def _scan(self, paths: Iterable[str]) -> str | None:
        return next(filter(self.selects, paths), None)

    def matching(self, files: Iterable[str]) -> list[str]:
        return list(filter(self.selects, files))


class SortedFiles:
    """Changed files sorted once per plan, so each stage's matcher can seek to its prefixes and suffixes."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(paths)  # git lists them sorted already: timsort checks that in one pass
        self._reversed: list[str] | None = None

    def starting_with(self, prefix: str) -> list[str]:
        """The paths that start with `prefix`: one contiguous run of the sorted list."""
        return _run_of(self.paths, prefix)

    def ending_with(self, suffix: str) -> list[str]:
        """The paths that end with `suffix` (the paths spelt backwards, sorted once, on first use)."""
        if self._reversed is None:
            self._reversed = sorted(p[::-1] for p in self.paths)
        return [p[::-1] for p in _run_of(self._reversed, suffix[::-1])]

    def __len__(self) -> int:
        return len(self.paths)


def _run_of(ordered: list[str], prefix: str) -> list[str]:
    start = bisect.bisect_left(ordered, prefix)
    return ordered[start:bisect.bisect_left(ordered, prefix + LAST_CHAR, lo=start)]


def matching_files(patterns: Iterable[str], files: Iterable[str]) -> list[str]:
    """Files selected by `patterns`, where a later `!pattern` removes earlier matches."""
    return Matcher(patterns).matching(files)
