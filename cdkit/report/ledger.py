"""Records every stage event in the ledger, in batches at most HOLD seconds late."""
from __future__ import annotations

import time

from cdkit.config import Stage
from cdkit.ledger import Ledger
from cdkit.runner import StageResult

HOLD = 0.05  # seconds a stage's start or end may wait to be written with others


class LedgerReporter:
    """Stage starts and ends, held for up to HOLD seconds, then written in one statement.

    A ledger commit costs more than the rows in it, so 100 quick stages are a few writes
    rather than 200. Whoever reads the ledger (`cdkit status`) sees a stage at most HOLD
    seconds after it started or ended; `run_finished` writes whatever is left, before the
    run's own outcome is recorded, and a crash loses no more than HOLD seconds of stage
    rows of a run that is then shown as interrupted.
    """

    def __init__(self, ledger: Ledger, run_id: int) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self._held: dict[str, StageResult] = {}  # by stage: a later event replaces an earlier one
        self._since = 0.0  # when the oldest held row came

    def _hold(self, row: StageResult) -> None:
        if not self._held:
            self._since = time.monotonic()
        self._held[row.stage] = row

    def stage_started(self, stage: Stage, started_at: float) -> None:
        self._hold(StageResult(stage.name, "running", started_at=started_at, command=stage.run))

    def stage_output(self, stage: Stage, chunk: bytes) -> None:
        pass  # the runner keeps the full log file; the ledger keeps its path

    def stage_finished(self, stage: Stage, result: StageResult) -> None:
        self._hold(result)

    def waiting(self) -> float | None:
        if not self._held:
            return None
        left = HOLD - (time.monotonic() - self._since)
        if left > 0:
            return left
        self._write()
        return None

    def _write(self) -> None:
        if self._held:
            rows, self._held = list(self._held.values()), {}
            self.ledger.record_stages(self.run_id, rows)

    def run_finished(self) -> None:
        self._write()  # the caller records the run's own outcome next
