"""The click command line: each command parses its options and calls one function in `commands/`.

Command modules are imported inside each command so that `cdkit --version` and
`cdkit validate` load neither PyGithub nor gitpython.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from cdkit import __version__
from cdkit.cli_help import CdkitGroup, complete_environment, complete_stage
from cdkit.errors import EXIT_CODES_HELP, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, CdkitError, ConfigError

CONFIG_OPTION = click.option(
    "--config", "config", metavar="PATH", default=None,
    help="Pipeline file (default: .cdkit.yml at the repository root).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
TRIGGER_CHOICE = click.Choice(["pre-push", "ci"])
def _secret_token(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from cdkit.secrets import register

    return register(value)  # redacted from every message from here on, crash reports included


TOKEN_OPTION = click.option(
    "--token", metavar="TOKEN", default=None, callback=_secret_token,
    help="GitHub token (default: GITHUB_TOKEN, then GH_TOKEN; prefer those: a command line is visible in `ps`).",
)
MAX_WAIT_OPTION = click.option(
    "--max-wait", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="SECONDS",
    help="Longest total wait for GitHub (rate limits, retries); longer waits leave reports in the outbox.",
)


@click.group(
    cls=CdkitGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "--version", prog_name="cdkit", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """cdkit: one pipeline (.cdkit.yml) for the pre-push hook, CI checks and releases.

    Continuous deployment releases every commit that passes all stages;
    continuous delivery also waits for an explicit approval of that exact commit.
    """
    if ctx.invoked_subcommand != "hook":  # `hook recover` is the remedy; `hook run` refuses by itself
        from cdkit.setaside import pending_warning

        warning = pending_warning(os.getcwd())
        if warning:
            click.echo(f"cdkit: warning: {warning}", err=True)


@cli.command()
@CONFIG_OPTION
def validate(config: str | None) -> int:
    """Check .cdkit.yml against the schema; report every problem as FILE:LINE:COL."""
    from cdkit.commands.validate import validate as command

    return command(config=config)


@cli.command()
@CONFIG_OPTION
@click.option("--base", metavar="REV", help="Compare with this commit (default: no base, every file counts).")
@click.option("--head", metavar="REV", help="The commit to plan for (default: HEAD).")
@click.option("--trigger", type=TRIGGER_CHOICE, default="ci", show_default=True, help="Which `on:` stages apply.")
@JSON_OPTION
def plan(config: str | None, base: str | None, head: str | None, trigger: str, as_json: bool) -> int:
    """Show which stages would run, and why each other stage would not."""
    from cdkit.commands.plan import plan as command

    return command(config=config, base=base, head=head, trigger=trigger, as_json=as_json)


@cli.command()
@CONFIG_OPTION
@click.option("--base", metavar="REV", help="Compare with this commit for `paths` (default: every file counts).")
@click.option("--head", metavar="REV",
              help="Run on this commit, checked out in the work tree with your uncommitted work set aside and put "
                   "back afterwards (default: the work tree as it is).")
@click.argument("stage_names", metavar="[STAGE]...", nargs=-1)
@click.option("--stage", "stages", metavar="NAME", multiple=True,
              help="Run only this stage (repeatable; the same as naming it as an argument).")
@click.option("--with-needs", is_flag=True, help="With stages named: also run the stages they need, transitively.")
@click.option("--trigger", type=TRIGGER_CHOICE, default="ci", show_default=True, help="Which `on:` stages apply.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Parallel stages (default: CPU count).")
@click.option("--report", type=click.Choice(["auto", "checks", "statuses", "none"]), default=None,
              help="How stages reach GitHub (default: `report:` in .cdkit.yml, else auto: check runs when the "
                   "token can create them, else commit statuses).")
@click.option("--deploy", is_flag=True,
              help="After a complete, passing run of the clean release branch, deploy it to the deployment-mode "
                   "environments in order (without it, `cdkit run` never deploys).")
@TOKEN_OPTION
@MAX_WAIT_OPTION
@JSON_OPTION
def run(config: str | None, base: str | None, head: str | None, stage_names: tuple[str, ...],
        stages: tuple[str, ...], with_needs: bool, trigger: str, jobs: int | None, report: str | None,
        deploy: bool, token: str | None, max_wait: float, as_json: bool) -> int:
    """Run the pipeline's stages in dependency order and record the results.

    Name stages to run only those (`cdkit run lint`); --with-needs adds what they need.
    Set CDKIT_SKIP=a,b to skip stages (each skip is recorded). With a GitHub token
    (GITHUB_TOKEN or GH_TOKEN) and repository (GITHUB_REPOSITORY or the origin URL),
    every stage is also reported on the commit as cdkit/<stage>. Nothing is deployed
    unless --deploy is given.
    """
    from cdkit.commands.run import run as command

    if with_needs and not (stage_names or stages):
        raise click.UsageError("--with-needs goes with named stages: cdkit run STAGE --with-needs")
    return command(config=config, base=base, head=head, stages=stage_names + stages, trigger=trigger, jobs=jobs,
                   as_json=as_json, report=report, token=token, max_wait=max_wait, with_needs=with_needs,
                   deploy=deploy)


@cli.command()
@CONFIG_OPTION
@click.argument("rev", default="HEAD")
@JSON_OPTION
def status(config: str | None, rev: str, as_json: bool) -> int:
    """Show a commit's whole chain: stage results, approvals and deployments per environment (default: HEAD)."""
    from cdkit.commands.status import status as command

    return command(rev=rev, config=config, as_json=as_json)


@cli.command()
@CONFIG_OPTION
@click.option("-n", "limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs.")
@JSON_OPTION
def log(config: str | None, limit: int, as_json: bool) -> int:
    """List recent runs recorded in the ledger."""
    from cdkit.commands.status import log as command

    return command(limit=limit, config=config, as_json=as_json)


@cli.command()
@CONFIG_OPTION
@JSON_OPTION
def gc(config: str | None, as_json: bool) -> int:
    """Prune run logs now to `logs.keep` and `logs.max_size` (runs and results stay in the ledger)."""
    from cdkit.commands.gc import gc as command

    return command(config=config, as_json=as_json)


@cli.command()
@CONFIG_OPTION
@TOKEN_OPTION
@MAX_WAIT_OPTION
@JSON_OPTION
def sync(config: str | None, token: str | None, max_wait: float, as_json: bool) -> int:
    """Deliver the reports waiting in the outbox to GitHub, each exactly once.

    Reports wait there when GitHub was unreachable or rate limited during a run, or when
    the pre-push hook ran before GitHub had the commits. Exit 0 when everything was delivered.
    """
    from cdkit.commands.sync import sync as command

    return command(config=config, token=token, max_wait=max_wait, as_json=as_json)


@cli.command()
@CONFIG_OPTION
@JSON_OPTION
def doctor(config: str | None, as_json: bool) -> int:
    """Check the pipeline, hook, tools, remote, token, ledger and outbox; say how to fix each problem.

    Exit 0 when all is well, 1 when something needs fixing. Changes nothing.

    Example: cdkit doctor --json
    """
    from cdkit.commands.doctor import doctor as command

    return command(config=config, as_json=as_json)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the throwaway repository and print where it is.")
def demo(keep: bool) -> int:
    """Show cdkit end to end in a throwaway repository (no GitHub, no token, nothing here touched)."""
    from cdkit.commands.demo import demo as command

    return command(keep=keep)


# --- the pre-push hook ------------------------------------------------------------------------


@cli.group()
def hook() -> None:
    """Install, inspect or run the pre-push hook that runs the `on: pre-push` stages on each push."""


@hook.command("install")
@click.option("--force", is_flag=True,
              help="Install even into a core.hooksPath inside the repository, and replace an existing "
                   "pre-push.legacy with the current foreign hook.")
def hook_install(force: bool) -> int:
    """Write the pre-push hook (into core.hooksPath when set); keep and chain any existing hook.

    Installing twice changes nothing; installing again repairs a hook that is not
    executable or has CRLF line endings, and records the current interpreter.
    """
    from cdkit.commands.hook import install as command

    return command(force=force)


@hook.command("uninstall")
def hook_uninstall() -> int:
    """Remove cdkit's pre-push hook and restore the hook it replaced, if any."""
    from cdkit.commands.hook import uninstall as command

    return command()


@hook.command("status")
def hook_status() -> int:
    """Show where the hook is, what it runs and what needs repair (exit 1 if it cannot run)."""
    from cdkit.commands.hook import status as command

    return command()


@hook.command("recover")
def hook_recover() -> int:
    """Put back the work a killed cdkit run set aside (uncommitted changes, index, branch).

    To judge a pushed commit in place, cdkit records your work in the git dir before it
    touches anything; a SIGKILL or power loss in the middle leaves that record, and this
    command restores exactly what it holds. Exit 0 when the work tree is yours again.
    """
    from cdkit.commands.hook import recover as command

    return command()


@hook.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("hook_name", metavar="pre-push", type=click.Choice(["pre-push"]))
@click.argument("remote", required=False)
@click.argument("url", required=False)
def hook_run(hook_name: str, remote: str | None, url: str | None) -> int:
    """Judge a push as git's pre-push hook does: ref lines on stdin, REMOTE and URL as arguments.

    Under pre-commit (a `pre-push` stage hook) REMOTE and URL may be left out: the
    push is read from PRE_COMMIT_REMOTE_NAME, PRE_COMMIT_FROM_REF and PRE_COMMIT_TO_REF.
    Exit 1 blocks the push. Skip stages with CDKIT_SKIP=a,b; skip the hook with
    CDKIT=0 or `git push --no-verify`.
    """
    from cdkit.commands.hook import run_pre_push as command

    return command(remote=remote, url=url)



# --- releases (delivery and deployment) -------------------------------------------------------


@cli.command()
@CONFIG_OPTION
@click.argument("sha")
@click.option("--env", "environment", metavar="NAME", required=True, help="The environment to approve it for.")
@click.option("--comment", default="", metavar="TEXT", help="Why, recorded with the approval.")
@click.option("--break-glass", "break_glass", is_flag=True,
              help="Approve deploying SHA inside a window of the environment (its break_glass: policy); counts only "
                   "for `cdkit deploy --break-glass`, never as a normal approval.")
@click.option("--key", "key", metavar="PATH", default=None,
              help="The SSH key to sign the approval with (default: git's user.signingkey when gpg.format is ssh).")
@click.option("--revoke", is_flag=True,
              help="Withdraw your own approval of SHA instead (recorded as a revocation; the gate stops counting it).")
@JSON_OPTION
def approve(config: str | None, sha: str, environment: str, comment: str, break_glass: bool, key: str | None,
            revoke: bool, as_json: bool) -> int:
    """Approve SHA for a delivery environment (approval.via: local), as your git identity.

    An author or committer of the commits being released cannot approve them. The
    approval is signed with your SSH key (ssh-keygen -Y sign), and counts only when
    .cdkit/allowed_signers, as committed in what the environment runs, has that key
    for your email (unless approval.signed: false).
    With --break-glass, approve a deploy of SHA inside a freeze window instead (any mode);
    with --revoke, withdraw your own approval of SHA. With approval.expires, an approval
    older than that no longer counts.
    """
    from cdkit.commands.approve import approve as command

    return command(sha=sha, environment=environment, comment=comment, config=config, as_json=as_json,
                   break_glass=break_glass, key=key, revoke=revoke)


@cli.command()
@CONFIG_OPTION
@click.option("--env", "environment", metavar="NAME", default=None, help="Only this environment.")
@JSON_OPTION
def approvals(config: str | None, environment: str | None, as_json: bool) -> int:
    """List the approvals recorded in the ledger: who approved which SHA, for where, when."""
    from cdkit.commands.approve import approvals as command

    return command(environment=environment, config=config, as_json=as_json)


@cli.command()
@CONFIG_OPTION
@click.option("--env", "environment", metavar="NAME", required=True, help="The environment to deploy to.")
@click.option("--sha", metavar="SHA", default=None, help="The commit to deploy (default: the release branch tip).")
@click.option("--rollback", is_flag=True,
              help="Allow deploying a commit older than what the environment runs (recorded as a rollback; the "
                   "commit rolled back from is quarantined there).")
@click.option("--force", is_flag=True,
              help="Deploy a commit quarantined for this environment (needs --reason; recorded).")
@click.option("--break-glass", "break_glass", is_flag=True,
              help="Deploy inside a window that holds the environment, with the break-glass approvals its "
                   "break_glass: policy asks for (needs --reason; recorded and flagged in every view).")
@click.option("--reason", metavar="TEXT", default=None,
              help="Why --force or --break-glass: recorded with the deployment.")
@JSON_OPTION
def deploy(config: str | None, environment: str, sha: str | None, rollback: bool, force: bool, break_glass: bool,
           reason: str | None, as_json: bool) -> int:
    """Deploy a commit to an environment once every gate holds.

    Right before deploying, cdkit checks that every stage passed for that exact
    commit, that it is approved (delivery mode), that it is on the release branch,
    that it is not older than what the environment runs (unless --rollback), that
    it is not quarantined there (unless --force --reason), that the environment
    before this one ran it verified (and soaked), that no window holds it (unless
    --break-glass --reason, with its approvals), and that no other deploy is in
    progress. The deploy command gets CDKIT_ENVIRONMENT, CDKIT_SHA and
    CDKIT_DEPLOYMENT_ID; then `verify` runs; the outcome is recorded whatever it is.
    """
    from cdkit.commands.deploy import deploy as command

    return command(environment=environment, sha=sha, rollback=rollback, force=force, reason=reason, config=config,
                   as_json=as_json, break_glass=break_glass)


@cli.command()
@CONFIG_OPTION
@click.option("--env", "environment", metavar="NAME", required=True, help="The environment that runs it.")
@click.option("--sha", metavar="SHA", default=None, help="The commit the environment runs now.")
@click.option("--empty", is_flag=True, help="The environment runs nothing yet (its first release holds the whole "
                                           "history, knowingly).")
@click.option("--reason", metavar="TEXT", default=None, help="How you know, recorded with the adoption.")
@JSON_OPTION
def adopt(config: str | None, environment: str, sha: str | None, empty: bool, reason: str | None,
          as_json: bool) -> int:
    """Record what an environment runs before cdkit's first deployment there.

    Once per environment, before any deployment: nothing runs (no deploy command, no
    verify). The release range of its first release (who may not approve it), the
    ordering gate and the rules that govern it start from SHA; an adopted SHA is not
    verified, so the next environment does not accept it for that. With GitHub
    configured (as for cdkit deploy), the matching GitHub deployment is created too.
    """
    from cdkit.commands.adopt import adopt as command

    return command(environment=environment, sha=sha, empty=empty, reason=reason, config=config, as_json=as_json)


@cli.command()
@CONFIG_OPTION
@JSON_OPTION
def environments(config: str | None, as_json: bool) -> int:
    """Show each environment: its mode, what it runs, since when, approved by whom."""
    from cdkit.commands.deploy import environments as command

    return command(config=config, as_json=as_json)

# --- history, metrics, report, audit (cdkit/commands/history.py and beside it) -------------------

ENV_FILTER_OPTION = click.option("--env", "environment", metavar="NAME", default=None, help="Only this environment.")
SOURCE_OPTION = click.option(
    "--source", type=click.Choice(["ledger", "github"]), default="ledger", show_default=True,
    help="The ledger in this repository's git dir, or GitHub's deployments (token and repository as for `run`).")


def _since_option(default: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--since", metavar="30d|DATE", default=default, show_default=bool(default),
                        help="Only deployments since then: 12h, 30d, 2w, or a date (2026-01-31, local time).")


@cli.command()
@CONFIG_OPTION
@ENV_FILTER_OPTION
@_since_option(None)
@SOURCE_OPTION
@TOKEN_OPTION
@JSON_OPTION
def history(config: str | None, environment: str | None, since: str | None, source: str, token: str | None,
            as_json: bool) -> int:
    """Deployments newest first: range, outcome, approvals, who deployed, how long, rollbacks and forced deploys."""
    from cdkit.commands.history import history as command

    return command(config=config, environment=environment, since=since, source=source, token=token,
                   as_json=as_json)


@cli.command()
@CONFIG_OPTION
@ENV_FILTER_OPTION
@_since_option("90d")
@SOURCE_OPTION
@TOKEN_OPTION
@JSON_OPTION
def metrics(config: str | None, environment: str | None, since: str, source: str, token: str | None,
            as_json: bool) -> int:
    """The four DORA keys per environment: deployment frequency, lead time, change failure rate, time to restore."""
    from cdkit.commands.metrics import metrics as command

    return command(config=config, environment=environment, since=since, source=source, token=token,
                   as_json=as_json)


@cli.command()
@CONFIG_OPTION
@ENV_FILTER_OPTION
@_since_option("90d")
@SOURCE_OPTION
@TOKEN_OPTION
@click.option("-o", "--output", "output_path", metavar="FILE", required=True, help="Where to write the HTML page.")
def report(config: str | None, environment: str | None, since: str, source: str, token: str | None,
           output_path: str) -> int:
    """One self-contained HTML page (opens offline): the four keys, charts per environment, the history.

    The charts need the report extra: pip install 'cdkit[report]'.
    """
    from cdkit.commands.report import report as command

    return command(config=config, environment=environment, since=since, source=source, token=token,
                   output_path=output_path)


@cli.group(invoke_without_command=True)
@CONFIG_OPTION
@ENV_FILTER_OPTION
@click.option("--since", metavar="DATE", default=None,
              help="Only deployments that started then or later: 2026-01-01 (local time), 2026-01-01T00:00:00Z, 90d.")
@click.option("--until", metavar="DATE", default=None, help="Only deployments that started before then.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table",
              show_default=True, help="csv: one row per deployment, with a header; html: one self-contained page.")
@JSON_OPTION
@click.option("-o", "--output", "output_path", metavar="FILE", default=None, help="Write there instead of stdout.")
@click.pass_context
def audit(ctx: click.Context, config: str | None, environment: str | None, since: str | None, until: str | None,
          fmt: str, as_json: bool, output_path: str | None) -> int | None:
    """Change records, one per deployment: range, pull requests, checks, approvals, who deployed, bypasses.

    For an audit (SOC 2 CC8.1, ISO 27001 A.8.32): what each deployment brought, which
    checks passed where (hook, CI), who approved it and whether any approver wrote part
    of it, who deployed it, verification, rollbacks, forced and break-glass deploys with
    their reasons, and whether the ledger still matches its hash chain.
    `--json` is `--format json`.
    """
    if ctx.invoked_subcommand is not None:
        return None
    from cdkit.commands.audit import audit as command

    return command(config=config, environment=environment, since=since, until=until,
                   fmt="json" if as_json else fmt, output_path=output_path)


@audit.command("verify")
@CONFIG_OPTION
@JSON_OPTION
def audit_verify(config: str | None, as_json: bool) -> int:
    """Check the ledger against its hash chain: exit 0 intact, 1 naming the first edited, deleted or moved record."""
    from cdkit.commands.audit import verify as command

    return command(config=config, as_json=as_json)


@cli.command()
def action() -> int:
    """Run inside a GitHub Actions job (the reusable Action calls this).

    Reads the runner's GITHUB_* variables and event payload, runs the `ci` stages,
    and writes the step outputs, job summary, log groups and annotations. Inputs come
    from INPUT_COMMAND, INPUT_CONFIG, INPUT_ENVIRONMENT, INPUT_WORKING_DIRECTORY, INPUT_TOKEN.
    """
    from cdkit.commands.action import action as command

    return command()


@cli.command()
@click.option("--mode", type=click.Choice(["delivery", "deployment"]), default="delivery", show_default=True,
              help="deployment: every passing commit on the release branch deploys; delivery: it waits for approval.")
@click.option("--approval", type=click.Choice(["environment", "review", "local"]), default=None,
              help="Delivery mode: approve with a GitHub environment's reviewers (default), with approving PR "
                   "reviews, or locally with `cdkit approve` (offline: no workflow is written).")
@click.option("--force", is_flag=True, help="Overwrite existing .cdkit.yml and .github/workflows/cdkit.yml.")
@click.option("--fan-out", is_flag=True, help="Write the workflow with one job per stage (cdkit workflow generate).")
def init(mode: str, approval: str | None, force: bool, fan_out: bool) -> int:
    """Write a .cdkit.yml whose stages fit this project, and a workflow; then validate and plan it.

    The stages come from what the repository uses (pyproject.toml, package.json, go.mod,
    Cargo.toml, a Makefile's lint/test targets), only with tools present now.

    Example: cdkit init --approval local
    """
    from cdkit.commands.init import init as command

    return command(mode=mode, approval=approval, force=force, fan_out=fan_out)


@cli.group()
def workflow() -> None:
    """The pipeline as one GitHub Actions job per stage (fan-out across runners)."""


@workflow.command("generate")
@CONFIG_OPTION
@click.option("--mode", type=click.Choice(["delivery", "deployment"]), default=None,
              help="Default: the mode of the pipeline's first environment.")
@click.option("--approval", type=click.Choice(["environment", "review"]), default=None,
              help="Delivery mode: default the first environment's approval.via.")
@click.option("-o", "--output", "output_path", metavar="PATH", default=None,
              help="Where to write it (default: .github/workflows/cdkit.yml; - for stdout).")
def workflow_generate(config: str | None, mode: str | None, approval: str | None, output_path: str | None) -> int:
    """Write a workflow with a plan job, one job per `ci` stage (needs as in the pipeline), a release job."""
    from cdkit.commands.workflow import generate as command

    return command(mode=mode, approval=approval, config=config, output_path=output_path)


@workflow.command("check")
@CONFIG_OPTION
@click.option("--workflow", "path", metavar="PATH", default=None,
              help="The generated workflow (default: .github/workflows/cdkit.yml).")
def workflow_check(config: str | None, path: str | None) -> int:
    """Exit 1 with a diff when the generated workflow no longer matches the pipeline."""
    from cdkit.commands.workflow import check as command

    return command(config=config, path=path)



@cli.group()
def release() -> None:
    """Delivery through pull-request reviews (approval.via: review)."""


@release.command("open")
@CONFIG_OPTION
@click.option("--env", "environment", metavar="NAME", required=True, help="The environment to release to.")
@click.option("--sha", metavar="SHA", default=None, help="The candidate commit (default: the release branch tip).")
@JSON_OPTION
def release_open(config: str | None, environment: str, sha: str | None, as_json: bool) -> int:
    """Open or update the release pull request of a commit for an environment.

    Its body lists the commits since the environment's last deployment and their stage results;
    an approving review at that exact commit approves the release.
    """
    from cdkit.commands.release_pr import release_open as command

    return command(environment=environment, sha=sha, config=config, as_json=as_json)


@release.command("check")
@CONFIG_OPTION
@click.option("--env", "environment", metavar="NAME", required=True, help="The environment to check.")
@click.option("--no-deploy", is_flag=True, help="Only report the decision; do not deploy.")
@JSON_OPTION
def release_check(config: str | None, environment: str, no_deploy: bool, as_json: bool) -> int:
    """Evaluate the release pull request's approvals now (from the REST API); deploy when they hold."""
    from cdkit.commands.release_pr import release_check as command

    return command(environment=environment, deploy_now=not no_deploy, config=config, as_json=as_json)

def _complete_names(group: click.Group) -> None:
    """Stage and environment names complete from the pipeline (`--stage`, STAGE, `--env`).

    Attached here, once for every command, rather than on each option: new commands get it too.
    """
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _complete_names(command)
            continue
        for param in command.params:
            if param.name in ("stages", "stage_names"):
                param._custom_shell_complete = complete_stage
            elif param.name == "environment":
                param._custom_shell_complete = complete_environment


def _crash_report(exc: BaseException) -> str:
    import platform
    import traceback

    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return (
        "cdkit hit an internal error (a bug, not your fault). Please report it with this text:\n"
        f"  cdkit {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
        f"  command: cdkit {' '.join(sys.argv[1:])}\n\n{tail}"
    )


def _redact(text: str) -> str:
    from cdkit.secrets import redact

    return redact(text, os.environ)


def _error(text: str) -> None:
    """An error message, redacted; inside GitHub Actions fenced, since it may quote payload text."""
    text = _redact(text)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from cdkit.report.actions import Actions

        Actions(dict(os.environ), sys.stderr).print_untrusted(text)
    else:
        click.echo(text, err=True)


# With --json, a refusal is a document too; its key says what did not happen.
REFUSAL_KEYS = {"deploy": "deployed", "run": "deployed", "approve": "approved", "release": "released",
                "adopt": "adopted"}


def _json_refusal(argv: list[str] | None, message: str, problems: Any, exit_code: int) -> None:
    """`--json` promises one JSON document on stdout on every outcome: an expected error is one as well."""
    args = sys.argv[1:] if argv is None else argv
    if "--json" not in args or not args:
        return
    import json

    from cdkit.jsondoc import document

    command = _command_name(args)
    refused = {REFUSAL_KEYS.get(command.split(" ")[0], "ok"): False, "error": _redact(message),
               "problems": [_redact(str(p)) for p in problems], "exit_code": exit_code}
    click.echo(json.dumps(document(command, refused), indent=2))


def _command_name(args: list[str]) -> str:
    """`release check` from `cdkit release check --env x --json`: the command words before any option."""
    words = []
    group: click.Command | None = cli
    for arg in args:
        if arg.startswith("-") or not isinstance(group, click.Group) or arg not in group.commands:
            break
        words.append(arg)
        group = group.commands[arg]
    return " ".join(words)


_complete_names(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command and turn its outcome into the documented exit code."""
    code = invoke(cli, argv)
    sys.exit(code)


def invoke(command: Callable[..., Any], argv: list[str] | None) -> int:
    try:
        result = command.main(args=argv, prog_name="cdkit", standalone_mode=False)  # type: ignore[attr-defined]
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("cdkit: interrupted", err=True)
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        _error("\n".join(exc.messages))
        _json_refusal(argv, str(exc), exc.messages, exc.exit_code)
        return exc.exit_code
    except CdkitError as exc:
        _error(f"cdkit: {exc}")
        _json_refusal(argv, str(exc), getattr(exc, "problems", ()) or [str(exc)], exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("cdkit: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes a crash report
        _error(_crash_report(exc))
        return EXIT_INTERNAL
    return int(result or 0)
