"""`cdkit deploy` and `cdkit environments`: release a SHA through the gates, and show what runs where."""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from cdkit import git, jsondoc, output
from cdkit.config import Pipeline
from cdkit.errors import GateFailed, UsageError
from cdkit.ledger import Ledger
from cdkit.release import (
    ReleaseContext, Remote, current_sha, deploy as release_deploy, find_environment, governed, window_verdict,
)
from cdkit.session import Workspace, find_workspace, load_pipeline, open_ledger


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def remote_for(ws: Workspace, pipeline: Pipeline, environ: Mapping[str, str]) -> Remote | None:
    """The GitHub side of releases when a token and repository are given (in the Action, or by hand), else None."""
    if not (environ.get("GITHUB_TOKEN") and environ.get("GITHUB_REPOSITORY")):
        return None
    try:
        from cdkit import release_github  # imports PyGithub: only when GitHub is actually configured
    except ImportError:
        return None
    remote: Remote = release_github.remote_from_environ(pipeline, environ, root=str(ws.root))
    return remote


def release_context(ws: Workspace, pipeline: Pipeline, ledger: Ledger, *, environ: Mapping[str, str],
                    stream: IO[str], remote: Remote | None = None) -> ReleaseContext:
    def say(text: str) -> None:
        output.write_line(text, stream=stream)

    def show(line: bytes) -> None:
        output.write(f"  | {line.decode('utf-8', 'replace').rstrip()}\n", stream=stream)

    log_url = None
    if remote is not None:
        from cdkit.github import actions_run_url

        log_url = actions_run_url(environ)
    return ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger,
                          environ=dict(environ), remote=remote, say=say, on_output=show, log_url=log_url)


def default_sha(ws: Workspace, pipeline: Pipeline) -> str:
    tip = git.branch_tip(pipeline.release_branch, cwd=ws.root)
    if tip is None:
        raise UsageError(f"the release branch {pipeline.release_branch!r} does not exist here; pass --sha SHA")
    return tip


def deploy(*, environment: str, sha: str | None, rollback: bool, config: str | None, as_json: bool,
           force: bool = False, reason: str | None = None, environ: Mapping[str, str] = os.environ,
           cwd: str | os.PathLike[str] | None = None, break_glass: bool = False,
           clock: Callable[[], float] | None = None) -> int:
    """`cdkit deploy`; `clock` is for tests in this process only (the ledger's, which the window gate reads)."""
    if force and not (reason and reason.strip()):
        raise UsageError("--force deploys a quarantined commit on purpose: say why with --reason TEXT (recorded)")
    if break_glass and not (reason and reason.strip()):
        raise UsageError("--break-glass deploys inside a freeze window: say why with --reason TEXT (recorded)")
    if reason is not None and not (force or break_glass):
        raise UsageError("--reason says why --force or --break-glass; give one of them, or leave --reason out")
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    stream = sys.stderr if as_json else sys.stdout
    with open_ledger(ws.repo, clock=clock) as ledger:
        ctx = release_context(ws, pipeline, ledger, environ=environ, stream=stream,
                              remote=remote_for(ws, pipeline, environ))
        known_here(ctx, environment)
        target = sha or default_sha(ws, pipeline)
        try:
            result = release_deploy(ctx, environment, target, rollback=rollback,
                                    force=reason.strip() if force and reason else None,
                                    break_glass=reason.strip() if break_glass and reason else None)
        except GateFailed as exc:
            if not as_json:
                raise
            jsondoc.write("deploy", refusal_data(environment, target, exc))
            return exc.exit_code
    if as_json:
        jsondoc.write("deploy", result.as_data())
    return result.exit_code


def known_here(ctx: ReleaseContext, environment: str) -> None:
    """A usage error (exit 2) for an environment neither the work tree's pipeline nor its governing one defines.

    The work tree may have renamed or dropped an environment the governing pipeline still
    has: that one is still deployed by its committed rules.
    """
    try:
        find_environment(ctx.pipeline, environment)
    except UsageError:
        try:
            governed(ctx, environment)
        except GateFailed:
            known = ", ".join(e.name for e in ctx.pipeline.environments) or "none are defined"
            raise UsageError(f"no environment {environment!r} in {ctx.pipeline.path} (environments: {known}), "
                             "nor in the committed pipeline that governs it") from None


def refusal_data(environment: str, sha: str, exc: GateFailed) -> dict[str, Any]:
    """`--json` on a refusal: the same document as a deploy, with `deployed: false` and every problem."""
    problems = list(getattr(exc, "problems", ())) or [str(exc)]
    window = getattr(exc, "window", None)
    return {"environment": environment, "sha": sha, "status": "refused", "deployed": False,
            "waiting": bool(getattr(exc, "only_approval", False)) or window is not None, "window": window,
            "break_glass": None, "problems": problems, "governed_by": getattr(exc, "governed_by", None)}


def environments_data(ws: Workspace, pipeline: Pipeline, ledger: Ledger) -> list[dict[str, Any]]:
    ctx = ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger)
    rows = []
    for env in pipeline.environments:
        record = ledger.current_deployment(env.name)
        last = ledger.last_deployment(env.name)
        approval = record["approval"] if record else None
        rows.append({
            "name": env.name, "mode": env.mode,
            "approval": {"via": env.approval.via, "required": env.approval.required,
                         "reviewers": list(env.approval.reviewers)} if env.mode == "delivery" else None,
            "url": env.url,
            "sha": current_sha(ctx, env.name),
            "since": record["finished_at"] if record else None,
            "deployment_id": record["id"] if record else None,
            "rollback": bool(record["rollback"]) if record else False,
            # success (no verify), verified, verification_failed, adopted (what it ran before cdkit)
            "status": record["status"] if record else None,
            "adopted": _adoption_data(ledger.adoption(env.name)),
            "approved_by": [c["who"] for c in (approval or {}).get("counted", [])],
            "quarantined": [{"sha": sha, "reason": q["reason"], "since": q["created_at"]}
                            for sha, q in ledger.quarantined(env.name).items()],
            "last_attempt": {"id": last["id"], "sha": last["sha"], "status": last["status"]} if last else None,
            "break_glass": bool((approval or {}).get("break_glass")),
            "window": window_verdict(ctx, env),
        })
    return rows


def _adoption_data(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An environment's adoption (`cdkit adopt`) as data: what it ran before cdkit (sha None: nothing)."""
    if record is None:
        return None
    return {"sha": record["sha"] or None, "at": record["started_at"], "by": record["deployed_by"],
            "reason": record["reason"], "deployment_id": record["id"]}


def environments(*, config: str | None, as_json: bool, cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    with open_ledger(ws.repo) as ledger:
        rows = environments_data(ws, pipeline, ledger)
    if as_json:
        jsondoc.write("environments", {"environments": rows})
        return 0
    if not rows:
        output.write_line(f"no environments in {pipeline.path} (add an `environments:` list)")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        how = r["mode"] if r["mode"] == "deployment" else \
            f"delivery ({r['approval']['required']} approval(s) via {r['approval']['via']})"
        if r["sha"]:
            who = f", approved by {', '.join(r['approved_by'])}" if r["approved_by"] else ""
            back = " (rollback)" if r["rollback"] else ""
            state = {"verified": ", verified", "verification_failed": ", FAILED verification",
                     "adopted": ", ADOPTED (it ran it before cdkit: not deployed or verified by cdkit)",
                     }.get(r["status"] or "", "")
            state += " (BREAK-GLASS)" if r["break_glass"] else ""
            what = f"runs {r['sha'][:12]} since {when(r['since'])}{back}{state}{who}"
        elif r["adopted"]:
            what = f"nothing deployed yet (ADOPTED as running nothing, {when(r['adopted']['at'])})"
        else:
            what = "nothing deployed yet (its first release needs `cdkit adopt` in delivery mode)" \
                if r["mode"] == "delivery" else "nothing deployed yet"
        output.write_line(f"{r['name'].ljust(width)}  {how}: {what}")
        last = r["last_attempt"]
        if last and last["id"] != r["deployment_id"]:
            output.write_line(f"{' ' * width}  last attempt: #{last['id']} {last['sha'][:12]} {last['status']}")
        for q in r["quarantined"]:
            output.write_line(f"{' ' * width}  quarantined: {q['sha'][:12]} ({q['reason']})")
        if r["window"] and not r["window"]["allowed"]:
            output.write_line(f"{' ' * width}  held by a window: {r['window']['message']}")
    return 0


def auto_release(ws: Workspace, pipeline: Pipeline, *, run_id: int, sha: str, ref: str | None, passed: bool,
                 environ: Mapping[str, str], stream: IO[str]) -> list[dict[str, Any]]:
    """After `cdkit run --deploy`: continuous deployment of a passing, clean run on the release branch.

    Returns the deploys as data (empty when nothing is in deployment mode or the run does not qualify).
    """
    from cdkit.release import after_pipeline

    with open_ledger(ws.repo) as ledger:
        record = ledger.run(run_id)
        dirty = record is None or record.dirty
        ctx = release_context(ws, pipeline, ledger, environ=environ, stream=stream,
                              remote=remote_for(ws, pipeline, environ))
        if not _deploys_somewhere(ctx):
            return []
        results = after_pipeline(ctx, sha=sha, ref=ref, passed=passed, dirty=dirty)
    return [{**r.as_data(), "exit_code": r.exit_code} for r in results]


def _deploys_somewhere(ctx: ReleaseContext) -> bool:
    """Whether an environment is in deployment mode, in the work tree or by the rules that govern it."""
    for env in ctx.pipeline.environments:
        if env.mode == "deployment":
            return True
        try:
            if governed(ctx, env.name).env.mode == "deployment":
                return True
        except GateFailed:
            continue
    return False


def chain_data(ws: Workspace, pipeline: Pipeline, ledger: Ledger, sha: str) -> list[dict[str, Any]]:
    """For `cdkit status SHA`: per environment, the gate's verdict on SHA, its approvals and its deployments."""
    from cdkit.release import check, quarantine_reason, verified_since

    ctx = ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger)
    rows = []
    for env in pipeline.environments:
        verdict = check(ctx, env, sha)
        rows.append({
            "name": env.name, "mode": env.mode,
            "runs_now": verdict.current,
            "deployable": verdict.ok, "problems": list(verdict.problems),
            "quarantined": quarantine_reason(ctx, env.name, sha),
            "window": verdict.window,
            "verified_since": (verified_since(ctx, env.name, sha) or (None,))[0],
            "approval": verdict.decision.as_data() if verdict.decision else None,
            "approvals": [{"approver": a["approver"], "via": a["via"], "at": a["created_at"], "comment": a["comment"]}
                          for a in ledger.approvals(sha=sha, environment=env.name)],
            "adopted": _adoption_data(ledger.adoption(env.name)),
            "deployments": [{"id": d["id"], "status": d["status"], "rollback": bool(d["rollback"]),
                             "automatic": bool(d["automatic"]), "reason": d["reason"],
                             "break_glass": bool((d["approval"] or {}).get("break_glass")),
                             "started_at": d["started_at"], "finished_at": d["finished_at"], "log": d["log_path"]}
                            for d in ledger.deployments(environment=env.name, sha=sha)],
        })
    return rows


def print_chain(rows: list[dict[str, Any]], sha: str) -> None:
    if not rows:
        return
    output.write_line("environments:")
    for r in rows:
        here = " (runs it now)" if r["runs_now"] == sha else ""
        adopted = r["adopted"]
        if adopted and adopted["sha"] == sha:
            here += " (ADOPTED: it ran it before cdkit)"
        output.write_line(f"  {r['name']} ({r['mode']}){here}")
        for a in r["approvals"]:
            said = f" {json.dumps(a['comment'])}" if a["comment"] else ""
            verb = "approval withdrawn by" if a["via"] == "revocation" else "approved by"
            output.write_line(f"    {verb} {a['approver']} via {a['via']} at {when(a['at'])}{said}")
        if r["approval"] is not None and not r["approvals"]:
            output.write_line("    no approvals recorded")
        for d in r["deployments"]:
            back = (" automatic rollback" if d["automatic"] else " rollback") if d["rollback"] else ""
            back += " BREAK-GLASS" if d["break_glass"] else ""
            why = f" ({d['reason']})" if d["reason"] else ""
            output.write_line(f"    deployment #{d['id']}{back} {d['status'].replace('_', ' ')} at "
                              f"{when(d['finished_at'] or d['started_at'])}{why}")
        if r["verified_since"]:
            output.write_line(f"    verified there since {when(r['verified_since'])}")
        if r["quarantined"]:
            output.write_line(f"    QUARANTINED: {r['quarantined']}")
        if r["window"] and not r["window"]["allowed"]:
            output.write_line(f"    HELD by a window: {r['window']['message']}")
        if r["runs_now"] != sha:
            state = "deployable now" if r["deployable"] else "not deployable: " + "; ".join(r["problems"])
            output.write_line(f"    {state}")
