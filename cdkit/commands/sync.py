"""`cdkit sync`: deliver the outbox (reports GitHub has not accepted yet), each exactly once."""
from __future__ import annotations

import os
from collections.abc import Mapping

from cdkit import jsondoc, output
from cdkit.errors import EXIT_FAILED, EXIT_OK, UsageError
from cdkit.session import find_workspace, open_ledger


def sync(*, config: str | None, token: str | None, max_wait: float, as_json: bool,
         environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    with open_ledger(ws.repo) as ledger:
        waiting = len(ledger.pending())
        if waiting == 0:
            _show(as_json, {"delivered": 0, "pending": 0, "failed": 0, "superseded": 0, "requests": 0,
                            "slept": 0.0, "errors": [], "notes": []}, "cdkit: nothing to deliver")
            return EXIT_OK
        from cdkit.github import GitHubClient  # PyGithub only when there is something to send
        from cdkit.outbox import DeliveryState, deliver_pending

        client = GitHubClient.from_environment(environ, token=token, max_wait=max_wait)
        if client is None:
            raise UsageError(f"{waiting} report(s) wait in the outbox but there is no GitHub token: "
                             "set GITHUB_TOKEN or GH_TOKEN (or pass --token)")
        state = DeliveryState()
        try:
            summary = deliver_pending(ledger, client, state)
        finally:
            client.close()
    data = {"delivered": summary.delivered, "pending": summary.pending, "failed": summary.failed,
            "superseded": summary.superseded, "requests": summary.requests, "slept": round(summary.slept, 3),
            "errors": list(summary.errors), "notes": list(state.notes)}
    lines = [f"cdkit: {note}" for note in state.notes]
    lines.append(f"cdkit: delivered {summary.delivered} report(s) in {summary.requests} request(s)")
    if summary.pending:
        lines.append(f"cdkit: {summary.pending} report(s) still waiting; run `cdkit sync` again later")
    if summary.failed:
        lines.append(f"cdkit: {summary.failed} report(s) refused by GitHub (not retried)")
    lines += [f"  {error}" for error in dict.fromkeys(summary.errors)]
    _show(as_json, data, "\n".join(lines))
    return EXIT_OK if summary.ok else EXIT_FAILED


def _show(as_json: bool, data: dict[str, object], text: str) -> None:
    if as_json:
        jsondoc.write("sync", data)
    else:
        output.write_line(text)
