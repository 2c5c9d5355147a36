"""What the installed pre-push hook executes: `cdkit hook run pre-push` without click.

Every push pays for this module's imports, so it imports only what a push needs
(no click, no PyGithub, no gitpython; `python -X importtime` shows the list) and
defers even those until it knows something must run: empty stdin, a delete or a
`CDKIT=0` costs no more than starting Python.

The hook script calls `main()` with `argv = [hook path, remote, url]`; the click
command `cdkit hook run pre-push` calls `run_pre_push` directly.
"""
from __future__ import annotations

import os
import sys

from cdkit import marshalfile
from cdkit.errors import EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CdkitError

# Not `typing.TYPE_CHECKING`: importing typing alone costs a push several milliseconds (mypy
# treats any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from pathlib import Path
    from typing import IO, Any, TypeAlias

    from cdkit.config import Pipeline
    from cdkit.ledger import Ledger
    from cdkit.prepush import PushTarget
    from cdkit.runner import StageResult
    from cdkit.session import RunOutcome, Where, Workspace

    CacheKey: TypeAlias = tuple[int, str, str, int, int, str, bytes]  # see _cache_key

LEGACY_NAME = "pre-push.legacy"
TOKEN_VARS = ("GITHUB_TOKEN", "GH_TOKEN")
STATUS_STATES = {"passed": "success", "skipped": "success", "failed": "failure", "timed_out": "failure",
                 "cancelled": "error"}
PIPELINE_CACHE = "pipeline.cache"
CACHE_FORMAT = 1


def _say(text: str, stream: IO[str] | None = None) -> None:
    # git shows a hook's stderr to the user; stdout is the same terminal, but stderr is
    # what `cdkit hook run` by hand and pre-commit show too.
    stream = stream or sys.stderr
    stream.write(f"{text}\n")
    stream.flush()


def read_stdin(stream: IO[bytes] | None) -> bytes:
    """All of stdin, once, as bytes (a chained hook gets the same bytes). A terminal means
    "run by hand": nothing to read, and no waiting for input that never comes."""
    if stream is None or stream.isatty():
        return b""
    return stream.read()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        _say("cdkit: the pre-push hook expects `<hook path> <remote> <url>` (git passes the last two); "
             "reinstall it with `cdkit hook install`")
        return EXIT_USAGE
    hook_path, remote, url = args
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    return run_pre_push(remote, url, read_stdin(stdin), hook_path=hook_path, environ=os.environ)


def main_and_exit() -> None:
    """What the installed hook runs: `main`, then leave at once.

    A hook is a short-lived process whose work is done when `main` returns (the ledger
    is closed, the logs are written, every stage process is gone), so interpreter
    shutdown (tearing down every module) is skipped: ~5 ms of every push.
    """
    try:
        code = main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run_pre_push(remote: str | None, url: str | None, stdin: bytes, *, hook_path: str | None,
                 environ: MutableMapping[str, str], cwd: str | None = None) -> int:
    """Judge a push; return the exit code git acts on (0 lets the push through)."""
    try:
        if hook_path is not None:
            code = _run_legacy(hook_path, remote, url, stdin, environ)
            if code != EXIT_OK:
                return code
        return _judge_push(remote, url, stdin, environ, cwd)
    except CdkitError as exc:
        _say(f"cdkit: {_redact(str(exc), environ)}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("cdkit: interrupted; the push is aborted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug blocks the push with a report, never a bare traceback
        import traceback

        tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
        _say(_redact("cdkit hit an internal error in the pre-push hook (a bug); the push is blocked.\n"
                     "Push without the hook once with `git push --no-verify`, and please report this:\n\n" + tail,
                     environ))
        return EXIT_INTERNAL


def _redact(text: str, environ: Mapping[str, str]) -> str:
    from cdkit.secrets import redact

    return redact(text, environ)


def _run_legacy(hook_path: str, remote: str | None, url: str | None, stdin: bytes,
                environ: Mapping[str, str]) -> int:
    """Run the pre-push hook cdkit replaced, first, with git's arguments and the same stdin bytes
    (git-lfs's hook reads them to upload objects; without it the push would be incomplete)."""
    legacy = os.path.join(os.path.dirname(hook_path), LEGACY_NAME)
    if not os.path.exists(legacy):
        return EXIT_OK
    if not os.access(legacy, os.X_OK):
        _say(f"cdkit: {legacy} is not executable, so it was not run (as git would ignore it); "
             f"`chmod +x` it to run it, or `cdkit hook status` for details")
        return EXIT_OK
    import subprocess

    args = [legacy, *(a for a in (remote, url) if a is not None)]
    code = subprocess.run(args, input=stdin, env=dict(environ)).returncode
    if code != 0:
        _say(f"cdkit: the previous pre-push hook ({legacy}) failed with exit code {code}; the push is blocked "
             "(cdkit's stages did not run)")
        return code if 0 < code < 256 else EXIT_FAILED
    return EXIT_OK


def _forget_git_environment(environ: MutableMapping[str, str]) -> None:
    """Drop what git exports to hooks (GIT_DIR in a linked worktree, GIT_INDEX_FILE...).

    The hook runs at the top of the work tree, so git finds the same repository without
    them; kept, they would point `git worktree add` (and stages) at the wrong index or tree.
    """
    from cdkit.git import LOCAL_ENV_VARS

    for name in LOCAL_ENV_VARS:
        environ.pop(name, None)


def _judge_push(remote: str | None, url: str | None, stdin: bytes, environ: MutableMapping[str, str],
                cwd: str | None) -> int:
    from cdkit import pushlines

    updates = pushlines.parse_pre_push(stdin)
    # pre-commit describes the push in PRE_COMMIT_* variables and gives us no stdin.
    from_pre_commit = not updates and bool(environ.get("PRE_COMMIT_REMOTE_NAME"))
    if not updates and not from_pre_commit:
        _say("cdkit: no refs to push (empty stdin); nothing to check")
        return EXIT_OK
    if updates and all(u.is_delete for u in updates):
        for update in updates:
            _say(f"cdkit: {update.remote_ref}: deleted on the remote; nothing to check")
        return EXIT_OK
    if updates and remote is None:
        from cdkit.errors import UsageError

        raise UsageError("REMOTE and URL are required with ref lines on stdin (git passes both to the hook): "
                         "cdkit hook run pre-push REMOTE URL")

    dirs = _git_dirs(cwd, environ)
    quiet = None if from_pre_commit or dirs is None else _quiet_push(top=dirs[0], common_dir=dirs[2])
    if quiet is not None:
        _say(f"cdkit: {quiet}")
        return EXIT_OK

    from cdkit import git, prepush

    ws = _workspace(dirs, cwd)
    _forget_git_environment(environ)
    if environ is not os.environ:
        _forget_git_environment(os.environ)  # our own git calls read the process environment
    if not ws.config_path.exists():
        _say(f"cdkit: no {ws.config_path.name} in {ws.root}; nothing to check (create one with `cdkit init`, "
             "or remove the hook with `cdkit hook uninstall`)")
        return EXIT_OK
    try:
        pipeline: Pipeline | None = load_pipeline_cached(ws.config_path, ws.repo.cdkit_dir / PIPELINE_CACHE)
        invalid: CdkitError | None = None
    except CdkitError as exc:
        pipeline, invalid = None, exc  # said below: as the pushed file's errors if the push carries it
    if pipeline is not None and not any("pre-push" in s.on for s in pipeline.stages):
        _say(f"cdkit: no stage of {ws.config_path.name} runs on pre-push (`on: [pre-push]`); nothing to check")
        return EXIT_OK

    pre_commit = prepush.from_pre_commit_env(environ, ws.root) if from_pre_commit else None
    if pre_commit is not None:
        remote, url = pre_commit.remote, pre_commit.url
        plan = prepush.PushPlan((pre_commit.target,), ())
    else:
        # `git push URL` passes the URL as the remote's name too: find the remote it belongs to, if any.
        remote_name = git.remote_for_url(url, cwd=ws.root) if remote == url and url else remote
        plan = prepush.push_targets(updates, remote_name, ws.root)
    for note in plan.notes:
        _say(f"cdkit: {note}")
    if not plan.targets:
        return EXIT_OK
    for target in plan.targets:
        code = _validate_pushed_pipeline(ws, target)
        if code != EXIT_OK:
            return code
    if _stale_workflow(ws, plan.targets):
        return EXIT_FAILED
    if pipeline is None:
        assert invalid is not None
        raise invalid  # the work tree's file is broken, not the pushed one: its own errors
    return _run_targets(ws, pipeline, plan.targets, remote=remote, url=url, environ=environ)


def _workspace(dirs: tuple[str, str, str] | None, cwd: str | None) -> Workspace:
    """`find_workspace`, without its `git rev-parse` where git runs the hook (`dirs`, from `_git_dirs`)."""
    from cdkit.session import Workspace, find_workspace

    if dirs is None:
        return find_workspace(None, cwd)
    from pathlib import Path

    from cdkit.config import find_config
    from cdkit.git import Repo

    top, git_dir, common_dir = map(Path, dirs)
    return Workspace(repo=Repo(root=top, git_dir=git_dir, common_dir=common_dir), root=top,
                     config_path=find_config(top))


def _validate_pushed_pipeline(ws: Workspace, target: PushTarget) -> int:
    """`cdkit validate` on the pipeline file as pushed, when the push changes it.

    An invalid `.cdkit.yml` would break CI for everyone who pulls it; the push is blocked
    with its errors (file:line:col) before any stage runs.
    """
    try:
        relative = ws.config_path.resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        return EXIT_OK  # --config outside the repository: nothing of it is pushed
    if relative not in target.changed_files:
        return EXIT_OK
    from cdkit import config, git
    from cdkit.errors import ConfigError

    where = f"{relative} as pushed in {target.head_sha[:12]}"
    raw = git.file_at(target.head_sha, relative, cwd=ws.root)
    try:
        # Named by its path alone: `.cdkit.yml:12:5: ...` is where the user's editor jumps to.
        pushed = None if raw is None else config.load_text(config.decode_config(raw, relative), relative)
    except ConfigError as exc:
        _say(f"cdkit: {where} is not valid; the push is blocked. Fix it and push again:")
        for message in exc.messages:
            _say(f"  {message}")
        return EXIT_USAGE
    if pushed is None:
        _say(f"cdkit: this push deletes {relative}: CI will have no pipeline to run")
    else:
        _say(f"cdkit: {where}: valid ({len(pushed.stages)} stage(s))")
    return EXIT_OK


def _stale_workflow(ws: Workspace, targets: tuple[PushTarget, ...]) -> bool:
    """A pushed commit changes the pipeline file but its generated workflow no longer matches (workflow check)."""
    try:
        config = ws.config_path.resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        return False  # a pipeline outside the repository has no committed workflow beside it
    for target in targets:
        if config in target.changed_files:
            from cdkit.workflow import stale_at  # only when the push changes the pipeline

            problem = stale_at(ws.root, config, target.head_sha)
            if problem:
                _say(f"{problem}\ncdkit: push blocked ({', '.join(target.remote_refs)})")
                return True
    return False


# --- the validated pipeline, cached ----------------------------------------------------------


def load_pipeline_cached(path: Path, cache: Path) -> Pipeline:
    """`config.load(path)`, reusing the last result while the file's bytes are the same.

    Parsing is ~1 ms, but importing PyYAML is ~14 ms of every push. The cache holds the
    exact bytes it was built from, so any edit (or another worktree's file) is a miss and
    is parsed and validated in full; a different cdkit, schema.json or Python is a miss too.
    It is a `marshal` of plain data: no import at all to read it.
    """
    from cdkit import config

    try:
        raw = path.read_bytes()
    except OSError:
        return config.load(path)  # the same error messages as everywhere else
    key = _cache_key(str(path), raw, config.__file__, str(config.SCHEMA_PATH))
    if os.path.islink(cache.parent):
        # cdkit never follows a link out of .git/cdkit (the ledger refuses such a directory and says so).
        return config.load_text(config.decode_config(raw, str(path)), str(path))
    data = _read_cache(str(cache), key)
    if data is not None:
        return _pipeline_from_data(data)
    pipeline = config.load_text(config.decode_config(raw, str(path)), str(path))
    marshalfile.write(cache, (key, _pipeline_to_data(pipeline)))  # a read-only git dir: parse every time
    return pipeline


def _cache_key(path: str, raw: bytes, config_file: str, schema_file: str) -> CacheKey:
    # The validation rules live in schema.json as well as config.py: an edit to either (an editable
    # install, an upgrade that keeps __version__) must re-validate, not reuse a pipeline it would reject.
    from cdkit import __version__

    return (CACHE_FORMAT, __version__, sys.version, os.stat(config_file).st_mtime_ns,
            os.stat(schema_file).st_mtime_ns, path, raw)


def _read_cache(cache: str, key: CacheKey) -> dict[str, Any] | None:
    """The cached pipeline's data when it was built from `key`, else None (a miss)."""
    stored = marshalfile.read(cache)
    if not (isinstance(stored, tuple) and len(stored) == 2 and stored[0] == key and isinstance(stored[1], dict)):
        return None
    return stored[1]


def _git_dirs(cwd: str | None, environ: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(the work tree's top, its git dir, the common git dir), as `git rev-parse` would say, found
    with a few `stat`s where git runs a hook; None anywhere else (then git is asked).

    git runs a hook at the top of the work tree, with GIT_DIR set in a linked worktree (and
    GIT_PREFIX set, empty, by git itself). A `.git` file (a submodule), GIT_WORK_TREE or
    GIT_COMMON_DIR, or a subdirectory is left to git.
    """
    if environ.get("GIT_WORK_TREE") or environ.get("GIT_COMMON_DIR"):
        return None
    if environ.get("GIT_DIR") and environ.get("GIT_PREFIX") != "":
        return None  # not set by git for its hook: maybe run by hand from anywhere
    top = cwd or os.getcwd()
    git_dir = os.path.join(top, environ.get("GIT_DIR") or ".git")
    if not os.path.isdir(git_dir):
        return None
    try:
        with open(os.path.join(git_dir, "commondir"), encoding="utf-8") as file:
            common_dir = os.path.normpath(os.path.join(git_dir, file.read().strip()))
    except FileNotFoundError:
        common_dir = git_dir
    except (OSError, ValueError):
        return None
    return os.path.abspath(top), os.path.normpath(git_dir), common_dir


def _quiet_push(*, top: str, common_dir: str) -> str | None:
    """What to say when the work tree's pipeline runs nothing on pre-push, known without git; else None.

    The pipeline file and its cache are found from `_git_dirs` with a few `stat`s: no git
    process, and none of pathlib, subprocess or cdkit's pipeline modules imported. This is
    only a shortcut: anything else (both file names, a cache built from other bytes or by
    another cdkit) is None, and the full path decides as it always did.
    """
    from cdkit import CONFIG_NAMES, DEFAULT_CONFIG

    present = [name for name in CONFIG_NAMES if os.path.isfile(os.path.join(top, name))]
    if not present:
        return f"no {DEFAULT_CONFIG} in {top}; nothing to check (create one with `cdkit init`, " \
               "or remove the hook with `cdkit hook uninstall`)"
    cdkit_dir = os.path.join(common_dir, "cdkit")
    if len(present) > 1 or os.path.islink(cdkit_dir):
        return None
    path = os.path.join(top, present[0])
    here = os.path.dirname(__file__)
    try:
        with open(path, "rb") as file:
            raw = file.read()
        key = _cache_key(path, raw, os.path.join(here, "config.py"), os.path.join(here, "schema.json"))
    except OSError:
        return None
    data = _read_cache(os.path.join(cdkit_dir, PIPELINE_CACHE), key)
    if data is None or any("pre-push" in stage["on"] for stage in data["stages"]):
        return None
    return f"no stage of {present[0]} runs on pre-push (`on: [pre-push]`); nothing to check"


def _pipeline_to_data(pipeline: Pipeline) -> dict[str, object]:
    return {
        **pipeline._asdict(),
        "stages": [{**s._asdict(), "env": dict(s.env), "ci": s.ci._asdict()} for s in pipeline.stages],
        "environments": [{**e._asdict(), "approval": e.approval._asdict(),
                          "verify": e.verify._asdict() if e.verify else None,
                          "windows": [w._asdict() for w in e.windows]} for e in pipeline.environments],
        "evidence": pipeline.evidence._asdict(),
    }


def _pipeline_from_data(data: dict[str, Any]) -> Pipeline:
    from cdkit.config import ApprovalPolicy, Environment, Evidence, Pipeline, Stage, StageCI, Verify, Window

    return Pipeline(**{
        **data,
        "stages": tuple(Stage(**{**s, "ci": StageCI(**s["ci"])}) for s in data["stages"]),
        "environments": tuple(Environment(**{**e, "approval": ApprovalPolicy(**e["approval"]),
                                             "verify": Verify(**e["verify"]) if e.get("verify") else None,
                                             "windows": tuple(Window(**w) for w in e.get("windows") or ())})
                              for e in data["environments"]),
        "evidence": Evidence(**data["evidence"]),
    })


def _jobs(environ: Mapping[str, str], pipeline: Pipeline) -> int:
    """Every ready stage at once (stages that must wait say so with `needs`), like lefthook's
    `parallel: true`: a push waits on the slowest stage, not on the sum. CDKIT_JOBS caps it."""
    value = environ.get("CDKIT_JOBS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            from cdkit.errors import UsageError

            raise UsageError(f"CDKIT_JOBS={value!r} is not a positive number of parallel stages")
        return int(value)
    return max(1, len(pipeline.stages))


def _run_targets(ws: Workspace, pipeline: Pipeline, targets: tuple[PushTarget, ...], *, remote: str | None,
                 url: str | None, environ: MutableMapping[str, str]) -> int:
    from cdkit.events import Trigger
    from cdkit.plan import parse_skip
    from cdkit.report.console import ConsoleReporter, counts_text, not_countable
    from cdkit.session import open_ledger, run_trigger

    # Only statuses need it (with a token): parsing the URL costs a quiet push the `re` import.
    repository = _repository(environ, url) if _token(environ) else None
    outcomes: list[tuple[PushTarget, RunOutcome]] = []
    with open_ledger(ws.repo) as ledger:
        for target in targets:
            refs = ", ".join(target.remote_refs)
            trigger = Trigger(kind="pre-push", event="pre-push", head_sha=target.head_sha, base_sha=target.base_sha,
                              changed_files=target.changed_files, ref=target.remote_refs[0], repo=repository,
                              extra={"remote": remote or "", "refs": refs})

            def announce(workdir: object, where: Where, target: PushTarget = target, refs: str = refs) -> None:
                _say(f"cdkit: {refs}: checking {target.range_text} ({target.how}) {where.describe(target.head_sha)}")

            console = ConsoleReporter(pipeline.stages, stream=sys.stderr, show_output=False)
            outcome = run_trigger(ws, pipeline, trigger, ledger=ledger, reporters=[console], environ=environ,
                                  jobs=_jobs(environ, pipeline), on_workdir=announce)
            outcomes.append((target, outcome))
            for note in outcome.notes:
                _say(f"cdkit: {note}")
            if repository and _token(environ):
                enqueue_statuses(ledger, repository, outcome, skipped_by_user=parse_skip(environ.get("CDKIT_SKIP")))
            record = ledger.run(outcome.run_id)
            why_not = not_countable(outcome.results, dirty=record is not None and record.dirty)
            uncounted = f" (does not count for a release: {'; '.join(why_not)})" if why_not else ""
            _say(f"cdkit: run #{outcome.run_id} {outcome.status}: {counts_text(outcome.results)}{uncounted}")
            if outcome.exit_code == EXIT_INTERRUPTED:
                break  # Ctrl-C or SIGTERM: judge nothing more
    _warn_of_windows(pipeline, targets)
    return _verdict(outcomes, environ)


def _warn_of_windows(pipeline: Pipeline, targets: tuple[PushTarget, ...]) -> None:
    """A push to the release branch while a window holds an environment: say the release will wait (a warning,
    never a block). cdkit.windows and croniter are imported only for a pipeline that has windows."""
    release_ref = f"refs/heads/{pipeline.release_branch}"
    if not any(e.windows for e in pipeline.environments) or \
            not any(release_ref in t.remote_refs for t in targets):
        return
    import time

    from cdkit.commands.plan import window_holds

    for hold in window_holds(pipeline, time.time()):
        _say(f"cdkit: warning: this push releases {pipeline.release_branch}, but {hold['environment']} is held: "
             f"{hold['message']}; the release waits for the window (break-glass: cdkit deploy --break-glass)")


def _verdict(outcomes: list[tuple[PushTarget, RunOutcome]], environ: Mapping[str, str]) -> int:
    """The strictest result across refs wins: interrupted > failed > passed."""
    code = max((o.exit_code for _, o in outcomes), default=EXIT_OK)
    if code == EXIT_OK:
        return EXIT_OK
    from cdkit.report.console import display_path
    from cdkit.report.excerpt import failure_excerpt  # its regexes only for a push that failed

    if code == EXIT_INTERRUPTED:
        _say("cdkit: interrupted; the push is aborted (the run is recorded as cancelled)")
        return EXIT_INTERRUPTED
    failed_names: list[str] = []
    for target, outcome in outcomes:
        for result in outcome.results:
            if result.status not in ("failed", "timed_out"):
                continue
            failed_names.append(result.stage)
            _say(f"cdkit: stage {result.stage!r} {result.status.replace('_', ' ')} ({result.reason}) on "
                 f"{', '.join(target.remote_refs)} {target.range_text}")
            if result.log_path:
                _say(f"  log: {display_path(result.log_path)}")
                # A stage's output is the user's code: it may echo a token from the push's environment.
                for line in failure_excerpt(result.log_path).lines():
                    _say(f"  | {_redact(line, environ)}")
    skip = f"CDKIT_SKIP={','.join(dict.fromkeys(failed_names)) or 'STAGE'} git push"
    width = max(len(skip), len("git push --no-verify"))
    _say("cdkit: push blocked. Fix the commit and push again, or skip:\n"
         f"  {skip.ljust(width)}  # skip these stages (recorded in the ledger)\n"
         f"  {'git push --no-verify'.ljust(width)}  # skip the whole hook (CI still checks)")
    return EXIT_FAILED


# --- commit statuses, for `cdkit sync` to post once GitHub has the commits --------------------


def _token(environ: Mapping[str, str]) -> str | None:
    return next((environ[v] for v in TOKEN_VARS if environ.get(v)), None)


def _repository(environ: Mapping[str, str], url: str | None) -> str | None:
    if environ.get("GITHUB_REPOSITORY"):
        return environ["GITHUB_REPOSITORY"]
    if not url:
        return None
    from cdkit.remote import parse_repository

    return parse_repository(url)


def status_description(status: str, reason: str, duration: float | None) -> str:
    """At most 140 characters, GitHub's limit for a status description."""
    if status == "skipped":
        text = f"skipped: {reason}"
    elif status == "passed":
        text = f"passed in {duration:.1f}s (pre-push)" if duration is not None else "passed (pre-push)"
    else:
        text = f"{status.replace('_', ' ')}: {reason} (pre-push)" if reason else f"{status} (pre-push)"
    return text if len(text) <= 140 else text[:139] + "…"


def judged(result: StageResult, skipped_by_user: frozenset[str]) -> bool:
    """Whether this run's result for the stage may speak for it on GitHub.

    A stage outside this trigger (`on:`) or `--stage` judged nothing, and a CDKIT_SKIP skip is
    the user choosing not to judge it (the ledger records that): as `success` on
    `cdkit/<stage>` either would turn CI's own status for the commit green. A skip by `paths`
    or by a failed need is this run's decision, and is reported like the checks reporter does.
    """
    from cdkit.plan import NOT_JUDGED_PREFIXES
    from cdkit.runner import SKIPPED

    if result.status != SKIPPED:
        return True
    # Every stage named in CDKIT_SKIP is skipped by it unless an earlier rule (on:, --stage) already was.
    return not result.reason.startswith(NOT_JUDGED_PREFIXES) and result.stage not in skipped_by_user


def enqueue_statuses(ledger: Ledger, repository: str, outcome: RunOutcome, *,
                     skipped_by_user: frozenset[str]) -> None:
    """One outbox entry per stage this run judged, keyed so a re-run of the hook never duplicates one."""
    sha = outcome.plan.trigger.head_sha
    for result in outcome.results:
        if not judged(result, skipped_by_user):
            continue
        context = f"cdkit/{result.stage}"
        payload = {
            "repo": repository, "sha": sha, "state": STATUS_STATES.get(result.status, "error"), "context": context,
            "description": status_description(result.status, result.reason, result.duration), "target_url": None,
            "stage": result.stage, "run_id": outcome.run_id,
        }
        ledger.enqueue(f"status:{repository}:{sha}:{context}:{outcome.run_id}", "status", payload)


if __name__ == "__main__":
    sys.exit(main())
