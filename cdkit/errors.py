"""The one family of expected errors, and the documented exit codes.

Every expected failure is a `CdkitError` carrying the exit code it maps to; the
top-level handler in `cli.py` prints its message (no traceback) and exits.
Anything else is a bug: exit 3 with a short crash report.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a stage or a gate failed
EXIT_USAGE = 2  # usage or configuration error
EXIT_INTERNAL = 3  # a bug in cdkit: crash report
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM

EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 a stage or gate failed, 2 usage or config error, "
    "3 internal error (crash report), 130 interrupted."
)


class CdkitError(Exception):
    """An expected error: its message says what, where and how to fix it."""

    exit_code = EXIT_USAGE


class ConfigError(CdkitError):
    """`.cdkit.yml` is missing, unreadable or invalid."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("\n".join(messages))


class UsageError(CdkitError):
    """The command line or the repository state does not allow the command."""


class GitError(CdkitError):
    """A git command failed in a way the user can fix (unknown revision, not a repository)."""


class GateFailed(CdkitError):
    """A release gate refused: the reasons are in the message."""

    exit_code = EXIT_FAILED


class Interrupted(CdkitError):
    exit_code = EXIT_INTERRUPTED
