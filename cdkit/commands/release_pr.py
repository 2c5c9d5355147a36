"""`cdkit release open` and `cdkit release check`: delivery through an approving pull-request review."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO

from cdkit import jsondoc, output
from cdkit.commands.deploy import default_sha, release_context, remote_for
from cdkit.errors import UsageError
from cdkit.release import ReleaseContext
from cdkit.session import Workspace, find_workspace, load_pipeline, open_ledger


@contextmanager
def _github_release(command: str, config: str | None, environ: Mapping[str, str], cwd: str | os.PathLike[str] | None,
                    stream: IO[str]) -> Iterator[tuple[Workspace, ReleaseContext]]:
    """The workspace and a release context talking to GitHub, which both release commands need."""
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    remote = remote_for(ws, pipeline, environ)
    if remote is None:
        raise UsageError(f"cdkit release {command} needs GitHub: set GITHUB_TOKEN and GITHUB_REPOSITORY (owner/name)")
    with open_ledger(ws.repo) as ledger:
        yield ws, release_context(ws, pipeline, ledger, environ=environ, stream=stream, remote=remote)


def release_open(*, environment: str, sha: str | None, config: str | None, as_json: bool,
                 environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None) -> int:
    from cdkit import release_github

    with _github_release("open", config, environ, cwd, sys.stderr) as (ws, ctx):
        data = release_github.release_open(ctx, environment, sha or default_sha(ws, ctx.pipeline))
    if as_json:
        jsondoc.write("release open", data)
    else:
        verb = "opened" if data["created"] else "updated"
        output.write_line(f"{verb} release pull request #{data['pull_request']} for {data['sha'][:12]} "
                          f"to {data['environment']}")
    return 0


def release_check(*, environment: str, deploy_now: bool, config: str | None, as_json: bool,
                  environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None) -> int:
    from cdkit import release_github

    with _github_release("check", config, environ, cwd, sys.stderr if as_json else sys.stdout) as (_, ctx):
        data = release_github.release_check(ctx, environment, deploy_now=deploy_now)
    if as_json:
        jsondoc.write("release check", data)
    else:
        state = "approved and deployable" if data["deployable"] else "not deployable"
        output.write_line(f"{data['sha'][:12]} for {data['environment']}: {state}")
        rules = data.get("governed_by")
        if rules:
            output.write_line(f"  governed by {rules['path']}@{rules['sha'][:12]} ({rules['why']})")
        if data.get("pending"):
            output.write_line(f"  {data['pending']}")
        for problem in data["problems"]:
            output.write_line(f"  - {problem}")
    if "deployment" in data:
        return 0 if data["released"] else 1
    return 0 if data["deployable"] else 1
