"""Which environment variables are credentials, and the environment a command cdkit starts gets without them.

Apart from `cdkit.secrets` (redaction) because every stage start needs this and not that
module's regexes: the pre-push hook of a quiet stage then never imports `re` for it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

SECRET_ENV_VARS = ("GITHUB_TOKEN", "GH_TOKEN", "CDKIT_TOKEN", "INPUT_TOKEN", "ACTIONS_RUNTIME_TOKEN")
# Credentials a shell or a CI job may carry besides those: the Actions runtime's and its OIDC token requests.
RUNNER_CREDENTIAL_VARS = ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_RUNTIME_URL",
                          "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL")
CREDENTIAL_ENV_VARS = frozenset(SECRET_ENV_VARS + RUNNER_CREDENTIAL_VARS)
TOKEN_ENV_VARS = ("GITHUB_TOKEN", "GH_TOKEN")  # where cdkit looks for its GitHub token, in order


def resolve_token(option: str | None, environ: Mapping[str, str]) -> str | None:
    """`--token`, else GITHUB_TOKEN, else GH_TOKEN (the GitHub CLI's variable)."""
    for value in (option, *(environ.get(name) for name in TOKEN_ENV_VARS)):
        if value and value.strip():
            return value.strip()
    return None


def without_credentials(environ: Mapping[str, str], passthrough: Iterable[str] = ()) -> dict[str, str]:
    """`environ` for a stage, a deploy or a verify command: no credential unless the pipeline names it.

    The one rule for every command cdkit starts (`cdkit run`, the hook, `cdkit deploy`,
    `cdkit release check`, the Action): a token cdkit was given to talk to GitHub is
    cdkit's, not the project's commands'. A stage or environment that needs one says so
    with `env_passthrough: [NAME]`.
    """
    allowed = set(passthrough)
    return {k: v for k, v in environ.items() if k not in CREDENTIAL_ENV_VARS or k in allowed}
