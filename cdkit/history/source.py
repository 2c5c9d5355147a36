"""Where a history comes from: the ledger in this repository's git dir, or GitHub; plus the commits.

Both sources give the same records, so `history`, `metrics`, `report` and `audit` do not
care which one they read.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cdkit import git
from cdkit.errors import UsageError
from cdkit.history import chain
from cdkit.history.changes import Change, changes_by_deployment
from cdkit.history.records import Deployment, load_ledger
from cdkit.ledger import Ledger

if TYPE_CHECKING:
    from cdkit.github import GitHubClient

SOURCES = ("ledger", "github")


@dataclass(frozen=True)
class History:
    source: str
    deployments: list[Deployment]  # every deployment read, oldest first (the window is applied later)
    changes: dict[str, list[Change]]  # per live deployment: what it first brought to its environment
    graph: Mapping[str, git.CommitNode] = field(default_factory=dict)
    root: Path | None = None  # the repository the commits come from
    repository: str | None = None
    requests: int | None = None  # GitHub requests made (None for the ledger)

    def commit_count(self, d: Deployment) -> int | None:
        """How many commits `d` brought, or tried to bring (a failed one); None when unknown."""
        if d.key in self.changes and d.previous_sha:
            return sum(len(c.commits) for c in self.changes[d.key])
        if self.root is None or not d.previous_sha or d.sha not in self.graph or d.previous_sha not in self.graph:
            return None
        return len(git.commits_in_range(d.previous_sha, d.sha, cwd=self.root))

    @property
    def fix_detection(self) -> bool:
        """Whether every live deployment's commits were available to look for fixes."""
        return all(d.sha in self.graph for d in self.deployments if d.live)


def seal_runs(ledger: Ledger) -> None:
    """Seal the finished runs the hook left unsealed, so what the history shows is covered by the chain."""
    with ledger.transaction() as db:
        chain.seal_pending(db, ledger.clock())


def _graph(root: Path, deployments: list[Deployment]) -> dict[str, git.CommitNode]:
    shas = sorted({d.sha for d in deployments if git.is_oid(d.sha)})
    return git.commit_graph(shas, cwd=root) if shas else {}


def from_ledger(ledger: Ledger, root: Path, *, environment: str | None) -> History:
    seal_runs(ledger)
    deployments = load_ledger(ledger.db, environment=environment)
    graph = _graph(root, deployments)
    return History("ledger", deployments, changes_by_deployment(deployments, graph), graph, root)


def from_github(root: Path, environ: Mapping[str, str], *, token: str | None, environment: str | None,
                since: float | None, max_wait: float = 60.0, limit: int | None = None,
                client: GitHubClient | None = None) -> History:
    """GitHub's deployments of the repository (GITHUB_REPOSITORY, else origin's URL) with `--token`/GITHUB_TOKEN.

    `client`: one this process already talks to GitHub through (the release's), whose
    remembered reads answer what is still current; left open. `requests` counts this read's only.
    """
    from cdkit.github import GitHubClient, resolve_repository
    from cdkit.history.github_source import load_github

    own = client is None
    client = client or GitHubClient.from_environment(environ, token=token, max_wait=max_wait)
    if client is None:
        raise UsageError("--source github needs a token: set GITHUB_TOKEN (or GH_TOKEN), or pass --token")
    repository = resolve_repository(environ, cwd=root)
    if repository is None:
        raise UsageError("--source github needs the repository: set GITHUB_REPOSITORY=owner/name, "
                         "or add a GitHub `origin` remote")
    before = client.stats.requests
    try:
        with client.waiting_at_most(max_wait):
            deployments = load_github(client, repository, environment=environment, since=since, limit=limit)
    finally:
        if own:
            client.close()
    graph = _graph(root, deployments)
    return History("github", deployments, changes_by_deployment(deployments, graph), graph, root,
                   repository=repository, requests=client.stats.requests - before)


def load(root: Path, ledger_dir: Path, *, source: str, environment: str | None, since: float | None,
         token: str | None, environ: Mapping[str, str]) -> History:
    """The history from `source` ("ledger" or "github")."""
    if source == "github":
        return from_github(root, environ, token=token, environment=environment, since=since)
    try:
        ledger = Ledger.for_dir(ledger_dir)
    except Exception as exc:  # noqa: BLE001 - LedgerError and sqlite errors alike: say where, exit 2
        raise UsageError(str(exc)) from None
    with ledger:
        return from_ledger(ledger, root, environment=environment)
