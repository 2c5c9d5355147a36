"""How `cdkit --help` reads: every command's whole summary, an example under each command, completion.

Kept beside `cli.py` rather than in each docstring so the examples read as one list and a test
can check that every command has one.
"""
from __future__ import annotations

from typing import Any

import click

# Command path (as typed after `cdkit`) -> an example a user can paste.
EXAMPLES: dict[str, str] = {
    "validate": "cdkit validate --config ci/pipeline.yml",
    "plan": "cdkit plan --base origin/main --trigger pre-push",
    "run": "cdkit run test --with-needs      # the test stage and the stages it needs",
    "status": "cdkit status HEAD~1 --json",
    "log": "cdkit log -n 5",
    "sync": "GITHUB_TOKEN=$(gh auth token) cdkit sync",
    "doctor": "cdkit doctor --json",
    "demo": "cdkit demo --keep",
    "gc": "cdkit gc --json",
    "hook": "cdkit hook install && cdkit hook status",
    "hook install": "cdkit hook install",
    "hook uninstall": "cdkit hook uninstall",
    "hook status": "cdkit hook status",
    "hook recover": "cdkit hook recover",
    "hook run": "cdkit hook run pre-push origin https://github.com/OWNER/NAME.git < ref-lines",
    "approve": "cdkit approve \"$(git rev-parse HEAD)\" --env production --comment 'QA passed'\n"
               "  cdkit approve --revoke \"$(git rev-parse HEAD)\" --env production   # withdraw your approval",
    "approvals": "cdkit approvals --env production",
    "deploy": "cdkit deploy --env staging --sha HEAD\n"
              "  cdkit deploy --env production --break-glass --reason 'outage fix'   # inside a freeze window",
    "adopt": "cdkit adopt --env production --sha v2.3.1 --reason 'what prod runs today (its /version page)'\n"
             "  cdkit adopt --env staging --empty            # it runs nothing yet",
    "environments": "cdkit environments --json",
    "history": "cdkit history --env production --since 30d",
    "metrics": "cdkit metrics --since 90d --json",
    "report": "cdkit report -o report.html --since 90d",
    "audit": "cdkit audit --since 2026-01-01 --until 2026-04-01 --env production --format csv -o changes.csv",
    "audit verify": "cdkit audit verify --json",
    "action": "uses: cdkit/cdkit@<full commit sha>      # in a workflow; the Action runs `cdkit action`",
    "init": "cdkit init --approval local",
    "release": "cdkit release open --env production",
    "release open": "cdkit release open --env production",
    "release check": "cdkit release check --env production --no-deploy",
    "workflow": "cdkit workflow generate -o .github/workflows/cdkit.yml && cdkit workflow check",
    "workflow generate": "cdkit workflow generate --mode delivery --approval review -o .github/workflows/cdkit.yml",
    "workflow check": "cdkit workflow check",
}


def _path(ctx: click.Context) -> str:
    return " ".join(ctx.command_path.split()[1:])


class CdkitCommand(click.Command):
    """A command whose help ends with its example."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _write_example(ctx, formatter)


def _write_example(ctx: click.Context, formatter: click.HelpFormatter) -> None:
    example = EXAMPLES.get(_path(ctx))
    if example:
        formatter.write_paragraph()
        formatter.write_text("Example:")
        formatter.write(" " * (formatter.current_indent + 2) + example + "\n")  # as typed: never wrapped


class CdkitGroup(click.Group):
    """A group listing every command's whole first sentence, never cut at the terminal's width."""

    command_class = CdkitCommand
    group_class = type  # subgroups are CdkitGroups too

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if ctx.parent is not None:
            _write_example(ctx, formatter)


# --- shell completion from the pipeline -----------------------------------------------------------------


def _pipeline_for_completion(ctx: click.Context) -> Any:
    """The pipeline around the current directory (or --config), or None: completion never fails loudly."""
    from cdkit.session import find_workspace, load_pipeline

    root_ctx = ctx
    config = None
    while root_ctx is not None:
        config = config or root_ctx.params.get("config")
        root_ctx = root_ctx.parent  # type: ignore[assignment]
    try:
        return load_pipeline(find_workspace(config))
    except Exception:  # noqa: BLE001 - a broken pipeline just means nothing to complete
        return None


def complete_stage(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    pipeline = _pipeline_for_completion(ctx)
    names = [s.name for s in pipeline.stages] if pipeline else []
    return [n for n in names if n.startswith(incomplete)]


def complete_environment(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    pipeline = _pipeline_for_completion(ctx)
    names = [e.name for e in pipeline.environments] if pipeline else []
    return [n for n in names if n.startswith(incomplete)]
