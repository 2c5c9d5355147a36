"""`paths` globs with GitHub Actions filter semantics: `*` and `?` stay within a directory, `**` crosses them."""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable


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


def matching_files(patterns: Iterable[str], files: Iterable[str]) -> list[str]:
    """Files selected by `patterns`, where a later `!pattern` removes earlier matches."""
    patterns = tuple(patterns)
    selected = []
    for path in files:
        keep = False
        for pattern in patterns:
            if pattern.startswith("!"):
                if keep and glob_match(pattern[1:], path):
                    keep = False
            elif not keep and glob_match(pattern, path):
                keep = True
        if keep:
            selected.append(path)
    return selected
