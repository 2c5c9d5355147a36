"""`cdkit adopt`: record what an environment runs before cdkit's first deployment there (see cdkit.release.adopt)."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from cdkit import jsondoc, output
from cdkit.commands.deploy import release_context, remote_for
from cdkit.errors import GateFailed, UsageError
from cdkit.release import adopt as release_adopt, find_environment
from cdkit.session import find_workspace, load_pipeline, open_ledger


def adopt(*, environment: str, sha: str | None, empty: bool, reason: str | None, config: str | None, as_json: bool,
          environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None) -> int:
    if (sha is None) == (not empty):
        raise UsageError("say what the environment runs now: --sha SHA, or --empty when it runs nothing yet "
                         "(one of them)")
    reason = reason.strip() if reason and reason.strip() else None
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    find_environment(pipeline, environment)
    stream = sys.stderr if as_json else sys.stdout
    with open_ledger(ws.repo) as ledger:
        # GitHub exactly when `cdkit deploy` would use it: a token and a repository.
        ctx = release_context(ws, pipeline, ledger, environ=environ, stream=stream,
                              remote=remote_for(ws, pipeline, environ))
        try:
            result = release_adopt(ctx, environment, sha, reason=reason)
        except GateFailed as exc:
            if not as_json:
                raise
            jsondoc.write("adopt", {"adopted": False, "environment": environment, "sha": sha, "empty": empty,
                                    "problems": [str(exc)]})
            return exc.exit_code
    if as_json:
        jsondoc.write("adopt", result.as_data())
        return 0
    if result.already:
        output.write_line(f"{environment} was adopted already (deployment #{result.deployment_id}); recorded it "
                          f"on GitHub now (deployment {result.github_id})")
        return 0
    runs = result.sha[:12] if result.sha else "nothing"
    output.write_line(f"{environment} adopted: it runs {runs} (deployment #{result.deployment_id}; nothing was "
                      "deployed or verified)" + (f", on GitHub deployment {result.github_id}" if result.github_id
                                                 else ""))
    start = f"after {result.sha[:12]}" if result.sha else "at the root (the whole history, as you said)"
    output.write_line(f"its first release starts {start}: `cdkit deploy --env {environment}`")
    return 0
