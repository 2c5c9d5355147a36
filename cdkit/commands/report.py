"""`cdkit report -o report.html`: the metrics, charts and history as one page that opens offline."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cdkit import output
from cdkit.commands.history import deployment_data, read_history
from cdkit.commands.metrics import DEFAULT_SINCE, compute_metrics, metrics_data
from cdkit.errors import UsageError
from cdkit.history.records import in_window


def report(*, config: str | None, environment: str | None, since: str | None, source: str, token: str | None,
           output_path: str, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.time,
           cwd: str | os.PathLike[str] | None = None) -> int:
    from cdkit.history.report import render

    now = clock()
    found, start = read_history(config=config, source=source, environment=environment,
                                since=since or DEFAULT_SINCE, token=token, environ=environ, now=now, cwd=cwd)
    results = compute_metrics(found, start=start, now=now)
    doc = metrics_data(found, results, start=start, now=now, environment=environment)
    rows = [deployment_data(found, d) for d in reversed(in_window(found.deployments, start, now))]
    title = f"Delivery report: {found.repository or Path(found.root or '.').resolve().name}"
    page = render(title=title, metrics_doc=doc, results=results, history=rows)
    target = Path(cwd or ".") / output_path
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the report to {target}: {exc.strerror}") from None
    output.write_line(f"wrote {target} ({len(page) // 1024} KiB, {len(results)} environment(s), "
                      f"{len(rows)} deployment(s))")
    return 0
