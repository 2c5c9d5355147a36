"""Which GitHub repository a git remote points at: pure string parsing, no git and no network.

Accepted forms (with or without `.git`, with or without a trailing slash):
  https://github.com/owner/name(.git)      https://user:token@host/owner/name
  ssh://git@github.com[:port]/owner/name   git@github.com:owner/name   (scp-like)
  git://host/owner/name
A local path, a `file://` URL or anything without exactly `owner/name` after the
host is not a GitHub repository: None.
"""
from __future__ import annotations

import functools
from urllib.parse import urlsplit

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re

# GitHub owner and repository names: letters, digits, `-`, `_` and `.` (owners: no dots, but GHES is lenient).
_NAME = r"[A-Za-z0-9_.-]+"
_URL_SCHEMES = ("https", "http", "ssh", "git", "git+ssh", "ssh+git")


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(scp-like remote, owner/name path), compiled on first use: every push parses its URL, but `re`'s
    import and these compiles cost it more than the parse."""
    import re

    return (re.compile(rf"^(?:[^@/\s]+@)?(?P<host>[A-Za-z0-9.-]{{2,}}):(?P<path>/?{_NAME}/{_NAME}/?)$"),
            re.compile(rf"^/*(?P<owner>{_NAME})/(?P<name>{_NAME})/*$"))


def _owner_name(path: str) -> str | None:
    match = _patterns()[1].match(path)
    if not match:
        return None
    owner, name = match.group("owner"), match.group("name")
    name = name.removesuffix(".git")
    if not name or owner in (".", "..") or name in (".", ".."):
        return None
    return f"{owner}/{name}"


def parse_repository(url: str) -> str | None:
    """`owner/name` of the GitHub (or GitHub Enterprise Server) repository `url` names, else None."""
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme.lower() not in _URL_SCHEMES or not parts.hostname:
            return None
        path = parts.path
        # GitHub Enterprise Server may serve repositories below a path prefix; the repository
        # is always the last two segments.
        segments = [s for s in path.split("/") if s]
        if len(segments) < 2:
            return None
        return _owner_name("/".join(segments[-2:]))
    scp = _patterns()[0].match(url)
    if scp and "/" not in scp.group("host"):
        return _owner_name(scp.group("path"))
    return None
