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
# Credentials a shell or a CI job may carry besides those: the Actions runtime's and its OIDC token requests.
RUNNER_CREDENTIAL_VARS = ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_RUNTIME_URL",
                          "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL")
CREDENTIAL_ENV_VARS = frozenset(SECRET_ENV_VARS + RUNNER_CREDENTIAL_VARS)

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


def without_credentials(environ: Mapping[str, str], passthrough: Iterable[str] = ()) -> dict[str, str]:
    """`environ` for a stage, a deploy or a verify command: no credential unless the pipeline names it.

    The one rule for every command cdkit starts (`cdkit run`, the hook, `cdkit deploy`,
    `cdkit release check`, the Action): a token cdkit was given to talk to GitHub is
    cdkit's, not the project's commands'. A stage or environment that needs one says so
    with `env_passthrough: [NAME]`.
    """
    allowed = set(passthrough)
    return {k: v for k, v in environ.items() if k not in CREDENTIAL_ENV_VARS or k in allowed}
