"""`cdkit hook install|uninstall|status|run`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cdkit import hook, output
from cdkit.errors import EXIT_FAILED, EXIT_OK


def install(*, force: bool) -> int:
    for line in hook.install(force=force):
        output.write_line(f"cdkit: {line}")
    return EXIT_OK


def uninstall() -> int:
    for line in hook.uninstall():
        output.write_line(f"cdkit: {line}")
    return EXIT_OK


def status() -> int:
    """Exit 0 when cdkit's hook is installed and can run, 1 otherwise (so scripts can check)."""
    state = hook.hook_state()
    facts, problems = hook.describe(state)
    for line in facts:
        output.write_line(line)
    for line in problems:
        output.write_line(f"problem: {line}")
    if not problems:
        output.write_line("ok: every push runs the pre-push stages of .cdkit.yml")
    return EXIT_OK if state.healthy and not problems else EXIT_FAILED


def recover() -> int:
    from cdkit import git, setaside

    output.write_line(f"cdkit: {setaside.recover(setaside.paths_for(git.find_repo().root or Path.cwd()))}")
    return EXIT_OK


def run_pre_push(*, remote: str | None, url: str | None) -> int:
    from cdkit.hook_entry import read_stdin, run_pre_push as run

    return run(remote, url if url is not None else remote, read_stdin(sys.stdin.buffer), hook_path=None,
               environ=os.environ)
