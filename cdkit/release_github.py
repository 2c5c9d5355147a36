"""The GitHub side of releases: environment preflight, approvals from the REST API, GitHub deployments.

`GitHubRemote` meets `cdkit.release.Remote`; every request goes through
`cdkit.github.GitHubClient` (retries, rate limits, redaction). Whatever a gate
depends on is read at decision time, every page of it; a read that fails raises
(GitHubDeferred / GitHubRefused) and so refuses the release (fail closed).

Release pull requests (`approval.via: review`): for environment E, the branch
`cdkit/deployed/E` points at what E runs and `cdkit/release/E` at the candidate,
so the pull request `cdkit/release/E -> cdkit/deployed/E` shows exactly the
commits the release adds, and its reviews are on the candidate SHA.

Entry points for the Action (`cdkit action`):
    ctx = action_context(ws, pipeline, ledger, environ=..., say=..., on_output=...)
    release.after_pipeline(ctx, sha=..., ref=..., passed=...)   # push, deployment mode
    on_review(ctx, payload)                                     # pull_request_review
    on_deployment(ctx, payload)                                 # deployment
"""
from __future__ import annotations

import dataclasses
import re
import time
import uuid
from urllib.parse import quote
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from cdkit import git
from cdkit.approval import Decision, Facts, Identity, Review, evaluate, permission_key
from cdkit import evidence
from cdkit.config import Environment, Evidence, Pipeline
from cdkit.errors import GateFailed, UsageError
from cdkit.github import GitHubClient, GitHubRefused, actions_run_url, resolve_repository
from cdkit.history.records import is_adoption
from cdkit.ledger import Ledger
from cdkit.people import PUSH_RECORD_NAME, CommitPeople, PullRequest, ReleasePeople, parse_push_record
from cdkit.release import (
    GOOD, NOT_COUNTED, QUARANTINED_PREFIX, Adoption, DeployResult, ReleaseContext, StageVerdict, check, combined_verdicts, current_sha,
    deploy, deploy_if_approved, find_environment, governed, people_if_approved, release_base,
)
from cdkit.session import Workspace

RELEASE_PREFIX = "cdkit/release/"
DEPLOYED_PREFIX = "cdkit/deployed/"
ACTIVE_STATES = frozenset({"queued", "pending", "in_progress"})
REVIEW_EVENT = "pull_request_review"
STARTED_FIRST = "another deploy started first"
STALE_DEPLOY_SECONDS = 3600.0  # an in-progress GitHub deployment older than this is a crashed one, not a lock


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _adopted_empty(deployment: Mapping[str, Any]) -> bool:
    """An adoption of "nothing runs here": its ref is a placeholder (GitHub needs one), never what runs."""
    payload = deployment.get("payload")
    return is_adoption(deployment) and isinstance(payload, Mapping) and payload.get("adopted_empty") is True


def _identity(user: Mapping[str, Any] | None) -> Identity | None:
    if not user:
        return None
    return Identity(id=str(user["id"]) if user.get("id") is not None else None, login=user.get("login"),
                    bot=user.get("type") == "Bot")


def _people_facts(environment: Environment, people: ReleasePeople) -> dict[str, Any]:
    """The `Facts` fields about who wrote the release, under this environment's policy."""
    return {"excluded": people.excluded, "unidentified": people.unidentified,
            "allow_unidentified": environment.approval.unidentified_authors == "allow",
            "expires": environment.approval.expires}


def _login_identity(login: str | None) -> Identity | None:
    return Identity(login=login) if login else None


def _same_repo(head: Mapping[str, Any], base: Mapping[str, Any], repo: str) -> bool:
    """Whether a pull request's head lives in its base repository, `repo` (not a fork).

    The REST API and webhook payloads carry both repositories (a deleted fork's
    head is null); a pull request without them is not trusted as a release one.
    """
    head_repo, base_repo = head.get("repo") or {}, base.get("repo") or {}
    names = [str(r.get("full_name") or "").casefold() for r in (head_repo, base_repo)]
    if names != [repo.casefold()] * 2:
        return False
    return head_repo.get("id") == base_repo.get("id")


@dataclasses.dataclass
class GitHubRemote:
    """Reads and writes one repository's releases on GitHub (see `cdkit.release.Remote`)."""

    client: GitHubClient
    repo: str
    root: str
    actor: str | None = None
    triggering_actor: str | None = None
    run_id: str | None = None
    run_sha: str | None = None  # the commit the Actions run is for (environment approvals bind to it)
    own_deployment_id: int | None = None  # a `deployment` event's deployment: not someone else's deploy
    event_name: str | None = None  # GITHUB_EVENT_NAME: on a review event the actor is the reviewer
    evidence: Evidence = Evidence()  # whose check runs, statuses and deployments count
    report: str = "auto"  # the pipeline's `report:`: statuses count only where CI may post them
    clock: Callable[[], float] = time.time
    # What `commit_people` read, per range: who wrote a commit does not change between two checks of one deploy.
    _people_read: dict[tuple[str | None, str, tuple[str, ...]], tuple[CommitPeople, ...]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False)
    # Every check run of a commit (`filter=all`, every page), as this process first read it: the stage verdicts
    # and the `cdkit push` records of that commit come from one read, and one process judges a commit once
    # (the release body, the gate and the re-check right before deploying agree by construction).
    _check_runs_read: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict, repr=False,
                                                                          compare=False)
    _verdicts_read: dict[str, dict[str, StageVerdict]] = dataclasses.field(default_factory=dict, repr=False,
                                                                          compare=False)
    _suites_read: dict[str, frozenset[int]] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    # --- reads -----------------------------------------------------------------------------------

    def _get(self, path: str, what: str, scope: str | None = None, **params: Any) -> Any:
        return self.client.request("GET", f"/repos/{self.repo}{path}", params=params or None, what=what,
                                   scope=scope)[1]

    def _all(self, path: str, what: str, scope: str | None = None, item_key: str | None = None,
             **params: Any) -> list[Any]:
        return list(self.client.request_all(f"/repos/{self.repo}{path}", params=params or None, what=what,
                                            scope=scope, item_key=item_key))

    def stage_verdicts(self, sha: str, *, wanted: Iterable[str] | None = None) -> dict[str, StageVerdict]:
        """cdkit's stage results on GitHub that CI produced for `sha`, every page (see `cdkit.evidence`).

        A counted check run outranks any status, so the statuses are read only when the check
        runs leave a `wanted` stage (default: any) without a counted verdict.
        """
        if sha in self._verdicts_read:
            return dict(self._verdicts_read[sha])
        runs = self._check_runs(sha)
        if sha not in self._suites_read:
            suites: frozenset[int] = frozenset()
            if evidence.needs_workflow_runs(runs, self.evidence):
                suites = evidence.workflow_suites(
                    self._all("/actions/runs", f"read the workflow runs of {sha[:12]}", "actions: read",
                              item_key="workflow_runs", head_sha=sha), self.repo, sha)
            self._suites_read[sha] = suites
        suites = self._suites_read[sha]
        if wanted is not None:
            from_checks = evidence.stage_verdicts(runs, (), evidence=self.evidence, report=self.report, suites=suites)
            if all(name in from_checks and from_checks[name].status != NOT_COUNTED for name in wanted):
                return from_checks  # not remembered whole: a later caller may want a stage only a status speaks for
        statuses = self._all(f"/commits/{sha}/statuses", f"read the commit statuses of {sha[:12]}", "statuses: read")
        self._verdicts_read[sha] = evidence.stage_verdicts(runs, statuses, evidence=self.evidence, report=self.report,
                                                           suites=suites)
        return dict(self._verdicts_read[sha])

    def _check_runs(self, sha: str) -> list[dict[str, Any]]:
        if sha not in self._check_runs_read:
            self._check_runs_read[sha] = self._all(f"/commits/{sha}/check-runs", f"read the check runs of {sha[:12]}",
                                                   "checks: read", item_key="check_runs", filter="all")
        return self._check_runs_read[sha]

    def _deployments(self, environment: str, sha: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"environment": environment}
        if sha:
            params["sha"] = sha
        found: list[dict[str, Any]] = self._all("/deployments", f"list the deployments of {environment}",
                                                "deployments: read", **params)
        return found  # newest first

    def _statuses(self, deployment_id: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._all(f"/deployments/{deployment_id}/statuses",
                                                f"read the statuses of deployment {deployment_id}",
                                                "deployments: read")
        return found  # newest first

    def _of_this_run(self, statuses: list[dict[str, Any]]) -> bool:
        """Whether a deployment's statuses point at this Actions run (any attempt, any job).

        GitHub creates a deployment for every job that declares `environment:` and
        links its statuses to the job's page (`.../actions/runs/<id>/job/<job>`);
        cdkit's own finished statuses link to the run too.
        """
        if not self.run_id:
            return False
        link = re.compile(rf"/{re.escape(self.repo)}/actions/runs/{re.escape(self.run_id)}(?:[/?#]|$)",
                          re.IGNORECASE)
        return any(link.search(str(s.get(key) or "")) for s in statuses for key in ("log_url", "target_url"))

    def _is_job_deployment(self, deployment: Mapping[str, Any], statuses: list[dict[str, Any]]) -> bool:
        """GitHub's deployment for this run's job (not one cdkit created): it says nothing about what is deployed.

        While the deploy job runs its status is `in_progress`; taking it for another
        deploy would make every `environment:` job refuse itself.
        """
        if deployment.get("id") == self.own_deployment_id:
            return False
        created_by_cdkit = isinstance(deployment.get("payload"), Mapping) and \
            evidence.DEPLOYMENT_MARKER in deployment["payload"]
        return not created_by_cdkit and self._of_this_run(statuses)

    def _says_what_runs(self, deployment: Mapping[str, Any]) -> bool:
        """Only deployments cdkit created (and a `deployment` event's own) say what an environment runs."""
        return deployment.get("id") == self.own_deployment_id or evidence.is_cdkit_deployment(deployment, self.evidence)

    def _current(self, environment: str) -> dict[str, Any] | None:
        """The deployment whose SHA `environment` runs: the newest of cdkit's whose latest status is success."""
        for deployment in self._deployments(environment):
            if not self._says_what_runs(deployment):
                continue
            if _adopted_empty(deployment):
                return None  # the start of its record (newest first): it ran nothing, and nothing since
            statuses = self._statuses(int(deployment["id"]))
            if self._is_job_deployment(deployment, statuses):
                continue
            if statuses and statuses[0].get("state") == "success":
                return deployment
        return None

    def current_sha(self, environment: str) -> str | None:
        deployment = self._current(environment)
        return str(deployment["sha"]) if deployment is not None else None

    def current_governed_by(self, environment: str) -> str | None:
        """The rules (path@sha) that governed the cdkit deployment of what `environment` runs, from its payload."""
        deployment = self._current(environment)
        payload = deployment.get("payload") if deployment is not None else None
        recorded = payload.get("governed_by") if isinstance(payload, Mapping) else None
        return recorded if isinstance(recorded, str) else None

    def with_rules(self, pipeline: Pipeline) -> GitHubRemote:
        """This remote counting evidence by `pipeline`'s rules (the governing one's `evidence:` and `report:`).

        The raw reads (check runs, people) are shared; what was judged under other rules is not, since
        whether a check run counts, and so whether its workflow runs were worth reading, depends on them."""
        if (pipeline.evidence, pipeline.report) == (self.evidence, self.report):
            return self
        return dataclasses.replace(self, evidence=pipeline.evidence, report=pipeline.report, _verdicts_read={},
                                   _suites_read={})

    def has_deployed(self, environment: str, sha: str) -> bool:
        for deployment in self._deployments(environment, sha):
            if not self._says_what_runs(deployment) or is_adoption(deployment):
                continue
            statuses = self._statuses(int(deployment["id"]))
            if self._is_job_deployment(deployment, statuses):
                continue
            if any(s.get("state") in ("success", "inactive") for s in statuses):
                return True
        return False

    def _cdkit_deployments(self, environment: str, sha: str | None = None) -> list[dict[str, Any]]:
        """cdkit's own deployments (its payload marker), newest first: the only ones that say what is verified."""
        return [d for d in self._deployments(environment, sha)
                if self._says_what_runs(d) and isinstance(d.get("payload"), Mapping)]

    def _final_state(self, deployment_id: int) -> tuple[str, str, float | None]:
        """(state, description, when) of a deployment's newest status ("" when it has none)."""
        statuses = self._statuses(deployment_id)
        if not statuses:
            return "", "", None
        newest = statuses[0]
        return str(newest.get("state") or ""), str(newest.get("description") or ""), _epoch(newest.get("created_at"))

    def verified_since(self, environment: str, sha: str) -> tuple[float, float | None] | None:
        """When cdkit's deployment of `sha` last reached `success` (set only once verified), and until when it ran."""
        newer_success: float | None = None
        for deployment in self._cdkit_deployments(environment):
            if is_adoption(deployment):
                break  # the start of its record: an adopted SHA was never verified by cdkit
            state, _, when = self._final_state(int(deployment["id"]))
            if deployment.get("sha") == sha and state in ("success", "inactive") and when is not None:
                return when, newer_success
            if state in ("success", "inactive") and when is not None:
                newer_success = when
        return None

    def quarantine_reason(self, environment: str, sha: str) -> str | None:
        """Why `sha` is quarantined for `environment` on GitHub: its newest finished cdkit deployment failed as
        the SHA's fault, or a later rollback moved the environment away from it."""
        for deployment in self._cdkit_deployments(environment):
            payload = deployment["payload"]
            if deployment.get("sha") != sha and payload.get("rollback_from") == sha:
                state, _, _ = self._final_state(int(deployment["id"]))
                if state in ("success", "inactive"):
                    how = "automatically" if payload.get("automatic") else f"by {payload.get('deployed_by')}"
                    return f"{environment} was rolled back from it {how} (GitHub deployment {deployment['id']})"
            if deployment.get("sha") != sha or _adopted_empty(deployment):
                continue  # another SHA's, or an adoption of nothing, whose ref is a placeholder
            if is_adoption(deployment):
                return None  # an adoption deployed nothing, so nothing of it failed: no status to read
            state, description, _ = self._final_state(int(deployment["id"]))
            if state in ("success", "inactive"):
                return None  # its newest deployment is good (a forced, verified redeploy lifts the quarantine)
            if description.startswith(QUARANTINED_PREFIX):
                return f"GitHub deployment {deployment['id']}: {description.removeprefix(QUARANTINED_PREFIX)}"
        return None

    def last_good_sha(self, environment: str, *, besides: str) -> str | None:
        for deployment in self._cdkit_deployments(environment):
            sha = str(deployment.get("sha"))
            if sha == besides or _adopted_empty(deployment):
                continue
            state, _, _ = self._final_state(int(deployment["id"]))
            if state in ("success", "inactive") and self.quarantine_reason(environment, sha) is None:
                return sha
        return None

    def first_deployment(self, environment: str) -> Adoption | None:
        """The start of `environment`'s record on GitHub: its adoption, or its first cdkit deployment; None."""
        mine = self._cdkit_deployments(environment)
        if not mine:
            return None
        first = mine[-1]  # newest first
        payload = first["payload"]
        where = f"GitHub deployment {first['id']}"
        if is_adoption(first):
            return Adoption(None if _adopted_empty(first) else str(first.get("sha")), where=where,
                            by=payload.get("adopted_by"), reason=payload.get("reason"))
        return Adoption(str(first.get("sha")), adopted=False, where=where)

    def adopt(self, environment: Environment, sha: str | None, *, payload: dict[str, Any], placeholder: str) -> int:
        """A cdkit deployment recording an adoption, finished at once (nothing runs).

        `success` for a SHA the environment runs; an adoption of nothing (`sha` None) needs a
        ref all the same (`placeholder`, the release branch tip), so it ends `inactive` and its
        payload says it is empty: no reader takes it for what runs.
        """
        token = uuid.uuid4().hex
        ref = sha or placeholder
        body = {"ref": ref, "environment": environment.name, "auto_merge": False, "required_contexts": [],
                "payload": {**payload, evidence.DEPLOYMENT_MARKER: token}, "transient_environment": False,
                "description": f"adopted {sha[:12]} by cdkit (runs it already)" if sha else
                "adopted by cdkit: runs nothing yet"}

        def recover() -> tuple[dict[str, Any], Any] | None:
            for d in self._deployments(environment.name, ref):
                if (d.get("payload") or {}).get(evidence.DEPLOYMENT_MARKER) == token:
                    return {}, d
            return None

        _, data = self.client.request("POST", f"/repos/{self.repo}/deployments", body=body,
                                      what=f"record the adoption of {environment.name} on GitHub",
                                      scope="deployments: write", recover=recover)
        deployment_id = int(data["id"])
        self._status(deployment_id, environment, "success" if sha else "inactive",
                     description=f"cdkit: adopted: runs {sha[:12]} (nothing deployed)" if sha else
                     "cdkit: adopted: runs nothing yet")
        return deployment_id

    def deploy_in_progress(self, environment: str) -> str | None:
        return self._active_deployment(environment)

    def _active_deployment(self, environment: str, *, older_than: int | None = None) -> str | None:
        """Another deploy to `environment` still running (younger than the stale cutoff), described; else None.

        Ours (a `deployment` event's, or `older_than` itself) and this run's don't count.
        With `older_than`, only deployments with a lower id do: they were created first.
        """
        now = self.clock()
        for deployment in self._deployments(environment):
            deployment_id = int(deployment["id"])
            if deployment_id == self.own_deployment_id or (older_than is not None and deployment_id >= older_than):
                continue
            created = _epoch(deployment.get("created_at")) or now
            if now - created > STALE_DEPLOY_SECONDS:
                break  # newest first: everything further is older still
            if is_adoption(deployment) and self._says_what_runs(deployment):
                continue  # cdkit's record of an adoption runs nothing: never a deploy in progress
            statuses = self._statuses(deployment_id)
            if self._of_this_run(statuses):
                continue  # this run's job deployment (or a deploy this run already finished)
            state = statuses[0].get("state") if statuses else "pending"
            if state not in ACTIVE_STATES:
                continue
            ended, why_unknown = self._run_ended(deployment, statuses)
            if ended:
                self._mark_abandoned(deployment, ended)
                continue
            return f"deployment {deployment_id} of {str(deployment.get('sha'))[:12]} is {state}{why_unknown}"
        return None

    def _run_ended(self, deployment: Mapping[str, Any], statuses: list[dict[str, Any]]) -> tuple[str | None, str]:
        """(how its workflow run ended, or None; why cdkit could not tell) for an active-looking deployment.

        A job killed mid-deploy (cancelled, runner lost) or a GitHub fault on the last
        status leaves a deployment `in_progress` forever; its workflow run, named by
        cdkit's payload or by the job's status links, says whether anyone still runs it.
        """
        payload = deployment.get("payload") if isinstance(deployment.get("payload"), Mapping) else {}
        run_ids = {str(payload["cdkit_run_id"])} if payload and payload.get("cdkit_run_id") else set()
        link = re.compile(rf"/{re.escape(self.repo)}/actions/runs/(\d+)(?:[/?#]|$)", re.IGNORECASE)
        for status in statuses:
            for key in ("log_url", "target_url"):
                found = link.search(str(status.get(key) or ""))
                if found:
                    run_ids.add(found.group(1))
        if not run_ids:
            return None, ""
        for run_id in sorted(run_ids):
            try:
                run = self._get(f"/actions/runs/{run_id}", f"read workflow run {run_id}", "actions: read")
            except GitHubRefused as exc:
                # Fail closed: it may still run. Say how to let cdkit tell next time.
                return None, (f"; cdkit could not read its workflow run {run_id} (HTTP {exc.status}): with "
                              "`actions: read` it tells a crashed deploy from a running one")
            if run.get("status") == "completed":
                return f"its workflow run {run_id} ended ({run.get('conclusion') or 'no conclusion'})", ""
        return None, ""

    def _mark_abandoned(self, deployment: Mapping[str, Any], how: str) -> None:
        """Record on GitHub that nobody will finish this deployment, so it stops looking like a deploy in progress."""
        deployment_id = int(deployment["id"])
        self.client.request("POST", f"/repos/{self.repo}/deployments/{deployment_id}/statuses",
                            body={"state": "error", "description": f"cdkit: abandoned, {how}"[:140]},
                            what=f"mark deployment {deployment_id} abandoned", scope="deployments: write",
                            idempotent=True)

    def preflight(self, environment: Environment) -> None:
        """`via: environment` needs a GitHub environment with required reviewers; GitHub would create it unprotected."""
        if environment.mode != "delivery" or environment.approval.via != "environment":
            return
        fix = (f"create it under Settings > Environments > {environment.name} and add required reviewers, "
               "then re-run")
        try:
            data = self._get(f"/environments/{quote(environment.name, safe='')}", f"read the environment {environment.name}",
                             "actions: read")
        except GitHubRefused as exc:
            if exc.status == 404:
                raise GateFailed(f"the GitHub environment {environment.name!r} does not exist, so nothing would "
                                 f"wait for an approval (GitHub creates a missing one unprotected): {fix}") from None
            raise
        rules = data.get("protection_rules") or []
        if not any(r.get("type") == "required_reviewers" and r.get("reviewers") for r in rules):
            raise GateFailed(f"the GitHub environment {environment.name!r} has no required reviewers, so nothing "
                             f"would wait for an approval: {fix}")

    # --- approvals -------------------------------------------------------------------------------

    def approval(self, environment: Environment, sha: str, people: Callable[[], ReleasePeople]) -> Decision:
        """The decision on `sha` for `environment`; `people` is called only when some approval could count."""
        if environment.approval.via == "environment":
            return self.environment_decision(environment, sha, people)
        pull = self.release_pull(environment.name)
        if pull is None:
            return Decision(False, (f"there is no open release pull request for {environment.name} "
                                    f"(open one: cdkit release open --env {environment.name})",), ())
        return self.review_decision(environment, sha, pull, people)

    # --- who wrote, brought in and pushed the released commits -------------------------------------

    def commit_people(self, base: str | None, head: str,
                      commits: tuple[CommitPeople, ...]) -> tuple[CommitPeople, ...]:
        """Each released commit with its linked accounts, the pull requests that brought it in, and its pushers.

        Accounts come from compare (every page: a range of any length) or, for commits
        compare did not list, from the commit itself. A range without a base (a first
        release of the whole history) is compared from its root commit, which is then the
        only one read alone. Every read that fails raises, so the approval fails closed.
        """
        key = (base, head, tuple(c.sha for c in commits))
        if key in self._people_read:  # a deploy checks twice (before the lock and right before deploying)
            return self._people_read[key]
        start = base or self._root_to_compare_from(head, commits)
        accounts = self._range_accounts(start, head) if start else {}
        with_pulls = []
        for c in commits:
            author, committer = accounts[c.sha] if c.sha in accounts else self._commit_accounts(c.sha)
            with_pulls.append(dataclasses.replace(c, author_account=author, committer_account=committer,
                                                  pulls=self._pulls_of(c.sha)))
        # A commit a merged pull request brought in was not pushed directly: only the others are looked up.
        pushers = self._direct_pushers([c for c in with_pulls if not any(p.merged for p in c.pulls)])
        out = [dataclasses.replace(c, pushers=tuple(pushers.get(c.sha, ()))) for c in with_pulls]
        self._people_read[key] = tuple(out)
        return self._people_read[key]

    def _root_to_compare_from(self, head: str, commits: tuple[CommitPeople, ...]) -> str | None:
        """A root of `head`'s history among `commits`, when comparing from it saves reads: compare lists
        100 commits a request, where each commit read alone is one. None for 2 commits or fewer."""
        if len(commits) <= 2:
            return None
        in_range = {c.sha for c in commits}
        return next((r for r in git.root_commits(head, cwd=self.root) if r in in_range and r != head), None)

    def _range_accounts(self, base: str, head: str) -> dict[str, tuple[Identity | None, Identity | None]]:
        commits = self._all(f"/compare/{base}...{head}", f"compare {base[:12]}...{head[:12]}", "contents: read",
                            item_key="commits")
        return {str(c.get("sha")): (_identity(c.get("author")), _identity(c.get("committer"))) for c in commits}

    def _commit_accounts(self, sha: str) -> tuple[Identity | None, Identity | None]:
        data = self._get(f"/commits/{sha}", f"read the commit {sha[:12]}", "contents: read")
        return _identity(data.get("author")), _identity(data.get("committer"))

    def _pulls_of(self, sha: str) -> tuple[PullRequest, ...]:
        """The pull requests GitHub associates with `sha`; cdkit's own release PRs bring nothing in."""
        pulls = self._all(f"/commits/{sha}/pulls", f"list the pull requests of {sha[:12]}", "pull-requests: read")
        return tuple(PullRequest(int(p["number"]), _identity(p.get("user")),
                                 merged=bool(p.get("merged_at")) and not self._is_any_release_pull(p))
                     for p in pulls)

    def _is_any_release_pull(self, pull: Mapping[str, Any]) -> bool:
        return str((pull.get("head") or {}).get("ref") or "").startswith(RELEASE_PREFIX)

    def _direct_pushers(self, commits: list[CommitPeople]) -> dict[str, list[Identity]]:
        """SHA -> who pushed it directly to the release branch, from cdkit's push records (trusted check runs).

        A record sits on the pushed head and covers `before..head`; it counts only when
        the trusted app created it in a push workflow run of this repository for that
        head (as for stage results, see `cdkit.evidence`).
        """
        in_range = {c.sha for c in commits}
        pushed: dict[str, list[Identity]] = {}
        for c in commits:
            for before, pusher in self._push_records(c.sha):
                covered = [c.sha]
                if git.commit_exists(before, cwd=self.root):
                    covered = [x.sha for x in git.commits_in_range(before, c.sha, cwd=self.root)]
                for sha in covered:
                    if sha in in_range:
                        pushed.setdefault(sha, []).append(pusher)
        return pushed

    def _push_records(self, sha: str) -> list[tuple[str, Identity]]:
        if sha in self._check_runs_read:  # already read whole for its stage verdicts: the records are in it
            runs = self._check_runs_read[sha]
        else:
            runs = self._all(f"/commits/{sha}/check-runs", f"read the push records of {sha[:12]}", "checks: read",
                             item_key="check_runs", check_name=PUSH_RECORD_NAME, filter="all")
        candidates = [r for r in runs if r.get("name") == PUSH_RECORD_NAME
                      and (r.get("app") or {}).get("id") == self.evidence.app_id
                      and parse_push_record(r.get("external_id")) is not None]
        if not candidates:
            return []
        workflow_runs = self._all("/actions/runs", f"read the workflow runs of {sha[:12]}", "actions: read",
                                  item_key="workflow_runs", head_sha=sha)
        push_runs = [w for w in workflow_runs if w.get("event") == "push"]
        suites = evidence.workflow_suites(push_runs, self.repo, sha)
        records = []
        for run in candidates:
            parsed = parse_push_record(run.get("external_id"))
            if parsed is not None and (run.get("check_suite") or {}).get("id") in suites:
                records.append(parsed)
        return records

    def _release_pulls_query(self, environment: str) -> dict[str, str]:
        return {"state": "open", "head": f"{self.repo.split('/')[0]}:{RELEASE_PREFIX}{environment}"}

    def release_pull(self, environment: str) -> dict[str, Any] | None:
        pulls = self._all("/pulls", "list the release pull requests", "pull-requests: read",
                          **self._release_pulls_query(environment))
        mine = [p for p in pulls if self.is_release_pull(p, environment)]
        return mine[0] if mine else None

    def is_release_pull(self, pull: Mapping[str, Any], environment: str) -> bool:
        """Whether `pull` is E's release PR: `cdkit/release/E -> cdkit/deployed/E`, both in this repository.

        A look-alike (a fork's branch of that name, or another base) shows other
        commits than the ones the release adds, so its reviews release nothing.
        """
        head, base = pull.get("head") or {}, pull.get("base") or {}
        if head.get("ref") != f"{RELEASE_PREFIX}{environment}" or base.get("ref") != f"{DEPLOYED_PREFIX}{environment}":
            return False
        return _same_repo(head, base, self.repo)

    def review_decision(self, environment: Environment, sha: str, pull: Mapping[str, Any],
                        people: Callable[[], ReleasePeople]) -> Decision:
        number = int(pull["number"])
        reviews = tuple(
            Review(reviewer=_identity(r.get("user")) or Identity(), state=str(r.get("state") or ""),
                   commit_id=str(r.get("commit_id") or ""), submitted_at=str(r.get("submitted_at") or ""),
                   id=int(r.get("id") or 0), comment=str(r.get("body") or ""), via=f"review on #{number}")
            for r in self._all(f"/pulls/{number}/reviews", f"read the reviews of #{number}", "pull-requests: read")
        )
        permissions = {permission_key(r.reviewer): self.permission(r.reviewer) for r in reviews
                       if r.normalized_state == "APPROVED" and r.reviewer.login}
        actor, triggering = self._review_run_people()
        who_wrote = people_if_approved(reviews, people, environment.approval.required)
        return evaluate(Facts(
            sha=sha, required=environment.approval.required, reviews=reviews, reviewers=environment.approval.reviewers,
            permissions=permissions, pr_author=_identity(pull.get("user")), actor=actor, triggering_actor=triggering,
            now=self.clock(), **_people_facts(environment, who_wrote),
        ))

    def _review_run_people(self) -> tuple[Identity | None, Identity | None]:
        """Who started this run, for `Facts.actor` / `Facts.triggering_actor` of a review decision.

        The actor of a `pull_request_review` run is the reviewer: excluding them would
        make the approval that triggered the run never count, so they are judged by
        the other rules (PR author, commit people, permission, reviewers). Someone else
        who re-ran that workflow (triggering actor) still cannot approve. On any other
        event (push, dispatch, re-run) the actor started the release and cannot approve it.
        """
        actor, triggering = _login_identity(self.actor), _login_identity(self.triggering_actor)
        if self.event_name != REVIEW_EVENT:
            return actor, triggering
        if triggering is not None and actor is not None and triggering.same_as(actor):
            triggering = None
        return None, triggering

    def permission(self, person: Identity) -> str:
        """The reviewer's permission now (role_name knows maintain/triage; `permission` is the legacy field)."""
        try:
            data = self._get(f"/collaborators/{quote(person.login or '', safe='')}/permission", f"read {person.login}'s permission",
                             "metadata: read")
        except GitHubRefused as exc:
            if exc.status == 404:
                return "none"  # not a collaborator
            raise
        return str(data.get("role_name") or data.get("permission") or "none")

    def environment_decision(self, environment: Environment, sha: str,
                             people: Callable[[], ReleasePeople]) -> Decision:
        """Who approved this run's deploy job for the environment (GitHub's required reviewers)."""
        if not self.run_id:
            return Decision(False, ("environment approvals belong to an Actions run, and GITHUB_RUN_ID is not set "
                                    "(run this in the cdkit Action's deploy job)",), ())
        entries = self._get(f"/actions/runs/{self.run_id}/approvals", f"read the approvals of run {self.run_id}",
                            "actions: read")
        reviews = tuple(
            Review(reviewer=_identity(e.get("user")) or Identity(), state=str(e.get("state") or ""),
                   commit_id=self.run_sha or "", comment=str(e.get("comment") or ""), id=n,
                   via=f"environment {environment.name}")
            for n, e in enumerate(entries or [])
            if any(env.get("name") == environment.name for env in e.get("environments") or [])
        )
        if not reviews:
            return Decision(False, (f"nobody approved this run for the environment {environment.name} (an admin "
                                    "bypass, or the job does not declare `environment:`); cdkit does not count that "
                                    "as an approval",), ())
        who_wrote = people_if_approved(reviews, people, environment.approval.required)
        return evaluate(Facts(sha=sha, required=environment.approval.required, reviews=reviews,
                              reviewers=environment.approval.reviewers, **_people_facts(environment, who_wrote),
                              actor=_login_identity(self.actor),
                              triggering_actor=_login_identity(self.triggering_actor)))

    # --- writes ----------------------------------------------------------------------------------

    def start_deployment(self, environment: Environment, sha: str, *, payload: dict[str, Any],
                         rollback: bool) -> int | None:
        if self.own_deployment_id is not None:
            deployment_id = self.own_deployment_id
        else:
            token = uuid.uuid4().hex
            body = {"ref": sha, "environment": environment.name, "auto_merge": False, "required_contexts": [],
                    "payload": {**payload, evidence.DEPLOYMENT_MARKER: token,
                                **({"cdkit_run_id": self.run_id} if self.run_id else {})},
                    "transient_environment": False,
                    "description": ("rollback" if rollback else "deploy") + f" {sha[:12]} by cdkit"}

            def recover() -> tuple[dict[str, Any], Any] | None:
                for d in self._deployments(environment.name, sha):
                    if (d.get("payload") or {}).get(evidence.DEPLOYMENT_MARKER) == token:
                        return {}, d
                return None

            _, data = self.client.request("POST", f"/repos/{self.repo}/deployments", body=body,
                                          what=f"create a deployment of {sha[:12]} to {environment.name}",
                                          scope="deployments: write", recover=recover)
            deployment_id = int(data["id"])
        self._status(deployment_id, environment, "in_progress")
        self._refuse_if_started_second(environment, deployment_id)
        return deployment_id

    def _refuse_if_started_second(self, environment: Environment, deployment_id: int) -> None:
        """Close the race between checking for another deploy and creating ours.

        The ledger lock holds on one machine only, and `deploy_in_progress` reads
        before we create: two machines can both get here. Deployment ids grow, so of
        two active deployments the lower id started first and goes on; the other fails.
        """
        first = self._active_deployment(environment.name, older_than=deployment_id)
        if first is None:
            return
        self._status(deployment_id, environment, "failure", description=STARTED_FIRST)
        raise GateFailed(f"another deploy to {environment.name} started first on GitHub ({first}); deployment "
                         f"{deployment_id} was set to failure and nothing was deployed: wait for it to finish, "
                         "then deploy again")

    def finish_deployment(self, github_id: int, environment: Environment, state: str, *,
                          log_url: str | None, description: str | None = None) -> None:
        self._status(github_id, environment, state, log_url=log_url, description=description)

    def _status(self, deployment_id: int, environment: Environment, state: str, *,
                log_url: str | None = None, description: str | None = None) -> None:
        body: dict[str, Any] = {"state": state, "description": description or f"cdkit: {state.replace('_', ' ')}"}
        if log_url:
            body["log_url"] = log_url
        if environment.url:
            body["environment_url"] = environment.url
        self.client.request("POST", f"/repos/{self.repo}/deployments/{deployment_id}/statuses", body=body,
                            what=f"set deployment {deployment_id} to {state}", scope="deployments: write",
                            idempotent=True)  # a repeated status is harmless: the latest one wins

    # --- release pull requests -------------------------------------------------------------------

    def set_branch(self, branch: str, sha: str, *, likely_missing: bool = False) -> None:
        """Point `branch` at `sha` (created if missing; moved with force: these branches are cdkit's own).

        Tried as a move first, unless `likely_missing` (a first release): then as a creation first,
        so the common case costs one request either way; the other follows when GitHub refuses it."""
        # A creation of an existing branch is refused with 422; a move of a missing one with 404 or 422.
        first, then, wrong_guess = (self._create_branch, self._move_branch, (422,)) if likely_missing else \
            (self._move_branch, self._create_branch, (404, 422))
        try:
            first(branch, sha)
        except GitHubRefused as exc:
            if exc.status not in wrong_guess:
                raise
            then(branch, sha)

    def _move_branch(self, branch: str, sha: str) -> None:
        # The ref is one path parameter: its slashes travel percent-encoded.
        self.client.request("PATCH", f"/repos/{self.repo}/git/refs/{quote('heads/' + branch, safe='')}",
                            body={"sha": sha, "force": True}, what=f"move the branch {branch}",
                            scope="contents: write", idempotent=True)

    def _create_branch(self, branch: str, sha: str) -> None:
        self.client.request("POST", f"/repos/{self.repo}/git/refs", body={"ref": f"refs/heads/{branch}", "sha": sha},
                            what=f"create the branch {branch}", scope="contents: write", idempotent=True)

    def never_released(self, environment: str) -> bool:
        """Whether every cdkit deployment of `environment` is its adoption: no release pull request ever deployed
        there, so its release branches most likely do not exist yet."""
        return all(is_adoption(d) for d in self._cdkit_deployments(environment))

    def open_release_pull(self, environment: str, *, title: str, body: str,
                          listed: tuple[dict[str, Any] | None] | None = None) -> tuple[int, bool]:
        """Create or update the environment's release pull request; (number, created).

        `listed`: (the open one, or None) as the caller already listed it (moving its branches opens and
        closes none)."""
        existing = listed[0] if listed is not None else self.release_pull(environment)
        if existing is not None:
            number = int(existing["number"])
            self.client.request("PATCH", f"/repos/{self.repo}/pulls/{number}", body={"title": title, "body": body},
                                what=f"update the release pull request #{number}", scope="pull-requests: write",
                                idempotent=True)
            return number, False
        recovered: list[dict[str, Any]] = []

        def recover() -> tuple[dict[str, str], dict[str, Any]] | None:
            found = self.release_pull(environment)
            recovered.extend([found] if found else [])
            return ({}, found) if found else None

        _, data = self.client.request(
            "POST", f"/repos/{self.repo}/pulls",
            body={"title": title, "body": body, "head": f"{RELEASE_PREFIX}{environment}",
                  "base": f"{DEPLOYED_PREFIX}{environment}"},
            what=f"open the release pull request for {environment}", scope="pull-requests: write",
            recover=recover)
        # There was none, and this is it: the gate that follows finds it without listing them again.
        self.client.remember_list(f"/repos/{self.repo}/pulls", self._release_pulls_query(environment), [data])
        if not recovered:
            # Nobody has reviewed a pull request opened this instant. One reviewed since fires a
            # `pull_request_review` event, whose job reads its reviews, so not reading them here
            # can only make this job wait, never deploy.
            self.client.remember_list(f"/repos/{self.repo}/pulls/{int(data['number'])}/reviews", {}, [])
        return int(data["number"]), True


# --- building it -------------------------------------------------------------------------------


def remote_from_environ(pipeline: Pipeline, environ: Mapping[str, str], *, root: str = ".",
                        own_deployment_id: int | None = None) -> GitHubRemote:
    client = GitHubClient.from_environment(environ)
    repo = resolve_repository(environ, cwd=root)
    if client is None or repo is None:
        raise UsageError("GitHub is not configured: set GITHUB_TOKEN and GITHUB_REPOSITORY (owner/name)")
    return GitHubRemote(client=client, repo=repo, root=root, actor=environ.get("GITHUB_ACTOR") or None,
                        triggering_actor=environ.get("GITHUB_TRIGGERING_ACTOR") or None,
                        run_id=environ.get("GITHUB_RUN_ID") or None, run_sha=environ.get("GITHUB_SHA") or None,
                        own_deployment_id=own_deployment_id, event_name=environ.get("GITHUB_EVENT_NAME") or None,
                        evidence=pipeline.evidence, report=pipeline.report)


def action_context(ws: Workspace, pipeline: Pipeline, ledger: Ledger, *, environ: Mapping[str, str],
                   say: Callable[[str], None] = lambda _t: None,
                   on_output: Callable[[bytes], None] | None = None,
                   github_deployment_id: int | None = None) -> ReleaseContext:
    """The release context for `cdkit action`: the ledger plus GitHub (checks, deployments, approvals)."""
    remote = remote_from_environ(pipeline, environ, root=str(ws.root), own_deployment_id=github_deployment_id)
    return ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger,
                          environ=dict(environ), remote=remote, say=say, on_output=on_output,
                          github_deployment_id=github_deployment_id, log_url=actions_run_url(environ))


def _github(ctx: ReleaseContext) -> GitHubRemote:
    if not isinstance(ctx.remote, GitHubRemote):
        raise UsageError("this needs GitHub: set GITHUB_TOKEN and GITHUB_REPOSITORY (owner/name)")
    return ctx.remote


# --- event handlers for the Action ---------------------------------------------------------------


def on_review(ctx: ReleaseContext, payload: Mapping[str, Any]) -> list[DeployResult]:
    """`pull_request_review`: if the reviewed PR is an environment's release PR, deploy its head once approved.

    The payload only says which PR; the decision reads reviews, permissions and
    commits from the REST API now. A review of any other pull request releases nothing.
    """
    pull = payload.get("pull_request") or {}
    sha = str((pull.get("head") or {}).get("sha") or "")
    remote = _github(ctx)
    results = []
    for listed in ctx.pipeline.environments:
        try:  # approved through reviews or not is the governing pipeline's to say, not the work tree's
            env = governed(ctx, listed.name).env
        except GateFailed:
            env = listed  # the deploy below refuses it, with the reason
        if env.mode == "delivery" and env.approval.via == "review" and remote.is_release_pull(pull, env.name):
            result = deploy_if_approved(ctx, env.name, sha)
            _merge_if_configured(ctx, env, sha, result.status)
            results.append(result)
    return results


def _merge_if_configured(ctx: ReleaseContext, env: Environment, sha: str, status: str) -> None:
    """`approval.merge: true`: once `sha` is deployed, its release pull request is merged.

    Moving `cdkit/deployed/E` to the deployed commit is a fast-forward of the PR's base to
    its head, which GitHub records as the pull request being merged: no merge commit, and
    the branch keeps meaning "what E runs".
    """
    if status not in GOOD or not env.approval.merge or env.approval.via != "review":
        return
    _github(ctx).set_branch(f"{DEPLOYED_PREFIX}{env.name}", sha)
    ctx.say(f"cdkit: merged the release pull request of {env.name} ({DEPLOYED_PREFIX}{env.name} is now {sha[:12]})")


def on_deployment(ctx: ReleaseContext, payload: Mapping[str, Any]) -> DeployResult:
    """`deployment`: deploy the deployment's SHA, updating that GitHub deployment's statuses.

    An older SHA than the environment runs (e.g. a re-run of an old deploy) is a
    rollback and refused unless the deployment's payload says `"rollback": true`.
    """
    deployment = payload.get("deployment") or {}
    extra = deployment.get("payload")
    rollback = isinstance(extra, Mapping) and extra.get("rollback") is True
    ctx = dataclasses.replace(ctx, github_deployment_id=int(deployment["id"]))
    if isinstance(ctx.remote, GitHubRemote):
        ctx = dataclasses.replace(ctx, remote=dataclasses.replace(ctx.remote, own_deployment_id=int(deployment["id"])))
    try:
        return deploy(ctx, str(deployment["environment"]), str(deployment["sha"]), rollback=rollback)
    except GateFailed as exc:
        remote = _github(ctx)
        env = ctx.pipeline.environment(str(deployment["environment"]))
        if env is not None:
            remote.finish_deployment(int(deployment["id"]), env, "failure", log_url=ctx.log_url)
        return DeployResult(str(deployment["environment"]), str(deployment["sha"]), "refused", reasons=(str(exc),))


# --- cdkit release open / check ----------------------------------------------------------------


def _md(text: str) -> str:
    """Untrusted text (a commit subject) as inert Markdown: no mentions, links, HTML or formatting."""
    out = []
    for ch in text.replace("\r", " ").replace("\n", " "):
        out.append("\\" + ch if ch in "\\`*_{}[]()<>#+-.!|~@" else ch)
    return "".join(out)[:200]


def release_body(ctx: ReleaseContext, env: Environment, sha: str, base: str | None) -> str:
    verdicts = combined_verdicts(ctx, sha, [stage.name for stage in ctx.pipeline.stages])
    commits = git.commits_in_range(base, sha, cwd=ctx.root, limit=250)
    since = f"since `{base[:12]}` (what {env.name} runs now)" if base else \
        f"(first deployment: {env.name} was adopted as running nothing)"
    lines = [f"Release of `{sha}` to **{env.name}**.", "",
             f"Approve this pull request **at this commit** to deploy it ({env.approval.required} approval(s) "
             "needed; authors and committers of these commits cannot approve).", "",
             f"### Commits {since}", ""]
    lines += [f"- `{c.sha[:12]}` {_md(c.subject)}" for c in commits] or ["- (none)"]
    lines += ["", "### Stages", "", "| stage | result |", "|---|---|"]
    for stage in ctx.pipeline.stages:
        v = verdicts.get(stage.name)
        lines.append(f"| `{stage.name}` | {v.status if v else 'no result'} |")
    return "\n".join(lines) + "\n"


def release_open(ctx: ReleaseContext, environment: str, sha: str) -> dict[str, Any]:
    rules = governed(ctx, environment)  # how the environment is approved is its governing pipeline's to say
    ctx, env = rules.ctx, rules.env
    if env.mode != "delivery" or env.approval.via != "review":
        raise UsageError(f"{env.name} is not approved through pull-request reviews (approval.via: review); "
                         "a release pull request is only for those")
    remote = _github(ctx)
    sha = git.resolve_commit(sha, cwd=ctx.root)
    base = release_base(ctx, env.name, sha)  # fails closed for an environment never deployed nor adopted
    # Adopted as running nothing: the pull request shows everything after the root commit.
    # Listed before its branches move (which opens or closes no pull request): with none open and nothing ever
    # released there, the branches are new, and are created rather than tried as moves first.
    existing = remote.release_pull(env.name)
    first = existing is None and remote.never_released(env.name)
    remote.set_branch(f"{DEPLOYED_PREFIX}{env.name}", base or git.commits_in_range(None, sha, cwd=ctx.root)[-1].sha,
                      likely_missing=first)
    remote.set_branch(f"{RELEASE_PREFIX}{env.name}", sha, likely_missing=first)
    number, created = remote.open_release_pull(env.name, title=f"Release {sha[:12]} to {env.name}",
                                               body=release_body(ctx, env, sha, base), listed=(existing,))
    return {"environment": env.name, "sha": sha, "pull_request": number, "created": created}


def release_check(ctx: ReleaseContext, environment: str, *, deploy_now: bool = True) -> dict[str, Any]:
    """Evaluate the release PR's approval now; deploy its head when everything holds and `deploy_now`.

    The governing pipeline (what the environment runs now) says how it is approved, not the work tree's.
    """
    rules = governed(ctx, environment)
    ctx, env = rules.ctx, rules.env
    remote = _github(ctx)
    pull = remote.release_pull(env.name) if env.approval.via == "review" else None
    if env.approval.via == "review" and pull is None:
        raise GateFailed(f"there is no open release pull request for {env.name} "
                         f"(open one: cdkit release open --env {env.name})")
    sha = str(pull["head"]["sha"]) if pull else git.resolve_commit("HEAD", cwd=ctx.root)
    verdict = check(ctx, env, sha)
    data: dict[str, Any] = {"environment": env.name, "sha": sha, "deployable": verdict.ok,
                            "problems": list(verdict.problems),
                            "approval": verdict.decision.as_data() if verdict.decision else None,
                            "governed_by": verdict.governed_by, "pending": verdict.pending}
    if deploy_now and verdict.ok and verdict.current != sha:
        result = deploy_if_approved(ctx, env.name, sha)
        _merge_if_configured(ctx, env, sha, result.status)
        data["deployment"] = result.as_data()
    data["released"] = data.get("deployment", {}).get("status") in GOOD
    return data
