"""What the release gate believes: which of GitHub's records for a commit count, and why the others do not.

Anyone with write access can set a commit status named `cdkit/test`, any GitHub App
installed on the repository can create a check run of that name, the pre-push hook's
statuses are a laptop's claim (delivered whenever `cdkit sync` runs, possibly after CI
failed), and a writer can create a deployment by hand. So the gate counts only what CI
produced for the SHA:

- check runs `cdkit/<stage>` of the expected GitHub App (`evidence.app_id`, GitHub
  Actions by default) whose check suite belongs to a workflow run of this repository
  for this SHA;
- commit statuses `cdkit/<stage>`, only where the pipeline reports statuses in CI
  (`report: auto` or `statuses`), and only those set by the expected accounts
  (`evidence.creators`, the Actions token's `github-actions[bot]` by default);
- deployments carrying cdkit's payload marker, created by those accounts.

Everything else is kept as a `not counted` verdict with its reason, so a refusal says
what was ignored instead of "no result". These are pure functions on the REST API's
JSON; `cdkit.release_github` fetches every page and calls them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cdkit.config import Evidence
from cdkit.release import NOT_COUNTED, StageVerdict

STAGE_PREFIX = "cdkit/"
DEPLOYMENT_MARKER = "cdkit_token"  # in the payload of every deployment cdkit creates
STATUS_REPORTS = frozenset({"auto", "statuses"})  # `report:` values under which CI may post statuses
PRE_PUSH_SUFFIX = "(pre-push)"  # how the hook's statuses describe themselves (shown, never counted)
_CHECK_STATUS = {"success": "passed", "failure": "failed", "timed_out": "timed_out", "cancelled": "cancelled",
                 "skipped": "skipped"}
_STATUS_STATE = {"success": "passed", "failure": "failed", "error": "failed"}


def _same(a: object, b: object) -> bool:
    """GitHub logins and repository names compare without case."""
    return isinstance(a, str) and isinstance(b, str) and a.casefold() == b.casefold()


def _obj(value: Any) -> Mapping[str, Any]:
    """A JSON object field, or an empty one when it is missing, null or of another type."""
    return value if isinstance(value, Mapping) else {}


def _full_name(repository: Any) -> object:
    return _obj(repository).get("full_name")


def workflow_suites(workflow_runs: Iterable[Mapping[str, Any]], repo: str, sha: str) -> frozenset[int]:
    """The check suites of this repository's own workflow runs for `sha` (not a fork's, not another commit's)."""
    suites = set()
    for run in workflow_runs:
        if run.get("head_sha") != sha or not isinstance(run.get("check_suite_id"), int):
            continue
        if _same(_full_name(run.get("repository")), repo) and _same(_full_name(run.get("head_repository")), repo):
            suites.add(int(run["check_suite_id"]))
    return frozenset(suites)


def check_run_verdict(run: Mapping[str, Any], evidence: Evidence, suites: frozenset[int]) -> StageVerdict:
    """One `cdkit/<stage>` check run as a verdict; `not counted` unless CI's own app created it in CI's run."""
    stage = str(run.get("name") or "").removeprefix(STAGE_PREFIX)
    app, suite = _obj(run.get("app")), _obj(run.get("check_suite"))
    if app.get("id") != evidence.app_id:
        who = f"the app {str(app.get('slug') or '?')[:40]!r} (id {app.get('id')})"
        return StageVerdict(stage, NOT_COUNTED, f"check run {run.get('id')} was created by {who}, not by the app "
                            f"the gate trusts (evidence.app_id: {evidence.app_id})", "GitHub check run")
    if suite.get("id") not in suites:
        return StageVerdict(stage, NOT_COUNTED, f"check run {run.get('id')} is not part of a workflow run of this "
                            "repository for this commit", "GitHub check run")
    status = _CHECK_STATUS.get(str(run.get("conclusion") or ""), str(run.get("status") or "pending"))
    title = str(_obj(run.get("output")).get("title") or "")
    return StageVerdict(stage, status, title.removeprefix("skipped: "), "GitHub check run")


def status_verdict(status: Mapping[str, Any], evidence: Evidence, *, report: str) -> StageVerdict:
    """One `cdkit/<stage>` commit status as a verdict; `not counted` unless CI reports statuses and set it."""
    stage = str(status.get("context") or "").removeprefix(STAGE_PREFIX)
    description = str(status.get("description") or "")
    login = _obj(status.get("creator")).get("login")
    if description.endswith(PRE_PUSH_SUFFIX):
        return StageVerdict(stage, NOT_COUNTED, f"the commit status set by {str(login)[:40]} is the pre-push hook's "
                            "result, which is shown but never counts for a release", "GitHub status")
    if report not in STATUS_REPORTS:
        return StageVerdict(stage, NOT_COUNTED, f"a commit status (set by {str(login)[:40]}) does not count: the "
                            f"pipeline reports check runs in CI (report: {report})", "GitHub status")
    if not any(_same(login, trusted) for trusted in evidence.creators):
        return StageVerdict(stage, NOT_COUNTED, f"the commit status was set by {str(login)[:40]}, not by "
                            f"{', '.join(evidence.creators)} (evidence.creators)", "GitHub status")
    state = str(status.get("state") or "")
    if state == "success" and description.startswith("skipped: "):
        return StageVerdict(stage, "skipped", description.removeprefix("skipped: "), "GitHub status")
    return StageVerdict(stage, _STATUS_STATE.get(state, state), description, "GitHub status")


def stage_verdicts(check_runs: Iterable[Mapping[str, Any]], statuses: Iterable[Mapping[str, Any]], *,
                   evidence: Evidence, report: str, suites: frozenset[int]) -> dict[str, StageVerdict]:
    """Each stage's verdict: the newest counted check run, else the newest counted status, else why none counts.

    `check_runs` in any order (the newest, by id, wins); `statuses` newest first, as GitHub lists them.
    """
    counted: dict[str, StageVerdict] = {}
    ignored: dict[str, StageVerdict] = {}
    for run in sorted(check_runs, key=lambda r: int(r.get("id") or 0)):
        if str(run.get("name") or "").startswith(STAGE_PREFIX):
            verdict = check_run_verdict(run, evidence, suites)
            (ignored if verdict.status == NOT_COUNTED else counted)[verdict.stage] = verdict
    for status in statuses:
        if not str(status.get("context") or "").startswith(STAGE_PREFIX):
            continue
        verdict = status_verdict(status, evidence, report=report)
        target = ignored if verdict.status == NOT_COUNTED else counted
        target.setdefault(verdict.stage, verdict)  # newest first: the first one of a context is its latest
    return {**ignored, **counted}


def needs_workflow_runs(check_runs: Iterable[Mapping[str, Any]], evidence: Evidence) -> bool:
    """Whether any check run could count, so the workflow runs are worth a request."""
    return any(str(r.get("name") or "").startswith(STAGE_PREFIX) and _obj(r.get("app")).get("id") == evidence.app_id
               for r in check_runs)


def is_cdkit_deployment(deployment: Mapping[str, Any], evidence: Evidence) -> bool:
    """Whether cdkit created this deployment (its payload marker) as one of the trusted accounts.

    Only these say what an environment runs: a writer's hand-made deployment marked
    `success` must not skip staging or shrink the range of commits a release adds.
    """
    payload = deployment.get("payload")
    if not isinstance(payload, Mapping) or not isinstance(payload.get(DEPLOYMENT_MARKER), str):
        return False
    login = _obj(deployment.get("creator")).get("login")
    return any(_same(login, trusted) for trusted in evidence.creators)
