"""`cdkit audit`: one change record per deployment (table, CSV, JSON, HTML); `cdkit audit verify`: the hash chain."""
from __future__ import annotations

import csv
import html
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cdkit import jsondoc, output
from cdkit.commands.history import printable, table
from cdkit.errors import UsageError
from cdkit.history import chain
from cdkit.history.audit import change_records
from cdkit.history.records import in_window
from cdkit.history.source import from_ledger
from cdkit.history.timeutil import iso, local, parse_when
from cdkit.ledger import Ledger
from cdkit.session import find_workspace

FORMATS = ("table", "csv", "json", "html")
BROKEN_EXIT = 1  # README exit codes: 1, "a check failed"; here the chain does not verify
SHOWN_PROBLEMS = 20


def _open_ledger(cdkit_dir: Path, environ: Mapping[str, str]) -> Ledger:
    try:
        return Ledger.for_dir(cdkit_dir, environ)
    except Exception as exc:  # noqa: BLE001 - LedgerError and sqlite errors alike: say where, exit 2
        raise UsageError(str(exc)) from None


def chain_data(result: chain.Verification) -> dict[str, Any]:
    first = result.problems[0] if result.problems else None
    return {"intact": result.intact, "entries": result.entries, "records_checked": result.records,
            "runs_waiting_for_seal": result.waiting, "head": result.head,
            "first_problem": first.as_data() if first else None,
            "problems": [p.as_data() for p in result.problems]}


def verify(*, config: str | None, as_json: bool, environ: Mapping[str, str] = os.environ,
           clock: Callable[[], float] = time.time, cwd: str | os.PathLike[str] | None = None) -> int:
    """Exit 0 when the ledger matches its chain, BROKEN_EXIT naming the first broken record when not."""
    ws = find_workspace(config, cwd)
    with _open_ledger(ws.repo.cdkit_dir, environ) as ledger, ledger.snapshot() as db:
        result = chain.verify(db)
    if as_json:
        jsondoc.write("audit verify", {"checked_at": iso(clock()), "ledger": str(ledger.path), **chain_data(result)})
        return 0 if result.intact else BROKEN_EXIT
    waiting = f"; {result.waiting} finished run(s) waiting for their seal" if result.waiting else ""
    if result.intact:
        output.write_line(f"audit chain intact: {result.entries} entries, {result.records} records match their "
                          f"seals{waiting}; head {result.head}")
        output.write_line("keep the head elsewhere (the CI job summary shows it): a rewrite of the whole file "
                          "changes it")
        return 0
    first = result.problems[0]
    output.write_line(f"audit chain BROKEN: first broken record: {first.where}: {first.what}")
    rest = result.problems[1:]
    if rest:
        output.write_line(f"{len(rest)} more problem(s):")
        for p in rest[:SHOWN_PROBLEMS]:
            output.write_line(f"  {p.where}: {p.what}")
        if len(rest) > SHOWN_PROBLEMS:
            output.write_line(f"  ... and {len(rest) - SHOWN_PROBLEMS} more (--json lists every one)")
    output.write_line(f"checked {result.entries} entries in {ledger.path}: the ledger was changed outside cdkit; "
                      "restore it from a backup, or keep it as evidence")
    return BROKEN_EXIT


def audit(*, config: str | None, environment: str | None, since: str | None, until: str | None, fmt: str,
          output_path: str | None, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.time,
          cwd: str | os.PathLike[str] | None = None) -> int:
    now = clock()
    start = parse_when(since, now=now) if since else None
    end = parse_when(until, now=now, option="--until") if until else None
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--until {until!r} is not after --since {since!r}: give a window that ends after it starts")
    ws = find_workspace(config, cwd)
    with _open_ledger(ws.repo.cdkit_dir, environ) as ledger:
        history = from_ledger(ledger, ws.root, environment=environment)
        shown = in_window(history.deployments, start, end)
        with ledger.snapshot() as db:
            records = change_records(history, db, shown)
            integrity = chain.verify(db)
    doc = jsondoc.document("audit", {
        "generated_at": iso(now), "since": iso(start), "until": iso(end), "environment": environment,
        "source": "ledger", "chain": chain_data(integrity), "deployments": records})
    text = render(fmt, doc)
    if output_path:
        target = Path(cwd or ".") / output_path
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write the audit to {target}: {exc.strerror}; choose another -o path") from None
        output.write_line(f"wrote {target} ({fmt}, {len(records)} change record(s); audit chain "
                          f"{'intact' if integrity.intact else 'BROKEN: run cdkit audit verify'})")
    else:
        output.write(text)
    return 0


def render(fmt: str, doc: Mapping[str, Any]) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(doc["deployments"])
    if fmt == "html":
        return to_html(doc)
    return "\n".join(to_table(doc)) + "\n"


# --- flat cells, shared by the table, CSV and HTML ------------------------------------------------------------


def _stages(r: Mapping[str, Any]) -> str:
    return "; ".join(f"{s['name']} {s['status']} ({s['where']}, run {s['run']})" for s in r["stages"]) or "none"


def _approvers(r: Mapping[str, Any]) -> str:
    a = r["approval"]
    if a["approvals"]:
        return "; ".join(f"{x['who']} ({x['via']})" for x in a["approvals"])
    return f"none ({a['via']})" if a["via"] else "not required"


def _flags(r: Mapping[str, Any]) -> str:
    marks = []
    if r["rollback"]["is_rollback"]:
        marks.append("automatic rollback" if r["rollback"]["automatic"] else "rollback")
    if r["rollback"]["rolled_back_by"]:
        marks.append(f"rolled back by {r['rollback']['rolled_back_by']}")
    if r["forced"]["forced"]:
        marks.append("FORCED")
    if r["break_glass"]["break_glass"]:
        marks.append("BREAK-GLASS")
    return ", ".join(marks)


CSV_COLUMNS: tuple[tuple[str, Callable[[Mapping[str, Any]], object]], ...] = (
    ("id", lambda r: r["id"]),
    ("environment", lambda r: r["environment"]),
    ("sha", lambda r: r["sha"]),
    ("previous_sha", lambda r: r["previous_sha"] or ""),
    ("commits", lambda r: "" if r["commit_count"] is None else r["commit_count"]),
    ("pull_requests", lambda r: " ".join(f"#{p['number']}" for p in r["pull_requests"])),
    ("stages", _stages),
    ("approval_via", lambda r: r["approval"]["via"] or ""),
    ("approved_by", _approvers),
    ("approvals_not_counted", lambda r: "; ".join(r["approval"]["not_counted"])),
    ("author_exclusion", lambda r: r["approval"]["author_exclusion"]["result"]),
    ("author_exclusion_conflicts", lambda r: "; ".join(r["approval"]["author_exclusion"]["conflicts"])),
    ("deployed_by", lambda r: r["deployed_by"] or ""),
    ("started_at", lambda r: r["started_at"]),
    ("finished_at", lambda r: r["finished_at"] or ""),
    ("outcome", lambda r: r["outcome"]),
    ("verification", lambda r: r["verification"]),
    ("rollback", lambda r: "automatic" if r["rollback"]["automatic"] else str(r["rollback"]["is_rollback"]).lower()),
    ("rolled_back_by", lambda r: r["rollback"]["rolled_back_by"] or ""),
    ("forced", lambda r: str(r["forced"]["forced"]).lower()),
    ("break_glass", lambda r: str(r["break_glass"]["break_glass"]).lower()),
    ("reason", lambda r: r["break_glass"]["reason"] or r["forced"]["reason"] or r["reason"] or ""),
    ("governed_by", lambda r: r.get("governed_by") or ""),
    ("seal", lambda r: r["seal"]["hash"] if r["seal"] else ""),
)


def _csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: commit subjects and reasons could otherwise run as formulas."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in CSV_COLUMNS])
    for r in records:
        writer.writerow([_csv_cell(cell(r)) for _, cell in CSV_COLUMNS])
    return buffer.getvalue()


def to_table(doc: Mapping[str, Any]) -> list[str]:
    records = doc["deployments"]
    header = ("WHEN", "ENV", "RANGE", "PRS", "CHECKS", "APPROVED BY", "AUTHOR EXCLUDED", "DEPLOYED BY",
              "OUTCOME", "VERIFY", "FLAGS")
    rows: list[tuple[object, ...]] = []
    for r in records:
        base = (r["previous_sha"] or "")[:8] or "(first)"
        count = f" ({r['commit_count']})" if r["commit_count"] is not None else ""
        checks = ", ".join(f"{s['name']}:{s['status']}@{s['where'].split(' ')[0]}" for s in r["stages"]) or "none"
        rows.append((_local_iso(r["started_at"]), r["environment"], f"{base}..{(r['sha'] or 'nothing')[:8]}{count}",
                     " ".join(f"#{p['number']}" for p in r["pull_requests"]) or "-", checks, _approvers(r),
                     r["approval"]["author_exclusion"]["result"], r["deployed_by"] or "-", r["outcome"],
                     r["verification"], _flags(r)))
    lines = table(header, rows) if rows else ["no deployments in this window"]
    c = doc["chain"]
    state = "intact" if c["intact"] else f"BROKEN ({c['first_problem']['record']}: run cdkit audit verify)"
    lines.append(f"{len(records)} change record(s) from the ledger; times are local; audit chain {state}, "
                 f"head {c['head'][:16]}")
    return lines


def _local_iso(text: str | None) -> str:
    from cdkit.history.timeutil import parse_iso

    return local(parse_iso(text))


# --- HTML: one self-contained page ----------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1400px;
 padding:0 1rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.5rem} .meta{color:#555}
.chain{padding:.5rem 1rem;border-radius:6px;display:inline-block}
.chain.intact{background:#e3f2e5}.chain.broken{background:#fbe4e4;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.85rem}
th,td{border-bottom:1px solid #e5e5e5;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0} code{font-size:.8rem}
.fail{color:#a00;font-weight:600} .ok{color:#1a6b2a;font-weight:600} .sub{color:#666;font-size:.8rem}
.wide{overflow-x:auto}
"""


def _h(value: object) -> str:
    return html.escape(printable(value) if value is not None else "-")


def _checks_html(r: Mapping[str, Any]) -> str:
    """Stages grouped by the run they come from: `local run, run 3: build passed, test passed`."""
    groups: dict[tuple[str, int], list[str]] = {}
    for st in r["stages"]:
        groups.setdefault((st["where"], st["run"]), []).append(f"{st['name']} {st['status']}")
    return "<br>".join(f'{_h(", ".join(names))} <span class="sub">({_h(where)}, run {run})</span>'
                       for (where, run), names in groups.items()) or "none"


def _html_row(r: Mapping[str, Any]) -> str:
    excl = r["approval"]["author_exclusion"]
    excl_text = excl["result"] + (f": {', '.join(excl['conflicts'])}" if excl["conflicts"] else "")
    prs = " ".join(f"#{p['number']}" for p in r["pull_requests"])
    approvals = [f'{_h(a["who"])} <span class="sub">({_h(a["via"])}, {_h(a["at"])})</span>'
                 for a in r["approval"]["approvals"]]
    approvals += [f'<span class="sub">not counted: {_h(n)}</span>' for n in r["approval"]["not_counted"]]
    if r.get("governed_by"):
        approvals.append(f'<span class="sub">governed by {_h(r["governed_by"])}</span>')
    bad = r["outcome"] not in ("deployed", "verified")
    result = (f'<span class="{"fail" if bad else "ok"}">{_h(r["outcome"])}</span><br>'
              f'<span class="sub">verification: {_h(r["verification"])}</span>'
              + (f"<br><b>{_h(_flags(r))}</b>" if _flags(r) else ""))
    cells = [
        f"<code>{_h(r['id'])}</code><br>{_h(r['environment'])}",
        f"<code>{_h((r['previous_sha'] or '(first)')[:10])}..{_h((r['sha'] or 'nothing')[:10])}</code><br>"
        f'<span class="sub">{_h(r["commit_count"])} commit(s)</span>' + (f"<br>PR {_h(prs)}" if prs else ""),
        _checks_html(r),
        "<br>".join(approvals) or "-",
        f'<span class="{"fail" if excl["result"] == "failed" else ""}">{_h(excl_text)}</span>',
        f'{_h(r["deployed_by"])}<br><span class="sub">{_h(r["started_at"])} to {_h(r["finished_at"])}</span>',
        result,
        _h(r["break_glass"]["reason"] or r["forced"]["reason"] or r["reason"]),
        f"<code title=\"{_h((r['seal'] or {}).get('hash', '-'))}\">{_h((r['seal'] or {}).get('hash', '-')[:12])}</code>",
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def to_html(doc: Mapping[str, Any]) -> str:
    c = doc["chain"]
    if c["intact"]:
        chain_line = (f'<p class="chain intact" id="chain">Audit chain intact: {c["entries"]} entries, '
                      f"head <code>{_h(c['head'])}</code></p>")
    else:
        first = c["first_problem"]
        chain_line = (f'<p class="chain broken" id="chain">Audit chain BROKEN: first broken record '
                      f"{_h(first['record'])}: {_h(first['problem'])}</p>")
    head = ("Deployment", "Range", "Checks (where they ran)", "Approvals", "Author excluded",
            "Deployed by (UTC)", "Result", "Reason", "Seal")
    window = f"{doc['since'] or 'the first deployment'} to {doc['until'] or 'now'}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        "<title>cdkit audit</title>"
        f"<style>{CSS}</style></head><body><h1>Change records</h1>"
        f"<p class=\"meta\">{len(doc['deployments'])} deployment(s), {_h(window)} (UTC), "
        f"{_h(doc['environment'] or 'every environment')}; generated {_h(doc['generated_at'])} from the ledger.</p>"
        f"{chain_line}<div class=\"wide\"><table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        "<tbody>" + "".join(_html_row(r) for r in doc["deployments"])
        + f'</tbody></table></div><script type="application/json" id="cdkit-audit">{_safe_json(doc)}</script>'
        "</body></html>\n"
    )


def _safe_json(data: Any) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
