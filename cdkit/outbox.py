"""Deliver the ledger's outbox to GitHub: every report is written first, then sent, exactly once.

Used by the checks reporter (each report right after it is written), by `cdkit sync`, and
at the end of `cdkit run` (whatever earlier runs and the pre-push hook left behind).

Kinds and payloads (the contract with every producer, the hook included):

  "status"            {"repo", "sha", "state", "context", "description", "target_url", "stage", "run_id"}
                      key f"status:{repo}:{sha}:cdkit/{stage}:{run_id}" -- a stage's final status;
                      its `pending` status has the same key + ":pending" and "phase": "pending".
  "check_run.create"  {"repo", "sha", "stage", "run_id", "body": <POST /check-runs body>, "fallback": {...}|None}
                      key f"check_run:{repo}:{sha}:cdkit/{stage}:{run_id}"
  "check_run.update"  {"repo", "sha", "stage", "run_id", "create_key", "body": <PATCH body>,
                       "annotations_total": int|None, "fallback": {...}|None}
                      key <create key> + ":complete", or + ":annotations:<n>" for later batches

`fallback` ({"state", "description", "target_url"}) is the commit status a check-run item
becomes when the token cannot create check runs (report: auto).

Exactly once: an item marked delivered is never sent again; an item whose send may have
reached GitHub (crash, timeout, 5xx) is marked in doubt, and its next delivery first looks
for it (a check run by external_id, a status by context and content). An update waits
for its create (it needs the check run's id); a `pending` status whose final status is
already known is superseded rather than sent after it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdkit.github import GitHubClient, GitHubDeferred, GitHubError, GitHubRefused
from cdkit.ledger import Ledger, OutboxItem

DELIVERED, PENDING, BLOCKED, FAILED, SUPERSEDED = "delivered", "pending", "blocked", "failed", "superseded"
STATUS, CHECK_RUN_CREATE, CHECK_RUN_UPDATE = "status", "check_run.create", "check_run.update"
KINDS = (STATUS, CHECK_RUN_CREATE, CHECK_RUN_UPDATE)


def status_key(repo: str, sha: str, stage: str, run_id: int | str, *, pending: bool = False) -> str:
    return f"status:{repo}:{sha}:cdkit/{stage}:{run_id}" + (":pending" if pending else "")


def check_run_key(repo: str, sha: str, stage: str, run_id: int | str) -> str:
    return f"check_run:{repo}:{sha}:cdkit/{stage}:{run_id}"


@dataclass
class DeliveryState:
    """What one process has learned while delivering (shared by the reporter and sync)."""

    statuses_only: bool = False  # check runs were refused (a personal token): use commit statuses
    stopped: GitHubError | None = None  # unreachable, rate limited or a bad token: stop sending for now
    unknown_shas: set[str] = field(default_factory=set)  # commits GitHub has not seen yet (not pushed)
    notes: list[str] = field(default_factory=list)  # one-time messages for the user
    errors: list[str] = field(default_factory=list)  # refusals and deferrals, redacted


@dataclass(frozen=True)
class SyncSummary:
    delivered: int
    pending: int
    failed: int
    superseded: int
    errors: tuple[str, ...]
    requests: int
    slept: float

    @property
    def ok(self) -> bool:
        return self.pending == 0 and self.failed == 0


def deliver_pending(ledger: Ledger, client: GitHubClient, state: DeliveryState | None = None) -> SyncSummary:
    """Send every pending item, oldest first; stop early when GitHub is unreachable or rate limited."""
    state = state or DeliveryState()
    counts = {DELIVERED: 0, PENDING: 0, FAILED: 0, SUPERSEDED: 0}
    for item in ledger.pending():
        if state.stopped is not None or item.payload.get("sha") in state.unknown_shas:
            counts[PENDING] += 1
            continue
        current = ledger.outbox_item(item.key)  # an earlier item may have converted or superseded it
        if current is None or current.state != PENDING:
            continue
        outcome = deliver_item(ledger, client, current, state)
        counts[outcome] = counts.get(outcome, 0) + 1
    return SyncSummary(
        delivered=counts[DELIVERED], pending=counts[PENDING] + counts.get(BLOCKED, 0), failed=counts[FAILED],
        superseded=counts[SUPERSEDED], errors=tuple(state.errors), requests=client.stats.requests,
        slept=client.stats.slept,
    )


def deliver_item(ledger: Ledger, client: GitHubClient, item: OutboxItem, state: DeliveryState) -> str:
    """Send one item; return delivered, pending (deferred), blocked, failed or superseded.

    The item is claimed first: another process delivering the same outbox at the same
    time (a run in another worktree, `cdkit sync`) skips it instead of sending it again.
    """
    claimed = ledger.claim(item.id)
    if claimed is None:
        return BLOCKED  # delivered meanwhile, or being sent by another process
    outcome = BLOCKED
    try:
        outcome = _deliver_claimed(ledger, client, claimed, state)
        return outcome
    finally:
        # Nothing was sent for a blocked item: it is no more in doubt than it was before.
        ledger.release_claim(item.id, in_doubt=claimed.in_doubt if outcome == BLOCKED else None)


def _deliver_claimed(ledger: Ledger, client: GitHubClient, item: OutboxItem, state: DeliveryState) -> str:
    if item.kind == STATUS:
        return _deliver_status(ledger, client, item, state)
    if item.kind == CHECK_RUN_CREATE:
        return _deliver_create(ledger, client, item, state)
    if item.kind == CHECK_RUN_UPDATE:
        return _deliver_update(ledger, client, item, state)
    ledger.mark_failed(item.id, f"unknown outbox kind {item.kind!r} (written by a newer cdkit?)", final=True)
    return FAILED


def _send(ledger: Ledger, item: OutboxItem, state: DeliveryState, send: Any, *,
          refused: Callable[[GitHubRefused], bool] | None = None) -> str:
    """Mark the item in doubt, send it, and record the outcome.

    `refused` may take over a refusal (the check-run -> status fallback): it returns True
    when it handled it, and the refusal is then not an error.
    """
    try:  # the claim has marked the item in doubt: a crash from here on leaves it to be looked up
        remote_id = send()
    except GitHubRefused as exc:
        ledger.mark_failed(item.id, str(exc), final=True, in_doubt=False)
        if refused is not None and refused(exc):
            return SUPERSEDED
        if exc.kind == "auth":
            state.stopped = exc  # every request would fail the same way; keep the rest for a fixed token
        state.errors.append(str(exc))
        return FAILED
    except GitHubDeferred as exc:
        ledger.mark_failed(item.id, str(exc), in_doubt=exc.in_doubt)
        if exc.stop_all:
            state.stopped = exc
        if exc.kind == "not_yet" and item.payload.get("sha"):
            state.unknown_shas.add(str(item.payload["sha"]))
        state.errors.append(str(exc))
        return PENDING
    ledger.mark_delivered(item.id, None if remote_id is None else str(remote_id))
    return DELIVERED


def _deliver_status(ledger: Ledger, client: GitHubClient, item: OutboxItem, state: DeliveryState) -> str:
    p = item.payload
    if p.get("phase") == "pending":
        final = ledger.outbox_item(status_key(p["repo"], p["sha"], p["stage"], p["run_id"]))
        if final is not None and final.state == DELIVERED:
            # Sent after the final status it would hide the result. (A final still pending is
            # queued after this one, so sending both in order is safe, and the count stays 2N.)
            ledger.mark_superseded(item.id, "the stage's final status replaces it")
            return SUPERSEDED
    return _send(ledger, item, state, lambda: client.create_status(
        p["repo"], p["sha"], state=p["state"], context=p["context"], description=p.get("description"),
        target_url=p.get("target_url"), in_doubt=item.in_doubt))


def _deliver_create(ledger: Ledger, client: GitHubClient, item: OutboxItem, state: DeliveryState) -> str:
    p = item.payload
    if p.get("fallback") and (state.statuses_only or client.token_kind == "personal"):
        if not state.statuses_only:
            _switch_to_statuses(state, "the token is a personal access token")
        return _convert_to_status(ledger, client, item, state)
    converted: list[str] = []

    def fall_back(exc: GitHubRefused) -> bool:
        # 403 on creating a check run: not a GitHub App token ("Resource not accessible by
        # integration" / "... by personal access token" / "You must authenticate via a GitHub App").
        if exc.status != 403 or not p.get("fallback"):
            return False
        _switch_to_statuses(state, "GitHub refused to create a check run with this token")
        converted.append(_convert_to_status(ledger, client, item, state))
        return True

    outcome = _send(ledger, item, state, lambda: client.create_check_run(p["repo"], p["body"],
                                                                        in_doubt=item.in_doubt),
                    refused=fall_back)
    return converted[0] if converted else outcome


def _deliver_update(ledger: Ledger, client: GitHubClient, item: OutboxItem, state: DeliveryState) -> str:
    p = item.payload
    create = ledger.outbox_item(p["create_key"])
    if create is None:
        ledger.mark_failed(item.id, "its check run was never queued", final=True)
        return FAILED
    if create.state == SUPERSEDED:  # the create went out as a commit status
        return _convert_to_status(ledger, client, item, state)
    if create.state == FAILED:
        ledger.mark_failed(item.id, f"its check run could not be created: {create.last_error}", final=True)
        return FAILED
    if create.state != DELIVERED or not create.remote_id:
        return BLOCKED  # sent after its create, in a later pass
    return _send(ledger, item, state, lambda: client.update_check_run(
        p["repo"], int(create.remote_id or 0), p["body"], expected_annotations=p.get("annotations_total"),
        in_doubt=item.in_doubt))


def _switch_to_statuses(state: DeliveryState, why: str) -> None:
    state.statuses_only = True
    state.notes.append(f"{why}, which cannot create check runs: reporting commit statuses instead "
                       "(set `report: statuses` in .cdkit.yml to skip the attempt)")


def _convert_to_status(ledger: Ledger, client: GitHubClient, item: OutboxItem, state: DeliveryState) -> str:
    """Replace a check-run item by the commit status it stands for, and deliver that."""
    p = item.payload
    fallback = p.get("fallback")
    is_batch = item.kind == CHECK_RUN_UPDATE and not item.key.endswith(":complete")
    if not fallback or is_batch:
        ledger.mark_superseded(item.id, "reported as a commit status (annotations need check runs)")
        return SUPERSEDED
    final = item.kind == CHECK_RUN_UPDATE or p["body"].get("status") == "completed"
    payload = {
        "repo": p["repo"], "sha": p["sha"], "state": fallback["state"], "context": f"cdkit/{p['stage']}",
        "description": fallback.get("description"), "target_url": fallback.get("target_url"),
        "stage": p["stage"], "run_id": p["run_id"],
    }
    if not final:
        payload["phase"] = "pending"
    key = status_key(p["repo"], p["sha"], p["stage"], p["run_id"], pending=not final)
    ledger.enqueue(key, STATUS, payload)
    ledger.mark_superseded(item.id, "sent as a commit status instead")
    status_item = ledger.outbox_item(key)
    if status_item is None or status_item.state != PENDING or state.stopped is not None:
        return SUPERSEDED if status_item is not None and status_item.state == DELIVERED else PENDING
    return deliver_item(ledger, client, status_item, state)
