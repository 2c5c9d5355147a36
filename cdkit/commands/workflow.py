"""`cdkit workflow generate` and `cdkit workflow check`: the pipeline as one GitHub Actions job per stage.

`generate` writes the workflow (`cdkit.workflow.render`); `check` regenerates it
with the options recorded in the committed file's header and its Action pin, and
exits 1 with a unified diff when the two differ, so a stage added to `.cdkit.yml`
cannot silently miss its job.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cdkit import output, workflow
from cdkit.commands.init import action_ref
from cdkit.config import Pipeline
from cdkit.errors import EXIT_FAILED, EXIT_OK, UsageError
from cdkit.session import Workspace, find_workspace, load_pipeline


def _pipeline(ws: Workspace) -> Pipeline:
    pipeline = load_pipeline(ws)
    try:
        shown = ws.config_path.resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        shown = str(ws.config_path)
    return pipeline._replace(path=shown)


def _target(ws: Workspace, path: str | None) -> Path:
    return (Path.cwd() / path) if path else ws.root / workflow.WORKFLOW_FILE


def options_for(pipeline: Pipeline, mode: str | None, approval: str | None) -> workflow.Options:
    """The workflow's options: the pipeline's mode and its first environment's approval unless given."""
    first = pipeline.environments[0] if pipeline.environments else None
    mode = mode or (first.mode if first else pipeline.mode)
    if mode == "delivery":
        via = first.approval.via if first else "environment"
        approval = approval or (via if via in ("environment", "review") else "environment")
    elif approval is not None:
        raise UsageError("--approval applies to --mode delivery only (deployment mode releases without approval)")
    return workflow.Options(mode, approval, action_ref(), pipeline.release_branch)


def render_for(pipeline: Pipeline, mode: str | None, approval: str | None) -> str:
    return workflow.render(pipeline, options_for(pipeline, mode, approval))


def generate(*, mode: str | None, approval: str | None, config: str | None, output_path: str | None,
             cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    pipeline = _pipeline(ws)
    text = render_for(pipeline, mode, approval)
    if output_path == "-":
        sys.stdout.write(text)
        return EXIT_OK
    target = _target(ws, output_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    jobs = workflow.stage_jobs(pipeline)
    output.write_line(f"cdkit: wrote {target} ({len(jobs)} stage job(s) from {pipeline.path}); "
                      "commit it beside the pipeline")
    return EXIT_OK


def check(*, config: str | None, path: str | None, cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    pipeline = _pipeline(ws)
    target = _target(ws, path)
    try:
        committed = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{target}: no workflow here; write it with `cdkit workflow generate`") from None
    if workflow.recorded_options(committed, pipeline.release_branch) is None:
        raise UsageError(f"{target} was not written by `cdkit workflow generate` (its first line says so when it "
                         "was); regenerate it, or pass the generated file with --workflow")
    stale = workflow.regenerated(pipeline, committed)
    if stale is None:
        output.write_line(f"cdkit: {target.name} matches {pipeline.path}")
        return EXIT_OK
    options, generated = stale
    sys.stdout.write(workflow.diff(committed, generated, str(target.relative_to(ws.root)
                                                             if target.is_relative_to(ws.root) else target)))
    output.write_line(f"cdkit: {target} no longer matches {pipeline.path}; run "
                      f"`cdkit workflow generate{options.args}` and commit the result", stream=sys.stderr)
    return EXIT_FAILED
