"""Records every stage event in the ledger, written out before the runner waits for the next one."""
from __future__ import annotations

from cdkit.config import Stage
from cdkit.ledger import Ledger, StageRow
from cdkit.runner import StageResult


class LedgerReporter:
    """A stage's start and end, held until the runner waits (`waiting`), then written in one statement.

    One stage ending and the next one starting are one write instead of two: a ledger
    commit costs more than the statement in it. Nothing is held while the runner waits,
    so whoever reads the ledger then (`cdkit status`, a crash) sees every stage as it is.
    """

    def __init__(self, ledger: Ledger, run_id: int) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self._held: dict[str, StageRow] = {}  # by stage: a later event replaces an earlier one

    def stage_started(self, stage: Stage, started_at: float) -> None:
        self._held[stage.name] = StageRow(stage.name, "running", started_at=started_at, command=stage.run)

    def stage_output(self, stage: Stage, chunk: bytes) -> None:
        pass  # the runner keeps the full log file; the ledger keeps its path

    def stage_finished(self, stage: Stage, result: StageResult) -> None:
        self._held[stage.name] = StageRow(
            stage.name, result.status, reason=result.reason, exit_code=result.exit_code,
            started_at=result.started_at, finished_at=result.finished_at, log_path=result.log_path,
            command=result.command)

    def waiting(self) -> None:
        if self._held:
            rows, self._held = list(self._held.values()), {}
            self.ledger.record_stages(self.run_id, rows)

    def run_finished(self) -> None:
        self.waiting()  # the caller records the run's own outcome
