"""`cdkit init`: a starter `.cdkit.yml` and `.github/workflows/cdkit.yml` for one mode.

The files are package data under `cdkit/templates/`, filled in with plain string
replacement (workflow text is full of `${{ }}`, which template engines would eat).
Nothing existing is overwritten without `--force`.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from cdkit import __version__, git, output
from cdkit.config import DEFAULT_CONFIG, load_text
from cdkit.errors import UsageError

WORKFLOW_PATH = Path(".github/workflows/cdkit.yml")

# The reusable Action the generated workflows call, pinned by full commit SHA as GitHub advises for
# third-party actions: a commit of this repository whose action.yml runs `cdkit action` (checked by
# tests/test_workflows.py). Move it to each release's commit when releasing.
ACTION_REPOSITORY = "cdkit/cdkit"
ACTION_SHA = "4f339f4db70fa2b795b5a848ab9583515e160cdc"

_APPROVAL_BLOCKS = {
    "environment": (
        "    approval:\n"
        "      via: environment  # required reviewers of the GitHub environment `production`\n"
    ),
    "review": (
        "    approval:\n"
        "      via: review  # approving pull-request reviews on the exact commit\n"
        "      required: 1\n"
    ),
}


def workflow_template(mode: str, approval: str | None) -> str:
    name = "workflow-deployment.yml" if mode == "deployment" else f"workflow-delivery-{approval or 'environment'}.yml"
    return resources.files("cdkit").joinpath("templates").joinpath(name).read_text(encoding="utf-8")


def action_ref() -> str:
    return f"{ACTION_REPOSITORY}@{ACTION_SHA} # v{__version__}"


def render_workflow(mode: str, approval: str | None, *, release_branch: str = "main") -> str:
    text = workflow_template(mode, approval)
    return text.replace("@@ACTION@@", action_ref()).replace("@@RELEASE_BRANCH@@", release_branch)


def render_pipeline(mode: str, approval: str | None, *, release_branch: str = "main") -> str:
    text = resources.files("cdkit").joinpath("templates").joinpath("pipeline.yml").read_text(encoding="utf-8")
    block = _APPROVAL_BLOCKS[approval or "environment"] if mode == "delivery" else ""
    text = text.replace("@@MODE@@", mode).replace("@@RELEASE_BRANCH@@", release_branch)
    return text.replace("@@APPROVAL@@\n", block)


def _release_branch(root: Path) -> str:
    """The checked-out branch when it looks like a trunk, else main: what most repositories release from."""
    current = git.current_branch(cwd=root) or ""
    name = current.removeprefix("refs/heads/")
    return name if name in ("main", "master", "trunk", "develop") else "main"


def init(*, mode: str, approval: str | None, force: bool, cwd: str | os.PathLike[str] | None = None) -> int:
    if mode == "deployment" and approval is not None:
        raise UsageError("--approval applies to --mode delivery only (deployment mode releases without approval)")
    approval = (approval or "environment") if mode == "delivery" else None
    repo = git.find_repo(cwd)
    if repo.root is None:
        raise UsageError(f"{repo.git_dir}: a bare repository has no work tree to write .cdkit.yml into")
    root = repo.root
    existing = [p for p in (root / DEFAULT_CONFIG, root / WORKFLOW_PATH) if p.exists()]
    if existing and not force:
        names = ", ".join(str(p.relative_to(root)) for p in existing)
        raise UsageError(f"{names} already exist(s); nothing was written. Re-run with --force to overwrite")
    branch = _release_branch(root)
    pipeline_text = render_pipeline(mode, approval, release_branch=branch)
    load_text(pipeline_text, DEFAULT_CONFIG)  # a starter that fails `cdkit validate` is a bug: fail here
    (root / DEFAULT_CONFIG).write_text(pipeline_text, encoding="utf-8")
    (root / WORKFLOW_PATH).parent.mkdir(parents=True, exist_ok=True)
    (root / WORKFLOW_PATH).write_text(render_workflow(mode, approval, release_branch=branch), encoding="utf-8")
    how = "deploys every passing commit" if mode == "deployment" else f"waits for approval via {approval}"
    output.write_line(f"cdkit: wrote {DEFAULT_CONFIG} and {WORKFLOW_PATH} ({mode} mode: {branch} {how})")
    for step in _next_steps(mode, approval):
        output.write_line(f"  next: {step}")
    return 0


def _next_steps(mode: str, approval: str | None) -> list[str]:
    steps = ["edit the `run:` commands in .cdkit.yml, then `cdkit validate`",
             "`cdkit hook install` to run the pre-push stages before every push"]
    if mode == "delivery" and approval == "environment":
        steps.append("create the `production` environment with required reviewers "
                     "(Settings > Environments); cdkit refuses to deploy to an unprotected one")
    if mode == "delivery" and approval == "review":
        steps.append("protect the release branch so changes arrive through reviewed pull requests")
    steps.append("commit both files and push")
    return steps
