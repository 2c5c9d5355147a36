"""One pipeline run from a Trigger: plan it, pick where it runs, record it, report it.

`cdkit run`, the pre-push hook and the Action all come through `run_trigger`, so a
stage behaves the same wherever it runs.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from cdkit import git, setaside, treewatch
from cdkit.config import Pipeline, decode_config, find_config, load_text
from cdkit.errors import UsageError
from cdkit.events import Trigger
from cdkit.ledger import Ledger, LedgerError
from cdkit.logs import Retention, prune_if_due, run_log_dir
from cdkit.plan import Plan, make_plan, parse_skip
from cdkit.report.ledger import LedgerReporter
from cdkit.runner import CANCELLED, DEFAULT_KILL_GRACE, Reporter, RunContext, Runner, StageResult, cancel_on_signals, overall_status

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

    from cdkit.treewatch import EarlyWalk
else:
    from cdkit.ntuple import NamedTuple


class Workspace(NamedTuple):
    repo: git.Repo
    root: Path
    config_path: Path


def find_workspace(config: str | None, cwd: str | os.PathLike[str] | None = None) -> Workspace:
    """The repository around `cwd` and its pipeline file (`--config` is relative to `cwd`)."""
    repo = git.find_repo(cwd)
    if repo.root is None:
        raise UsageError(f"{repo.git_dir}: a bare repository has no work tree to run stages in")
    base = Path(cwd) if cwd else Path.cwd()
    config_path = (base / config) if config else find_config(repo.root)
    return Workspace(repo=repo, root=repo.root, config_path=config_path)


def open_ledger(repo: git.Repo, *, clock: Callable[[], float] | None = None) -> Ledger:
    """The repository's ledger; `clock` is for tests in this process only (no option or variable sets it)."""
    try:
        return Ledger.for_dir(repo.cdkit_dir, clock=clock)
    except LedgerError as exc:
        raise UsageError(str(exc)) from None


class Where(NamedTuple):
    """Where a run's stages run, and why."""

    mode: str  # WORK_TREE, IN_PLACE or WORKTREE
    dirty: bool  # the run cannot count for a release
    why: str = ""  # why a temporary worktree (a tree that cannot be judged in place)
    early: EarlyWalk | None = None  # the clean work tree walked before its `git status` (treewatch.walk_early)

    @property
    def in_work_tree(self) -> bool:
        return self.mode != WORKTREE

    def describe(self, sha: str) -> str:
        if self.mode == WORK_TREE:
            return "in the work tree" + (" as it is (uncommitted changes included: the run does not count)"
                                         if self.dirty else "")
        if self.mode == IN_PLACE:
            return (f"in the work tree, checked out at {sha[:12]} (your uncommitted work is set aside and put back "
                    "afterwards)")
        return f"in a temporary worktree at {sha[:12]} ({self.why}: the run does not count for a release)"


WORK_TREE, IN_PLACE, WORKTREE = "work tree", "in place", "worktree"


class RunOutcome(NamedTuple):
    run_id: int
    plan: Plan
    results: list[StageResult]
    status: str
    workdir: Path
    in_place: bool
    notes: tuple[str, ...] = ()  # what became of files the stages changed, for the console

    @property
    def exit_code(self) -> int:
        return {"passed": 0, CANCELLED: 130}.get(self.status, 1)


def choose_in_place(ws: Workspace, trigger: Trigger, *, allow_dirty: bool) -> tuple[bool, bool]:
    """(run in the work tree as it is?, is the work tree dirty?)."""
    where = choose_where(ws, trigger, allow_dirty=allow_dirty)
    return where.mode == WORK_TREE, where.dirty


def choose_where(ws: Workspace, trigger: Trigger, *, allow_dirty: bool, early_walk: bool = False) -> Where:
    """Where the stages judge `trigger.head_sha`.

    - The work tree as it is, when HEAD is that commit and nothing is uncommitted (the
      common push: no cost at all), or when the user asked to test the work tree as it is
      (`cdkit run` without --head), in which case the run is dirty and gates ignore it.
    - Otherwise the work tree itself, checked out at the commit with the user's work set
      aside (`cdkit.setaside`): tools that recorded the work tree's path (editable
      installs) see the commit's code, so the verdict is the commit's.
    - A tree that cannot be switched safely (sparse checkout, skip-worktree or
      assume-unchanged entries, a merge in progress) runs in a temporary worktree, and the
      run is dirty: an editable install there would still point at the work tree.
    """
    # Both git reads at once: nearly every answer below needs the listing as well as the status.
    listing = setaside.start_listing(ws.root)
    try:
        # With `early_walk` (stages will run), the tree is walked first: a tree found clean then needs
        # no `git status` when the first stage ends (see treewatch.walk_early).
        early = treewatch.walk_early(ws.root, ws.repo.git_dir) if early_walk else None
        head, clean, ignored = git.work_tree_status(ws.root, ignored=early_walk)
    except BaseException:
        listing.abandon()
        raise
    at_head = head == trigger.head_sha
    if at_head and clean:
        # Clean by `git status` is not clean when git was told not to look at some files.
        why = setaside.hidden_files(ws.root, ws.repo.git_dir, listing)
        if why:
            return Where(WORKTREE, True, why)
        return Where(WORK_TREE, False, early=treewatch.confirm(early, ws.repo.git_dir, ignored) if early_walk else None)
    if at_head and allow_dirty:
        listing.abandon()
        return Where(WORK_TREE, True)
    why = setaside.cannot_switch(ws.root, ws.repo.git_dir, listing)
    return Where(WORKTREE, True, why) if why else Where(IN_PLACE, False)


def run_trigger(
    ws: Workspace,
    pipeline: Pipeline,
    trigger: Trigger,
    *,
    ledger: Ledger,
    reporters: Sequence[Reporter],
    environ: Mapping[str, str],
    jobs: int | None = None,
    only: Sequence[str] = (),
    allow_dirty: bool = False,
    kill_grace: float | None = None,
    on_workdir: Callable[[Path, Where], None] | None = None,
    pipeline_fixed: bool = False,
    rename: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Plan, run, record and report `trigger` with `pipeline`.

    Outside the work tree the stages are the judged commit's committed ones, unless
    `pipeline_fixed`: the caller already chose the committed pipeline that judges it
    (a pull request is judged by its base branch's, never by the one it proposes).
    """
    if setaside.pending(ws.repo.git_dir) is not None:
        raise setaside.SetAsideError(setaside.busy_message(setaside.paths_for(ws.root, ws.repo.git_dir)))
    skip = parse_skip(environ.get("CDKIT_SKIP"))
    where = choose_where(ws, trigger, allow_dirty=allow_dirty, early_walk=True)
    dirty = where.dirty
    if where.mode != WORK_TREE and not pipeline_fixed:
        pipeline, committed_dirty = _committed_pipeline(ws, trigger.head_sha, pipeline)
        dirty = dirty or committed_dirty
    if rename:  # a shard of a stage runs, and is recorded and reported, as a stage of its own
        pipeline = _renamed(pipeline, rename)
    unknown = sorted((set(only) | skip) - {s.name for s in pipeline.stages})
    if unknown:
        names = ", ".join(s.name for s in pipeline.stages)
        raise UsageError(f"unknown stage(s) {', '.join(unknown)} (in --stage or CDKIT_SKIP); stages are: {names}")
    plan = make_plan(pipeline, trigger, skip=skip, only=only,
                     symlinks=lambda: git.symlinks(trigger.head_sha, ws.root))
    run_id = ledger.start_run(trigger=trigger.kind, event=trigger.event, sha=trigger.head_sha,
                              base_sha=trigger.base_sha, ref=trigger.ref, dirty=dirty,
                              config_path=str(ws.config_path))
    log_dir, changed = run_log_dir(ws.repo.cdkit_dir, run_id, trigger.changed_files)
    extra_env = {
        "CDKIT_SHA": trigger.head_sha,
        "CDKIT_BASE_SHA": trigger.base_sha or "",
        "CDKIT_REF": trigger.ref or "",
        "CDKIT_RUN_ID": str(run_id),
        "CDKIT_TRIGGER": trigger.kind,
        "CDKIT_CHANGED_FILES": str(changed),
    }
    notes: list[str] = []
    with _stage_tree(ws, trigger.head_sha, where, log_dir, notes) as tree:
        if on_workdir is not None:
            on_workdir(tree.paths.root, where)  # say where the stages run
        results = _run_stages(plan, tree, ledger, reporters, run_id=run_id, log_dir=log_dir,
                              environ=environ, jobs=jobs, kill_grace=kill_grace, extra_env=extra_env)
    workdir = tree.paths.root
    status = overall_status(results)
    ledger.finish_run(run_id, status)
    prune_if_due(ws.repo.cdkit_dir, Retention(pipeline.logs_keep, pipeline.logs_max_size), protect=[run_id])
    return RunOutcome(run_id, plan, results, status, workdir, where.in_work_tree, tuple(notes))


class _StageTree(NamedTuple):
    paths: setaside.Paths  # where the stages run
    in_place: setaside.InPlace | None  # the user's work set aside, to come back after the stages
    clean_at: str | None = None  # the tree is known to be exactly this commit, nothing else in it
    early: EarlyWalk | None = None  # and was walked just before `git status` said so


def _run_stages(plan: Plan, tree: _StageTree, ledger: Ledger, reporters: Sequence[Reporter], *,
                run_id: int, log_dir: Path, environ: Mapping[str, str], jobs: int | None, kill_grace: float | None,
                extra_env: Mapping[str, str]) -> list[StageResult]:
    known = tree.in_place.manifest.target_tree if tree.in_place and tree.in_place.manifest else None
    watch = treewatch.TreeWatch(tree.paths, tree=known, clean_at=tree.clean_at, early=tree.early)
    ctx = RunContext(run_id=run_id, workdir=tree.paths.root, log_dir=log_dir,
                     environ=git.stage_environment(dict(environ)), jobs=jobs or os.cpu_count() or 2,
                     kill_grace=kill_grace if kill_grace is not None else _kill_grace(environ))
    runner = Runner(plan, ctx, [LedgerReporter(ledger, run_id), *reporters], extra_env=extra_env,
                    check_result=watch.check)
    try:
        with cancel_on_signals(runner.cancel):
            return runner.run()
    finally:
        watch.close()
        if tree.in_place is not None:
            tree.in_place.final_tree = watch.tree  # the last stage's check saw the tree as it is left


@contextlib.contextmanager
def _stage_tree(ws: Workspace, sha: str, where: Where, log_dir: Path, notes: list[str]) -> Iterator[_StageTree]:
    """The tree the stages run in, for as long as they run (see `choose_where`)."""
    if where.mode == WORK_TREE:
        yield _StageTree(setaside.paths_for(ws.root, ws.repo.git_dir), None, None if where.dirty else sha,
                         where.early)  # set only for a clean tree
    elif where.mode == WORKTREE:
        with git.temporary_worktree(sha, cwd=ws.root) as path:
            yield _StageTree(setaside.paths_for(path), None, sha)
    else:
        with setaside.InPlace(setaside.paths_for(ws.root, ws.repo.git_dir), sha, log_dir) as handle:
            yield _StageTree(handle.p, handle)
        notes.extend(handle.leftovers.notes())


def _renamed(pipeline: Pipeline, names: Mapping[str, str]) -> Pipeline:
    stages = tuple(s._replace(name=names.get(s.name, s.name), needs=tuple(names.get(n, n) for n in s.needs))
                   for s in pipeline.stages)
    return pipeline._replace(stages=stages)


def _committed_pipeline(ws: Workspace, sha: str, work_tree: Pipeline) -> tuple[Pipeline, bool]:
    """(the pipeline `sha` itself commits, whether the run must count as dirty).

    A run in a temporary worktree judges a commit, so the stages must be that commit's
    too: an uncommitted edit of `.cdkit.yml` (say, `run: "true"`) must not pass it. A
    commit without the file (older than cdkit, or a config outside the repository) is
    judged by the work tree's file, and such a run never counts for a release.
    """
    try:
        committed = load_pipeline_at(ws, sha)
    except UsageError:
        committed = None  # --config outside the repository: nothing committed to read
    return (work_tree, True) if committed is None else (committed, False)


def _kill_grace(environ: Mapping[str, str]) -> float:
    """Seconds between TERM and KILL on a timeout or cancel (CDKIT_KILL_GRACE, default 5)."""
    try:
        grace = float(environ.get("CDKIT_KILL_GRACE", DEFAULT_KILL_GRACE))
    except ValueError:
        grace = float("nan")
    if not 0 <= grace < 3600:  # also refuses nan and inf: the KILL must come
        raise UsageError(f"CDKIT_KILL_GRACE={environ['CDKIT_KILL_GRACE']!r} is not a number of seconds "
                         "from 0 to 3600")
    return grace


def load_pipeline_at(ws: Workspace, rev: str) -> Pipeline | None:
    """The pipeline file as committed in `rev` (None when that commit has none).

    A pull request must not be judged by a `.cdkit.yml` it edits itself: weakening a
    stage would turn its own checks green.
    """
    try:
        relative = ws.config_path.resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"{ws.config_path}: the pipeline file must be inside the repository ({ws.root})") from None
    raw = git.file_at(rev, relative, cwd=ws.root)
    if raw is None:
        return None
    name = f"{relative} at {rev[:12]}"
    return load_text(decode_config(raw, name), name)


def load_pipeline(ws: Workspace) -> Pipeline:
    """The work tree's pipeline, validated in full; reused, as the hook reuses it, while its bytes are the same.

    The cache spares a command the PyYAML import (about 14 ms) and the parse; any edit is a miss.
    """
    from cdkit.hook_entry import PIPELINE_CACHE, load_pipeline_cached

    return load_pipeline_cached(ws.config_path, ws.repo.cdkit_dir / PIPELINE_CACHE)
