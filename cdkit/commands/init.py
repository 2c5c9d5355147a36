"""`cdkit init`: a `.cdkit.yml` that fits the project, and `.github/workflows/cdkit.yml` for one mode.

The stages come from what the repository uses (`cdkit.detect`): only tools present now, so
the pipeline passes the day it is written. The files are package data under
`cdkit/templates/`, filled in with plain string replacement (workflow text is full of
`${{ }}`, which template engines would eat). Nothing existing is overwritten without
`--force`. Then `validate` and `plan` run on what was written, and three commands to try next
are printed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from importlib import resources
from pathlib import Path

from cdkit import __version__, git, output
from cdkit.config import CONFIG_NAMES, DEFAULT_CONFIG, load_text
from cdkit.detect import Proposal, detect
from cdkit.errors import CdkitError, UsageError

WORKFLOW_PATH = Path(".github/workflows/cdkit.yml")

# The reusable Action the generated workflows call: the release of the installed cdkit, tag
# `v<__version__>` (scripts/release.py makes it). Pinned by the full commit SHA that tag names
# (`git ls-remote`), as GitHub advises for third-party actions; when that cannot be resolved
# (offline, the tag not pushed yet) by the tag itself, with a comment saying to pin the SHA:
# never a SHA written down by hand, which goes stale while its comment keeps naming a version.
ACTION_REPOSITORY = "cdkit/cdkit"
ACTION_REPOSITORY_URL = f"https://github.com/{ACTION_REPOSITORY}"
ACTION_REPOSITORY_ENV = "CDKIT_ACTION_REPO"  # another repository (a mirror, a fork) to resolve the tag in
LS_REMOTE_TIMEOUT = 10.0  # seconds: `cdkit init` must not hang on a network that drops packets
_SHA = re.compile(r"^[0-9a-f]{40}$")

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
    "local": (
        "    approval:\n"
        "      via: local  # `cdkit approve SHA --env production` records it in the ledger; works offline\n"
    ),
}

# When no tool is recognised: one stage that passes, saying what to put there.
FALLBACK_STAGE = Proposal("check", "true", ("pre-push", "ci"), needs=(),
                          comment="nothing recognised here: replace with your checks, e.g. make test")


def workflow_template(mode: str, approval: str | None) -> str:
    name = "workflow-deployment.yml" if mode == "deployment" else f"workflow-delivery-{approval or 'environment'}.yml"
    return resources.files("cdkit").joinpath("templates").joinpath(name).read_text(encoding="utf-8")


def release_tag() -> str:
    return f"v{__version__}"


def tag_ref(url: str = ACTION_REPOSITORY_URL) -> str:
    """The Action by the installed version's tag, saying how to pin it (what the examples carry).

    A tag can be moved, so zizmor's unpinned-uses finding is right in general; it is silenced
    here because the comment tells the reader to replace the tag by its commit SHA.
    """
    tag = release_tag()
    return (f"{ACTION_REPOSITORY}@{tag} # zizmor: ignore[unpinned-uses] tag {tag}: pin its commit SHA, "
            f"from `git ls-remote {url} refs/tags/{tag}`")


def resolve_tag(url: str, tag: str, *, timeout: float = LS_REMOTE_TIMEOUT) -> str | None:
    """The commit `tag` names in the repository at `url` (an annotated tag peeled), or None if unknown.

    No prompt (GIT_TERMINAL_PROMPT=0, no stdin) and a timeout: offline or unreachable is None.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
    try:
        listed = subprocess.run(["git", "ls-remote", "--tags", "--", url, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}"],
                                capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    refs: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    commit = refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")  # the commit, not the tag object
    return commit if commit is not None and _SHA.match(commit) else None


def action_ref(url: str | None = None) -> str:
    """The `uses:` value for the installed cdkit's Action: `cdkit/cdkit@<sha> # vX.Y.Z` when the tag
    resolves in `url` (default: $CDKIT_ACTION_REPO, else GitHub), else the tag form (`tag_ref`)."""
    url = url or os.environ.get(ACTION_REPOSITORY_ENV) or ACTION_REPOSITORY_URL
    tag = release_tag()
    sha = resolve_tag(url, tag)
    return f"{ACTION_REPOSITORY}@{sha} # {tag}" if sha else tag_ref(ACTION_REPOSITORY_URL)


def render_workflow(mode: str, approval: str | None, *, release_branch: str = "main",
                    action: str | None = None) -> str:
    text = workflow_template(mode, approval)
    return text.replace("@@ACTION@@", action or action_ref()).replace("@@RELEASE_BRANCH@@", release_branch)


def _yaml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(i) if any(c in i for c in "*!,[]{}:#") else i for i in items) + "]"


def render_stage(stage: Proposal) -> str:
    """One stage as YAML; every value written as a JSON string, which YAML reads back unchanged."""
    lines = [f"  - name: {stage.name}" + (f"  # {stage.comment}" if stage.comment else ""),
             f"    run: {json.dumps(stage.run)}",
             f"    on: {_yaml_list(stage.on)}"]
    if stage.paths:
        lines.append(f"    paths: {_yaml_list(stage.paths)}")
    if stage.needs is not None:
        lines.append(f"    needs: {_yaml_list(stage.needs)}")
    if stage.allow_changes:
        lines.append("    allow_changes: true")
    return "\n".join(lines) + "\n"


def render_pipeline(mode: str, approval: str | None, *, release_branch: str = "main",
                    stages: list[Proposal] | None = None, kinds: list[str] | None = None) -> str:
    text = resources.files("cdkit").joinpath("templates").joinpath("pipeline.yml").read_text(encoding="utf-8")
    block = _APPROVAL_BLOCKS[approval or "environment"] if mode == "delivery" else ""
    detected = f"# Stages found for this repository ({', '.join(kinds)}) by `cdkit init`.\n" if kinds else ""
    text = text.replace("@@MODE@@", mode).replace("@@RELEASE_BRANCH@@", release_branch)
    text = text.replace("@@DETECTED@@\n", detected)
    text = text.replace("@@STAGES@@\n", "".join(render_stage(s) for s in (stages or [FALLBACK_STAGE])) + "\n")
    return text.replace("@@APPROVAL@@\n", block)


def _release_branch(root: Path) -> str:
    """The checked-out branch when it looks like a trunk, else main: what most repositories release from."""
    current = git.current_branch(cwd=root) or ""
    name = current.removeprefix("refs/heads/")
    return name if name in ("main", "master", "trunk", "develop") else "main"


def init(*, mode: str, approval: str | None, force: bool, fan_out: bool = False,
         cwd: str | os.PathLike[str] | None = None) -> int:
    if mode == "deployment" and approval is not None:
        raise UsageError("--approval applies to --mode delivery only (deployment mode releases without approval)")
    approval = (approval or "environment") if mode == "delivery" else None
    repo = git.find_repo(cwd)
    if repo.root is None:
        raise UsageError(f"{repo.git_dir}: a bare repository has no work tree to write .cdkit.yml into")
    root = repo.root
    writes_workflow = approval != "local"  # local approval is the offline setup: no GitHub workflow
    candidates = [root / name for name in CONFIG_NAMES] + ([root / WORKFLOW_PATH] if writes_workflow else [])
    existing = [p for p in candidates if p.exists()]
    if existing and not force:
        names = ", ".join(str(p.relative_to(root)) for p in existing)
        raise UsageError(f"{names} already exist(s); nothing was written. Re-run with --force to overwrite")
    branch = _release_branch(root)
    stages, kinds, notes = detect(root)
    pipeline_text = render_pipeline(mode, approval, release_branch=branch, stages=stages, kinds=kinds)
    load_text(pipeline_text, DEFAULT_CONFIG)  # a starter that fails `cdkit validate` is a bug: fail here
    (root / ".cdkit.yaml").unlink(missing_ok=True)  # --force: one pipeline file, never two
    (root / DEFAULT_CONFIG).write_text(pipeline_text, encoding="utf-8")
    written = DEFAULT_CONFIG
    action = action_ref() if writes_workflow else ""  # the pin of the installed version, resolved once
    if writes_workflow:
        (root / WORKFLOW_PATH).parent.mkdir(parents=True, exist_ok=True)
        if fan_out:
            from cdkit import workflow

            pipeline = load_text(pipeline_text, DEFAULT_CONFIG)
            workflow_text = workflow.render(pipeline, workflow.Options(mode, approval, action, branch))
        else:
            workflow_text = render_workflow(mode, approval, release_branch=branch, action=action)
        (root / WORKFLOW_PATH).write_text(workflow_text, encoding="utf-8")
        written += f" and {WORKFLOW_PATH}"
    how = "deploys every passing commit" if mode == "deployment" else f"waits for approval via {approval}"
    output.write_line(f"cdkit: wrote {written} ({mode} mode: {branch} {how})")
    if action:
        _say_how_the_action_is_pinned(action)
    found = ", ".join(kinds) if kinds else "nothing recognised (one placeholder stage `check`)"
    output.write_line(f"cdkit: found {found}; stages: {', '.join(s.name for s in stages) or 'check'}")
    for note in notes:
        output.write_line(f"cdkit: note: {note}")
    _validate_and_plan(root)
    for step in _release_steps(mode, approval):
        output.write_line(f"  before releasing: {step}")
    output.write_line("try next:")
    for command in _next_commands():
        output.write_line(f"  {command}")
    return 0


def _say_how_the_action_is_pinned(action: str) -> None:
    ref = action.split(" ", 1)[0]
    if _SHA.match(ref.rsplit("@", 1)[1]):
        output.write_line(f"cdkit: the workflow uses {ref}, the commit of {release_tag()}")
    else:
        output.write_line(f"cdkit: note: {release_tag()} could not be resolved to a commit (offline?); the workflow "
                          f"uses the tag {ref}: replace it by the commit SHA "
                          f"(`git ls-remote {ACTION_REPOSITORY_URL} refs/tags/{release_tag()}`)")


def _validate_and_plan(root: Path) -> None:
    """What `cdkit validate` and `cdkit plan` say about the file just written."""
    from cdkit.commands.plan import plan
    from cdkit.commands.validate import validate

    output.write_line("$ cdkit validate")
    validate(config=None, cwd=root)
    output.write_line("$ cdkit plan --trigger pre-push")
    if git.head_sha(cwd=root) is None:
        output.write_line("(no commit yet: commit something, then `cdkit plan`)")
        return
    try:
        plan(config=None, base=None, head=None, trigger="pre-push", as_json=False, cwd=root)
    except CdkitError as exc:
        output.write_line(f"(cdkit plan: {exc})")


def _next_commands() -> list[str]:
    return ["cdkit run             # run the stages now, in this work tree",
            "cdkit hook install    # run the pre-push stages before every git push",
            "cdkit doctor          # check the hook, the tools the stages call, the remote and the token"]


def _release_steps(mode: str, approval: str | None) -> list[str]:
    if mode == "delivery" and approval == "environment":
        return ["create the `production` environment with required reviewers (Settings > Environments); "
                "cdkit refuses to deploy to an unprotected one"]
    if mode == "delivery" and approval == "review":
        return ["protect the release branch so changes arrive through reviewed pull requests"]
    if mode == "delivery" and approval == "local":
        return ["replace the `deploy:` command of production; then someone who did not write the commits "
                "approves one (`cdkit approve SHA --env production`) and `cdkit deploy --env production` releases "
                "it, all recorded in the ledger, offline"]
    return ["replace the `deploy:` command of production"]
