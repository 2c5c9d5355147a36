"""The `cdkit` command's entry point: `--version` and `--help` answered before click is imported.

Importing click and the command table costs several times Python's own start-up, and
these two are what people and scripts run most often to check a tool is there. The
top-level help is click's own rendering, kept in `cdkit/help-80.txt` (pipes, CI logs and
80-column terminals) and `cdkit/help-100.txt` (the widest cdkit renders); a test renders
both again and fails when one is stale (`python -m cdkit.entry --write-help` refreshes them).
Anything else, or a terminal of another width, goes to click.
"""
from __future__ import annotations

import os
import sys

HELP_WIDTH = 80  # what click assumes when stdout is not a terminal and COLUMNS is unset
WIDEST = 100  # cdkit's `max_content_width`: any wider terminal renders the same
HELP_WIDTHS = (HELP_WIDTH, WIDEST)


def help_file(width: int) -> str:
    return os.path.join(os.path.dirname(__file__), f"help-{width}.txt")


def _columns() -> int:
    """The width click would render at: COLUMNS, else the terminal's, else 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or HELP_WIDTH
    except (AttributeError, OSError, ValueError):
        return HELP_WIDTH


def fast_answer(args: list[str]) -> str | None:
    """What `cdkit ARGS` prints without click, or None when click must answer."""
    if args == ["--version"]:
        from cdkit import __version__

        return f"cdkit {__version__}\n"
    if args in (["--help"], ["-h"]):
        width = min(_columns(), WIDEST)
        if width in HELP_WIDTHS:
            try:
                with open(help_file(width), encoding="utf-8") as stored:
                    return stored.read()
            except OSError:
                return None
    return None


def render_help(width: int) -> str:
    """`cdkit --help` as click prints it on a terminal `width` columns wide (what `help-WIDTH.txt` holds)."""
    import contextlib
    import io

    from cdkit.cli import invoke, cli

    out = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        with contextlib.redirect_stdout(out):
            invoke(cli, ["--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return out.getvalue()


def main() -> None:
    args = sys.argv[1:]
    if args == ["--write-help"]:
        for width in HELP_WIDTHS:
            with open(help_file(width), "w", encoding="utf-8") as stored:
                stored.write(render_help(width))
        return
    answer = fast_answer(args)
    if answer is not None:
        sys.stdout.write(answer)
        sys.stdout.flush()
        return
    from cdkit.cli import main as click_main

    click_main()


if __name__ == "__main__":
    main()
