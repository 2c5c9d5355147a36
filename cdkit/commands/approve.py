"""`cdkit approve` and `cdkit approvals`: local approvals (`approval.via: local`) in the ledger."""
from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from cdkit import git, jsondoc, output
from cdkit.approval import Review, evaluate
from cdkit.commands.deploy import when
from cdkit.errors import GateFailed, UsageError
from cdkit.release import (
    BREAK_GLASS_VIA, LOCAL_VIA, REVOKED_VIA, Governing, ReleaseContext, break_glass_decision, current_sha,
    find_environment, format_local_identity, governing_commit, local_decision, local_facts, parse_local_identity,
    runs_adopted, signed_reviews, verified_approver,
)
from cdkit.config import Environment, Pipeline
from cdkit.session import Workspace, find_workspace, load_pipeline, open_ledger


def approve(*, sha: str, environment: str, comment: str, config: str | None, as_json: bool,
            cwd: str | os.PathLike[str] | None = None, break_glass: bool = False, key: str | None = None,
            revoke: bool = False) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    env = governed_environment(ws, pipeline, environment)
    if revoke:
        if break_glass:
            raise UsageError("--revoke withdraws a local approval; give it without --break-glass")
        return revoke_approval(ws, pipeline, env, sha=sha, comment=comment, as_json=as_json)
    if break_glass:
        return approve_break_glass(ws, pipeline, env, sha=sha, comment=comment, as_json=as_json, key=key)
    if env.mode != "delivery":
        raise UsageError(f"{env.name} is in deployment mode: it deploys without approvals, so there is "
                         "nothing to approve")
    if env.approval.via != LOCAL_VIA:
        where = "an approving pull-request review on GitHub (cdkit release open)" if env.approval.via == "review" \
            else "the GitHub environment's required reviewers"
        raise UsageError(f"{env.name} is approved through {where} (approval.via: {env.approval.via}); "
                         "cdkit approve records local approvals only")
    full = git.resolve_commit(sha, cwd=ws.root)
    name, email = git.identity(cwd=ws.root)
    approver = format_local_identity(name, email)
    with open_ledger(ws.repo) as ledger:
        ctx = ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger,
                             environ=dict(os.environ))
        if current_sha(ctx, env.name) == full and not runs_adopted(ctx, env.name, full):
            # Nothing to release: an approval here would only pad the count ("2 of 1 approval(s)").
            raise GateFailed(f"refusing the approval of {full[:12]} for {env.name}: {env.name} already runs it, so "
                             "there is nothing to approve (approve a newer commit, or an older one to roll back to)")
        # The same rules the deploy applies, for this one approval: refuse it now rather than record a dud.
        mine = Review(parse_local_identity(approver), "APPROVED", full, via=LOCAL_VIA)
        verdict = evaluate(local_facts(ctx, env, full, (mine,), required=1))
        if not verdict.approved:
            raise GateFailed(f"refusing the approval of {full[:12]} for {env.name}: {verdict.reasons[0]} "
                             "(someone else must approve it)")
        governing = governing_commit(ctx, env.name)
        signed = _sign(ctx, env, full, approver, governing, key, at=ledger.clock())
        already = _already_counted(ctx, env, full, governing, mine)
        approval_id = None if already else ledger.add_approval(
            sha=full, environment=env.name, approver=approver, via=LOCAL_VIA, comment=comment,
            signature=signed[1] if signed else None, signed_message=signed[0] if signed else None,
            governed_by=governing.label)
        decision = local_decision(ctx, env, full, governing)
    if as_json:
        jsondoc.write("approve", {"approved": True, "id": approval_id, "sha": full, "environment": env.name,
                                  "approver": approver, "already_approved": already,
                                  "decision": decision.as_data()})
        return 0
    verb = "had already approved" if already else "approved"
    output.write_line(f"{approver} {verb} {full[:12]} for {env.name}")
    state = "approved: deploy it with" if decision.approved else "still waiting for approvals before"
    output.write_line(f"{count_text(len(decision.counted), env.approval.required)}; {state} "
                      f"`cdkit deploy --env {env.name} --sha {full[:12]}`")
    return 0


def _already_counted(ctx: ReleaseContext, env: Environment, sha: str, governing: Governing, mine: Review) -> bool:
    """Whether the gate already counts an approval of `mine`'s kind by this approver.

    Only one the gate would count: a row in their name that does not verify (an unsigned
    one, or one somebody else wrote) never stops them from recording their own.
    """
    counted, _ = signed_reviews(ctx, env, sha, governing, via=mine.via)
    return any(r.reviewer.same_as(mine.reviewer) for r in counted)


def count_text(have: int, required: int) -> str:
    """"1 of 2 approval(s)"; more than required reads "3 approvals (2 required)", never "3 of 2"."""
    return f"{have} of {required} approval(s)" if have <= required else f"{have} approvals ({required} required)"


def revoke_approval(ws: Workspace, pipeline: Pipeline, env: Environment, *, sha: str, comment: str,
                    as_json: bool) -> int:
    """`cdkit approve --revoke SHA --env NAME`: withdraw your own local approval of SHA (a row of its own).

    Nothing is deleted: a revocation row names the approval it withdraws, and the gate
    counts only approvals no row withdraws. It is not signed, even with approval.signed on:
    a revocation can only take an approval away, never add one, so a forged one (someone
    setting git's user.email to yours) can delay a release but never let one through, and
    whoever can write the ledger can delete rows anyway. Someone else's approval, or none,
    is a clear error.
    """
    if env.mode != "delivery" or env.approval.via != LOCAL_VIA:
        raise UsageError(f"{env.name} has no local approvals to withdraw (mode: {env.mode}, approval.via: "
                         f"{env.approval.via}); --revoke withdraws what `cdkit approve` recorded")
    full = git.resolve_commit(sha, cwd=ws.root)
    me = format_local_identity(*git.identity(cwd=ws.root))
    mine_id = parse_local_identity(me)
    with open_ledger(ws.repo) as ledger:
        standing = ledger.standing_approvals(sha=full, environment=env.name, via=LOCAL_VIA)
        mine = [a for a in standing if parse_local_identity(a["approver"]).same_as(mine_id)]
        if not mine:
            others = sorted({a["approver"] for a in standing})
            held = f" (it has approvals by {', '.join(others)}; only they can withdraw theirs)" if others else \
                " (it has none)"
            raise GateFailed(f"refusing to revoke: {me} has no approval of {full[:12]} for {env.name} to withdraw"
                             + held)
        ids = [ledger.add_approval(sha=full, environment=env.name, approver=me, via=REVOKED_VIA, comment=comment,
                                   revokes=int(a["id"])) for a in mine]
        ledger.audit(f"{env.name}: {me} withdrew their approval of {full} (approval "
                     + ", ".join(f"#{a['id']}" for a in mine) + ")")
        ctx = ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger,
                             environ=dict(os.environ))
        try:
            decision = local_decision(ctx, env, full)
        except GateFailed as exc:  # e.g. no baseline: the withdrawal stands, the decision cannot be made
            decision = None
            why = str(exc)
    if as_json:
        jsondoc.write("approve", {"approved": False, "revoked": True, "id": ids[-1], "revokes": [a["id"] for a in mine],
                                  "sha": full, "environment": env.name, "approver": me,
                                  "decision": decision.as_data() if decision else None})
        return 0
    output.write_line(f"{me} withdrew their approval of {full[:12]} for {env.name}")
    if decision is None:
        output.write_line(f"(no decision: {why})")
    else:
        state = "still approved by the others" if decision.approved else "not approved"
        output.write_line(f"{count_text(len(decision.counted), env.approval.required)}; {state}")
    return 0


def governed_environment(ws: Workspace, pipeline: Pipeline, name: str) -> Environment:
    """The environment as the committed pipeline that governs it defines it (issue 9 §4): whether it takes
    approvals, how and how many is not the work tree's to change."""
    from cdkit.commands.deploy import known_here
    from cdkit.release import governed

    with open_ledger(ws.repo) as ledger:
        ctx = ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger,
                             environ=dict(os.environ))
        known_here(ctx, name)
        return governed(ctx, name).env


def _sign(ctx: ReleaseContext, env: Environment, sha: str, approver: str, governing: Governing, key: str | None,
          *, at: float, via: str = LOCAL_VIA) -> tuple[str, str] | None:
    """(message, signature) of this approval, checked as the gate will check it; None when it goes unsigned.

    Signed whenever signing is on for its kind (approval.signed, or break_glass.signed for
    `via: break-glass`; both default on) or --key is given. A signature the gate would not
    count (a key missing from the governing commit's allowed_signers) is refused now rather
    than recorded as a dud.
    """
    from cdkit import signing

    glass = via == BREAK_GLASS_VIA
    required = env.break_glass_signed if glass else env.approval.signed
    kind, switch = (signing.BREAK_GLASS, "break_glass.signed") if glass else (signing.APPROVAL, "approval.signed")
    what = "break-glass approvals" if glass else "approvals"
    path = signing.signing_key(ctx.root, key)
    if path is None:
        if not required:
            return None
        raise UsageError(f"{env.name}'s {what} must be signed ({switch}): set up SSH signing "
                         "(git config gpg.format ssh; git config user.signingkey ~/.ssh/id_ed25519.pub) or pass "
                         "--key PATH, and list your key in .cdkit/allowed_signers (the format of git's "
                         "gpg.ssh.allowedSignersFile)")
    when = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    repository = signing.repository_id(ctx.root, ctx.environ)
    message = signing.approval_message(repository=repository, sha=sha, environment=env.name, approver=approver,
                                       at=when, kind=kind)
    signature = signing.sign(message, path, kind)
    if required:
        row = {"approver": approver, "signature": signature, "signed_message": message}
        allowed = signing.allowed_signers_at(ctx.root, governing.sha)
        where = f"{signing.ALLOWED_SIGNERS} at {governing.sha[:12]} ({governing.why})"
        try:
            verified_approver(row, allowed, where, repository=repository, sha=sha, environment=env.name, via=via)
        except signing.SignatureProblem as exc:
            noun = "break-glass approval" if glass else "approval"
            raise GateFailed(f"refusing the {noun} of {sha[:12]} for {env.name}: the gate would not count it: "
                             f"{exc}") from None
    return message, signature


def approve_break_glass(ws: Workspace, pipeline: Pipeline, env: Environment, *, sha: str, comment: str,
                        as_json: bool, key: str | None = None) -> int:
    """A break-glass approval: SHA may deploy inside a window of `env` (by `cdkit deploy --break-glass`).

    Recorded as its own kind (via: break-glass), so it never counts as a normal approval, and
    signed as its own kind (break_glass.signed), so no approval's signature counts for it; the
    same identity rules hold (no author or committer of the release approves it).
    """
    if env.break_glass is None:
        raise UsageError(f"{env.name} has no `break_glass: {{required: N}}` policy, so nothing deploys into its "
                         "windows; add one to its entry in the pipeline file to allow break-glass deploys")
    full = git.resolve_commit(sha, cwd=ws.root)
    approver = format_local_identity(*git.identity(cwd=ws.root))
    with open_ledger(ws.repo) as ledger:
        ctx = ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger,
                             environ=dict(os.environ))
        mine = Review(parse_local_identity(approver), "APPROVED", full, via=BREAK_GLASS_VIA)
        verdict = evaluate(local_facts(ctx, env, full, (mine,), required=1))
        if not verdict.approved:
            raise GateFailed(f"refusing the break-glass approval of {full[:12]} for {env.name}: {verdict.reasons[0]} "
                             "(someone else must approve it)")
        governing = governing_commit(ctx, env.name)
        signed = _sign(ctx, env, full, approver, governing, key, at=ledger.clock(), via=BREAK_GLASS_VIA)
        already = _already_counted(ctx, env, full, governing, mine)
        approval_id = None if already else ledger.add_approval(
            sha=full, environment=env.name, approver=approver, via=BREAK_GLASS_VIA, comment=comment,
            signature=signed[1] if signed else None, signed_message=signed[0] if signed else None,
            governed_by=governing.label)
        decision = break_glass_decision(ctx, env, full, deploying=False)
    if as_json:
        jsondoc.write("approve", {"approved": True, "id": approval_id, "sha": full, "environment": env.name,
                                  "approver": approver, "already_approved": already, "break_glass": True,
                                  "decision": decision.as_data()})
        return 0
    verb = "had already approved" if already else "approved"
    output.write_line(f"{approver} {verb} a break-glass deploy of {full[:12]} to {env.name}")
    state = "enough: someone else breaks the glass with" if decision.approved else "still short of what"
    output.write_line(f"{len(decision.counted)} of {env.break_glass} break-glass approval(s); {state} "
                      f"`cdkit deploy --env {env.name} --sha {full[:12]} --break-glass --reason TEXT`"
                      + ("" if decision.approved else " needs"))
    return 0


def approvals_data(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "sha": r["sha"], "environment": r["environment"], "approver": r["approver"],
             "via": r["via"], "comment": r["comment"], "at": r["created_at"]} for r in rows]


def approvals(*, environment: str | None, config: str | None, as_json: bool,
              cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    if environment:
        find_environment(pipeline, environment)
    with open_ledger(ws.repo) as ledger:
        rows = approvals_data(ledger.approvals(environment=environment))
    if as_json:
        jsondoc.write("approvals", {"approvals": rows})
        return 0
    if not rows:
        output.write_line("no approvals recorded" + (f" for {environment}" if environment else ""))
        return 0
    for r in rows:
        said = f"  {json.dumps(r['comment'])}" if r["comment"] else ""
        output.write_line(f"{when(r['at'])}  {r['environment']:<12} {r['sha'][:12]}  {r['approver']} "
                          f"(via {r['via']}){said}")
    return 0
