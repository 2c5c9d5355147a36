"""`cdkit gc`: prune run logs now, to the pipeline's `logs.keep` / `logs.max_size`."""
from __future__ import annotations

import os

from cdkit import jsondoc, output
from cdkit.config import Pipeline
from cdkit.errors import ConfigError
from cdkit.logs import Retention, prune_logs
from cdkit.session import find_workspace, load_pipeline


def gc(*, config: str | None, as_json: bool, cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    try:
        pipeline = load_pipeline(ws)
    except ConfigError:
        pipeline = Pipeline(stages=())  # no readable pipeline: the default bounds still apply
    retention = Retention(pipeline.logs_keep, pipeline.logs_max_size)
    summary = prune_logs(ws.repo.cdkit_dir, retention)
    if as_json:
        jsondoc.write("gc", summary._asdict())
        return 0
    output.write_line(f"cdkit: removed the logs of {summary.removed} run(s) ({_size(summary.freed_bytes)}); "
                      f"{summary.kept} run(s) keep theirs ({_size(summary.kept_bytes)}). "
                      "Runs and results stay in the ledger.")
    return 0


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
