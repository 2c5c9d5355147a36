"""`cdkit doctor`: check what cdkit depends on in this repository, and say how to fix what is wrong.

Each check is a small function returning `Finding`s; nothing here changes the repository
(no ledger is created, no hook written). A `problem` makes the exit code 1; a `note` is
worth knowing but does not (no token: reports stay local, which may be what you want).
"""
from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from cdkit import git, jsondoc, output
from cdkit.config import CONFIG_NAMES, DEFAULT_CONFIG, Pipeline, load
from cdkit.errors import EXIT_FAILED, EXIT_OK, ConfigError

OK, NOTE, PROBLEM = "ok", "note", "problem"

# Words a stage's command may start with that are the shell's own, not a tool to look for.
SHELL_WORDS = frozenset({
    "true", "false", "echo", "printf", "test", "[", "cd", "exit", "export", "set", "unset", ":", ".", "source",
    "if", "for", "while", "case", "exec", "eval", "command", "env", "sh", "read", "!", "{", "(", "then", "do",
})


class Finding(NamedTuple):
    check: str  # config, schema, hook, tools, remote, token, ledger, outbox, setaside, environments
    status: str  # ok, note, problem
    detail: str
    fix: str = ""


class Context(NamedTuple):
    root: Path
    git_dir: Path
    cdkit_dir: Path
    config_path: Path | None  # None: no pipeline file found
    environ: Mapping[str, str]


# --- the pipeline file --------------------------------------------------------------------------------


def check_config(ctx: Context) -> Iterator[Finding]:
    present = [name for name in CONFIG_NAMES if (ctx.root / name).is_file()]
    if len(present) > 1:
        yield Finding("config", PROBLEM, f"both {present[0]} and {present[1]} exist at {ctx.root}",
                      f"merge them into {DEFAULT_CONFIG} and delete {present[1]}")
    elif ctx.config_path is None:
        yield Finding("config", PROBLEM, f"no pipeline file at {ctx.root}", "create one with `cdkit init`")
    else:
        yield Finding("config", OK, f"pipeline file: {ctx.config_path}")
    head = git.head_sha(cwd=ctx.root)
    committed = git.all_files(head, cwd=ctx.root) if head else []
    stray = [p for p in committed if Path(p).name in CONFIG_NAMES and "/" in p]
    for path in stray:
        yield Finding("config", NOTE, f"{path} is not read: cdkit reads only the pipeline file at the repository root",
                      "move its stages into the root file, or pass --config to use it")


def check_schema(ctx: Context) -> tuple[list[Finding], Pipeline | None]:
    if ctx.config_path is None:
        return [], None
    try:
        pipeline = load(ctx.config_path, root=ctx.root)
    except ConfigError as exc:
        return [Finding("schema", PROBLEM, message, "fix it, then `cdkit validate`") for message in exc.messages], None
    envs = f", {len(pipeline.environments)} environment(s)" if pipeline.environments else ""
    return [Finding("schema", OK, f"valid: {len(pipeline.stages)} stage(s){envs}")], pipeline


# --- the hook --------------------------------------------------------------------------------------------


def check_hook(ctx: Context, pipeline: Pipeline | None) -> Iterator[Finding]:
    from cdkit import hook

    state = hook.hook_state(ctx.root)
    facts, problems = hook.describe(state)
    wants_hook = pipeline is not None and any("pre-push" in s.on for s in pipeline.stages)
    if not state.exists and not wants_hook:
        yield Finding("hook", NOTE, "no pre-push hook, and no stage runs on pre-push", "")
        return
    for problem in problems:
        detail, _, fix = problem.partition(": run ")
        yield Finding("hook", PROBLEM, detail, f"run {fix}" if fix else "")
    if not problems:
        yield Finding("hook", OK, f"pre-push hook installed: {state.location.hook}, interpreter {state.python} present")


# --- the tools the stages call ------------------------------------------------------------------------------


def first_program(command: str) -> str | None:
    """The program a shell command starts with (after `VAR=value` words), or None when it is the shell's own."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    for word in words:
        if "=" in word and not word.startswith(("=", "/", ".")) and word.split("=", 1)[0].isidentifier():
            continue
        return None if word in SHELL_WORDS else word
    return None


def check_tools(ctx: Context, pipeline: Pipeline | None,
                which: Callable[[str], str | None] = shutil.which) -> Iterator[Finding]:
    if pipeline is None:
        return
    commands = [(f"stage {s.name}", s.run, ctx.root / (s.working_directory or ".")) for s in pipeline.stages]
    commands += [(f"environment {e.name} (deploy)", e.deploy, ctx.root) for e in pipeline.environments]
    path = ctx.environ.get("PATH")
    missing = 0
    for who, command, cwd in commands:
        program = first_program(command)
        if program is None:
            continue
        if "/" in program:
            target = cwd / program
            if not (target.is_file() and os.access(target, os.X_OK)):
                missing += 1
                yield Finding("tools", PROBLEM, f"{who} runs {program}, which is not an executable file in {cwd}",
                              f"create it, or `chmod +x {program}`")
        elif (which(program) if path is None else shutil.which(program, path=path)) is None:
            missing += 1
            yield Finding("tools", PROBLEM, f"{who} runs `{program}`, which is not on PATH",
                          f"install {program}, or change the command in {ctx.config_path.name if ctx.config_path else DEFAULT_CONFIG}")
    if not missing:
        yield Finding("tools", OK, "every program the stages and deploys start is on PATH")


# --- GitHub -----------------------------------------------------------------------------------------------------


def _without_credentials(url: str) -> str:
    """A remote URL as it may be shown: `https://user:token@host/x` loses its user part."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def check_github(ctx: Context) -> Iterator[Finding]:
    from cdkit.credentials import resolve_token
    from cdkit.github import resolve_api_url, resolve_repository
    from cdkit.remote import parse_repository

    url = git.remote_url("origin", cwd=ctx.root)
    repository = resolve_repository(ctx.environ, cwd=ctx.root)
    if url is None and repository is None:
        yield Finding("remote", NOTE, "no remote `origin`: results stay in the local ledger",
                      "add one with `git remote add origin https://github.com/OWNER/NAME.git`")
        return
    if url is not None:
        shown = _without_credentials(url)
        owner_name = parse_repository(url)
        on_github = owner_name is not None and ("github.com" in url or "GITHUB_API_URL" in ctx.environ)
        yield Finding("remote", OK if on_github else NOTE,
                      f"origin: {shown}" + (f" (GitHub repository {owner_name})" if on_github else
                                            " (not GitHub: stage results are not reported anywhere but the ledger)"))
    token = resolve_token(None, ctx.environ)
    if token is None:
        yield Finding("token", NOTE, "no GITHUB_TOKEN or GH_TOKEN: stage results are not reported to GitHub",
                      "export GITHUB_TOKEN (e.g. `export GITHUB_TOKEN=$(gh auth token)`) to report them")
        return
    if repository is None:
        yield Finding("token", NOTE, "a token is set but no GitHub repository is known", "set GITHUB_REPOSITORY=OWNER/NAME")
        return
    yield from _check_token(ctx, token, repository, resolve_api_url(ctx.environ))


def _check_token(ctx: Context, token: str, repository: str, api_url: str) -> Iterator[Finding]:
    from cdkit.github import GitHubClient, GitHubDeferred, GitHubError, RetryPolicy, token_kind

    client = GitHubClient(token, api_url=api_url, policy=RetryPolicy(max_wait=5.0, attempts=2), environ=ctx.environ)
    try:
        headers, data = client.request("GET", f"/repos/{repository}", what=f"read the repository {repository}")
    except (GitHubError, GitHubDeferred) as exc:
        yield Finding("token", PROBLEM, client.redact(str(exc)),
                      "check the token (`gh auth status`) and that it can read the repository")
        return
    finally:
        client.close()
    lowered = {k.lower(): v for k, v in headers.items()}
    scopes_header = lowered.get("x-oauth-scopes")
    kind = {"app": "a GitHub App or Actions token", "personal": "a personal access token"}.get(token_kind(token),
                                                                                              "a token")
    if scopes_header is None:
        where = ("in Actions, the workflow's `permissions:` say what it may do" if ctx.environ.get("GITHUB_ACTIONS")
                 == "true" else "GitHub lists no scopes for this kind of token (fine-grained or app)")
        yield Finding("token", OK, f"{kind} that can read {repository}; {where}")
        return
    scopes = [s.strip() for s in scopes_header.split(",") if s.strip()]
    if not {"repo", "public_repo", "repo:status"} & set(scopes):
        yield Finding("token", PROBLEM, f"{kind} with scopes {', '.join(scopes) or '(none)'}: it cannot post commit "
                      "statuses", "create a token with the `repo` scope (`public_repo` for a public repository)")
        return
    private = isinstance(data, dict) and data.get("private") is True
    if private and "repo" not in scopes and "repo:status" not in scopes:
        yield Finding("token", PROBLEM, f"{repository} is private but the token's scopes are {', '.join(scopes)}",
                      "create a token with the `repo` scope")
        return
    yield Finding("token", OK, f"{kind} with scopes {', '.join(scopes)}: enough for commit statuses on {repository}")


# --- the ledger and the work tree -------------------------------------------------------------------------


def check_ledger(ctx: Context) -> Iterator[Finding]:
    import sqlite3

    from cdkit.ledger import LEDGER_NAME

    path = ctx.cdkit_dir / LEDGER_NAME
    if not path.exists():
        yield Finding("ledger", OK, f"no ledger yet ({path} is created by the first run)")
        return
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            pending = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
            runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        yield Finding("ledger", PROBLEM, f"{path} cannot be read: {exc}",
                      "move it aside (cdkit starts a new one) and report how it happened")
        return
    if verdict != "ok":
        yield Finding("ledger", PROBLEM, f"{path} is damaged: {verdict}", "move it aside (cdkit starts a new one)")
        return
    yield Finding("ledger", OK, f"{path}: healthy, {runs} run(s) recorded")
    if pending:
        yield Finding("outbox", PROBLEM, f"{pending} report(s) wait in the outbox: GitHub has not seen them",
                      "run `cdkit sync` (with GITHUB_TOKEN set)")
    else:
        yield Finding("outbox", OK, "no report waiting in the outbox")


def check_setaside(ctx: Context) -> Iterator[Finding]:
    from cdkit import setaside

    warning = setaside.pending_warning(str(ctx.root))
    if warning:
        yield Finding("setaside", PROBLEM, warning.split(";")[0], "run `cdkit hook recover`")


def check_environments(pipeline: Pipeline | None) -> Iterator[Finding]:
    if pipeline is None:
        return
    for env in pipeline.environments:
        if env.mode == "delivery":
            how = f"delivery: {env.approval.required} approval(s) via {env.approval.via}"
        else:
            how = "deployment: every passing commit on " + pipeline.release_branch
        yield Finding("environments", OK, f"{env.name}: {how}; deploys with `{env.deploy}`")


# --- the command ------------------------------------------------------------------------------------------------


def diagnose(ctx: Context) -> list[Finding]:
    findings = list(check_config(ctx))
    schema, pipeline = check_schema(ctx)
    findings += schema
    for more in (check_hook(ctx, pipeline), check_tools(ctx, pipeline), check_github(ctx), check_ledger(ctx),
                 check_setaside(ctx), check_environments(pipeline)):
        findings += list(more)
    return findings


def doctor(*, config: str | None, as_json: bool, environ: Mapping[str, str] = os.environ,
           cwd: str | os.PathLike[str] | None = None) -> int:
    repo = git.find_repo(cwd)
    if repo.root is None:
        from cdkit.errors import UsageError

        raise UsageError(f"{repo.git_dir}: a bare repository has no work tree; run cdkit doctor in a clone")
    config_path = _config_path(repo.root, config, cwd)
    ctx = Context(repo.root, repo.git_dir, repo.cdkit_dir, config_path, environ)
    findings = diagnose(ctx)
    problems = [f for f in findings if f.status == PROBLEM]
    if as_json:
        jsondoc.write("doctor", {"ok": not problems, "checks": [f._asdict() for f in findings]})
    else:
        _print(findings, problems)
    return EXIT_FAILED if problems else EXIT_OK


def _config_path(root: Path, config: str | None, cwd: str | os.PathLike[str] | None) -> Path | None:
    if config:
        path = (Path(cwd) if cwd else Path.cwd()) / config
        return path if path.is_file() else None
    present = [root / name for name in CONFIG_NAMES if (root / name).is_file()]
    return present[0] if present else None


def _print(findings: list[Finding], problems: list[Finding]) -> None:
    marks = {OK: "ok     ", NOTE: "note   ", PROBLEM: "PROBLEM"}
    for f in findings:
        output.write_line(f"{marks[f.status]} {f.check}: {f.detail}")
        if f.fix and f.status != OK:
            output.write_line(f"        fix: {f.fix}")
    if problems:
        output.write_line(f"\n{len(problems)} problem(s) to fix (exit 1)")
    else:
        output.write_line("\nall well")
