"""Keep tokens out of everything cdkit prints or sends."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SECRET_ENV_VARS = ("GITHUB_TOKEN", "GH_TOKEN", "CDKIT_TOKEN", "INPUT_TOKEN", "ACTIONS_RUNTIME_TOKEN")
TOKEN_PATTERN = re.compile(
    r"(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}|(?<=[Aa]uthorization: )(?:token|Bearer) \S+"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@))"
)
REDACTED = "***"

# Secrets that arrived some other way than the environment (`--token`): redacted everywhere too.
_REGISTERED: set[str] = set()


def register(value: str | None) -> str | None:
    """Remember `value` as a secret for every later `redact` in this process; returns it."""
    if value:
        _REGISTERED.add(value)
    return value


def secret_values(environ: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
    values = [environ.get(name, "") for name in SECRET_ENV_VARS] + list(extra) + list(_REGISTERED)
    # Longest first so a token that contains another is replaced whole.
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """`text` with every known token value and anything shaped like a token replaced by ***."""
    for value in secret_values(environ or {}, extra):
        text = text.replace(value, REDACTED)
    return TOKEN_PATTERN.sub(REDACTED, text)
