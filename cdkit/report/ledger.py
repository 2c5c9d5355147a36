"""Records every stage event in the ledger as it happens."""
from __future__ import annotations

from cdkit.config import Stage
from cdkit.ledger import Ledger
from cdkit.runner import StageResult


class LedgerReporter:
    def __init__(self, ledger: Ledger, run_id: int) -> None:
        self.ledger = ledger
        self.run_id = run_id

    def stage_started(self, stage: Stage, started_at: float) -> None:
        self.ledger.record_stage(self.run_id, stage.name, status="running", started_at=started_at, command=stage.run)

    def stage_output(self, stage: Stage, chunk: bytes) -> None:
        pass  # the runner keeps the full log file; the ledger keeps its path

    def stage_finished(self, stage: Stage, result: StageResult) -> None:
        self.ledger.record_stage(
            self.run_id, stage.name, status=result.status, reason=result.reason, exit_code=result.exit_code,
            started_at=result.started_at, finished_at=result.finished_at, log_path=result.log_path,
            command=result.command,
        )

    def run_finished(self) -> None:
        pass  # the caller records the run's own outcome
