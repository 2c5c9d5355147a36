from __future__ import annotations

import os

from cdkit import output
from cdkit.config import load
from cdkit.session import find_workspace


def validate(*, config: str | None, cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load(ws.config_path, root=ws.root)  # the work tree is here: check its directories too
    envs = f", {len(pipeline.environments)} environment(s)" if pipeline.environments else ""
    output.write_line(f"{ws.config_path}: valid ({len(pipeline.stages)} stage(s){envs})")
    return 0
