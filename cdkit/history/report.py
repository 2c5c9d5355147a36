"""`cdkit report`: one self-contained HTML page of the metrics, charts and the deployment history.

Charts are drawn by pygal (`pip install 'cdkit[report]'`), which writes SVG in Python:
the page has no network reference at all (no CDN, no web font, no remote script) and
shows every chart even with JavaScript off. The page's only script (inline) turns the
UTC times of the table into the reader's local time and notes which charts drew.
The `cdkit metrics --json` document is embedded as `<script type="application/json"
id="cdkit-metrics">`, so what the charts show can be checked against it.
"""
from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from cdkit.errors import UsageError
from cdkit.history.metrics import WEEK, EnvironmentMetrics, band
from cdkit.history.records import Deployment
from cdkit.history.timeutil import iso, span

# Lead-time buckets people think in: (label, upper bound in seconds).
LEAD_BUCKETS = (("< 1 hour", 3600.0), ("1-6 hours", 6 * 3600.0), ("6-24 hours", 86400.0), ("1-3 days", 3 * 86400.0),
                ("3-7 days", 7 * 86400.0), ("1-4 weeks", 28 * 86400.0), ("> 4 weeks", math.inf))
WIDTH, HEIGHT = 560, 280


def _pygal() -> Any:
    try:
        import pygal
    except ImportError:
        raise UsageError("cdkit report draws its charts with pygal, which is not installed: "
                         "pip install 'cdkit[report]'") from None
    return pygal


def week_starts(since: float, until: float) -> list[float]:
    """Monday 00:00 UTC of every week that overlaps [since, until)."""
    first = datetime.fromtimestamp(since, tz=timezone.utc)
    monday = datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp() - first.weekday() * 86400.0
    starts = []
    while monday < until:
        starts.append(monday)
        monday += WEEK
    return starts or [since]


def _week_index(starts: Sequence[float], when: float) -> int:
    return min(len(starts) - 1, max(0, int((when - starts[0]) // WEEK)))


def weekly(m: EnvironmentMetrics) -> dict[str, Any]:
    """Per week (Monday, UTC): live deployments (those that later counted as failed apart), failed
    attempts that never went live, and the change failure rate in percent (None: no deployments)."""
    starts = week_starts(m.since, m.until)
    size = len(starts)
    live, live_failed, not_live_failed, counted = [0] * size, [0] * size, [0] * size, [0] * size
    for d in m.live:
        live[_week_index(starts, d.started_at)] += 1
    for d in m.deployments:
        counted[_week_index(starts, d.started_at)] += 1
    for f in m.failures:
        week = _week_index(starts, f.deployment.started_at)
        if f.deployment.live:
            live_failed[week] += 1
        else:
            not_live_failed[week] += 1
    failed = [a + b for a, b in zip(live_failed, not_live_failed)]
    rates = [round(100.0 * f / c, 1) if c else None for f, c in zip(failed, counted)]
    labels = [datetime.fromtimestamp(s, tz=timezone.utc).strftime("%b %d") for s in starts]
    return {"labels": labels, "live": live, "live_failed": live_failed,
            "not_live_failed": not_live_failed, "failed": failed, "rates": rates}


def lead_histogram(lead_times: Sequence[float]) -> list[int]:
    counts = [0] * len(LEAD_BUCKETS)
    for seconds in lead_times:
        counts[next(i for i, (_label, upper) in enumerate(LEAD_BUCKETS) if seconds < upper)] += 1
    return counts


def _chart(pygal: Any, kind: str, title: str, **options: Any) -> Any:
    from pygal.style import Style

    style = Style(background="white", plot_background="white", font_family="system-ui, sans-serif",
                  colors=("#2e7d32", "#ef6c00", "#c62828", "#1565c0"), title_font_size=15, label_font_size=11,
                  major_label_font_size=11, legend_font_size=12, value_font_size=11)
    chart = getattr(pygal, kind)(js=[], width=WIDTH, height=HEIGHT, disable_xml_declaration=True, style=style,
                                 title=title, legend_at_bottom=True, print_zeroes=False, truncate_label=-1,
                                 truncate_legend=-1, **options)
    return chart


_PYGAL_CONFIG = re.compile(r"<script\b[^>]*>.*?</script>", re.S)


def _figure(name: str, environment: str, svg: str, caption: str, data: Mapping[str, Any]) -> str:
    # pygal adds a script holding its config for its (unused, online) tooltip script: drop it,
    # so the page's own script is the only one (the text inside it is escaped: never markup).
    svg = _PYGAL_CONFIG.sub("", svg)
    return (f'<figure class="chart" data-chart="{name}" data-environment="{html.escape(environment)}" '
            f"data-values='{html.escape(json.dumps(data), quote=True)}'>{svg}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def environment_charts(pygal: Any, m: EnvironmentMetrics) -> list[str]:
    env = m.environment
    weeks = weekly(m)
    labels = weeks["labels"]
    sparse = max(1, len(labels) // 8)  # at most ~8 week labels under the bars, so they stay readable

    per_week = _chart(pygal, "StackedBar", "Deployments per week (weeks from Monday, UTC)",
                      x_labels_major_every=sparse, show_minor_x_labels=sparse == 1)
    per_week.x_labels = labels
    per_week.add("live", [n - f for n, f in zip(weeks["live"], weeks["live_failed"])])
    per_week.add("live, then rolled back or fixed", weeks["live_failed"])
    per_week.add("failed to deploy", weeks["not_live_failed"])
    lead = _chart(pygal, "Bar", "Lead time for changes (first commit to deployed)", show_legend=False)
    lead.x_labels = [label for label, _upper in LEAD_BUCKETS]
    histogram = lead_histogram(m.lead_times)
    lead.add("changes", histogram)
    rate = _chart(pygal, "Line", "Change failure rate per week (%)", show_legend=False, range=(0, 100),
                  x_labels_major_every=sparse, show_minor_x_labels=sparse == 1, allow_interruptions=True)
    rate.x_labels = labels
    rate.add("failure rate", weeks["rates"])
    restored = [r for r in m.restores if r.seconds is not None]
    every = max(1, math.ceil(len(restored) / 6))  # at most ~6 dates under the bars
    restore = _chart(pygal, "Bar", "Time to restore (hours), by failure", show_legend=False,
                     x_labels_major_every=every, show_minor_x_labels=every == 1)
    restore.x_labels = [datetime.fromtimestamp(r.failed.done_at, tz=timezone.utc).strftime("%b %d")
                        for r in restored]
    restore.add("hours to restore", [round((r.seconds or 0) / 3600, 2) for r in restored])
    open_ = [r for r in m.restores if r.restored_by is None]
    return [
        _figure("deployments-per-week", env, per_week.render(is_unicode=True),
                f"{len(m.live)} deployments in {m.days:.0f} days: {m.per_day * 7:.1f} a week ({band(m.per_day)})",
                {"live": weeks["live"], "not_live_failed": weeks["not_live_failed"], "labels": labels}),
        _figure("lead-time", env, lead.render(is_unicode=True),
                f"{len(m.lead_times)} changes", {"buckets": histogram}),
        _figure("change-failure-rate", env, rate.render(is_unicode=True),
                f"{len(m.failures)} of {len(m.deployments)} deployments failed",
                {"rates": weeks["rates"], "failed": weeks["failed"]}),
        _figure("time-to-restore", env, restore.render(is_unicode=True),
                f"{len(restored)} restores" + (f"; {len(open_)} failure not restored yet" if open_ else ""),
                {"hours": [round((r.seconds or 0) / 3600, 2) for r in restored]}),
    ]


def _tiles(m: EnvironmentMetrics) -> str:
    data = m.as_data()
    lead, restore, cfr = data["lead_time_for_changes"], data["time_to_restore"], data["change_failure_rate"]
    rate = "-" if cfr["rate"] is None else f"{cfr['rate']:.0%}"
    tiles = [
        ("Deployment frequency", f"{m.per_day * 7:.1f} / week", band(m.per_day)),
        ("Lead time (median)", span(lead["median_seconds"]), f"p90 {span(lead['p90_seconds'])}"),
        ("Change failure rate", rate, f"{cfr['failed']} of {cfr['deployments']}"),
        ("Time to restore (median)", span(restore["median_seconds"]), f"p90 {span(restore['p90_seconds'])}"),
    ]
    return '<div class="tiles">' + "".join(
        f'<div class="tile"><div class="label">{html.escape(a)}</div><div class="value">{html.escape(b)}</div>'
        f'<div class="sub">{html.escape(c)}</div></div>' for a, b, c in tiles) + "</div>"


def history_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """The deployment history table (rows as `cdkit history --json` gives them), newest first."""
    head = ("When", "Environment", "Range", "Outcome", "Approved by", "Deployed by", "Took", "Flags")
    body = []
    for r in rows:
        approvals = ", ".join(f"{a['who']} ({a['via']})" for a in r["approvals"]) or (
            f"none ({r['approval_via']})" if r["approval_via"] else "-")
        base = (r["previous_sha"] or "")[:8] or "(first)"
        flags = " ".join(name for name, on in (("rollback", r["rollback"]), ("FORCED", r["forced"]),
                                               ("BREAK-GLASS", r["break_glass"])) if on)
        commits = f" ({r['commits']})" if r["commits"] is not None else ""
        cells = [f'<time datetime="{r["started_at"]}">{r["started_at"]}</time>', html.escape(r["environment"]),
                 f"<code>{base}..{(r['sha'] or 'nothing')[:8]}</code>{commits}",
                 f'<span class="outcome {html.escape(r["outcome"].replace(" ", "-"))}">{html.escape(r["outcome"])}</span>',
                 html.escape(approvals), html.escape(r["deployed_by"] or "-"), span(r["duration_seconds"]),
                 html.escape(flags)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _safe_json(data: Any) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return json.dumps(data, indent=1).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;
 padding:0 1rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{margin-top:2.5rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}
.meta{color:#555;margin-top:0}
.tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:1rem;margin:1rem 0}
.tile{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem 1rem}
.tile .label{color:#555;font-size:.85rem}.tile .value{font-size:1.6rem;font-weight:600}.tile .sub{color:#777}
.charts{display:grid;grid-template-columns:repeat(2,1fr);gap:1rem}
figure.chart{margin:0;background:#fff;border:1px solid #ddd;border-radius:8px;padding:.5rem}
figure.chart svg{width:100%;height:auto} figcaption{color:#555;font-size:.9rem;padding:0 .5rem .3rem}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{border-bottom:1px solid #e5e5e5;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0} code{font-size:.85rem}
.outcome{padding:.05rem .4rem;border-radius:4px;background:#eee}
.outcome.deployed,.outcome.verified{background:#e3f2e5}.outcome.failed,.outcome.failed-verification,
.outcome.crashed,.outcome.timed-out,.outcome.quarantined,.outcome.rolled-back{background:#fbe4e4}
.definitions{color:#444;font-size:.9rem}
"""

# The page's only script: local times in the table, and a note of which charts drew (read by the browser test).
SCRIPT = """
(function () {
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) { el.textContent = when.toLocaleString(); el.title = el.getAttribute("datetime"); }
  });
  var drawn = 0;
  document.querySelectorAll("figure.chart").forEach(function (fig) {
    var svg = fig.querySelector("svg"), box = svg && svg.getBoundingClientRect();
    var ok = !!box && box.width > 100 && box.height > 50 && svg.querySelectorAll("text").length > 0;
    fig.setAttribute("data-rendered", ok ? "yes" : "no");
    if (ok) { drawn += 1; }
  });
  document.body.setAttribute("data-charts-rendered", String(drawn));
})();
"""

DEFINITIONS = """<p class="definitions"><b>Deployment frequency</b>: deployments that went live, per week, with
DORA's band. <b>Lead time</b>: first commit of each change to the deployment that made it live. <b>Change failure
rate</b>: deployments that failed, failed verification, were rolled back, or were followed within a day by a fix.
<b>Time to restore</b>: a failing deployment to the next one that restored the environment. The README's
"History and metrics" section has the exact definitions.</p>"""


def render(*, title: str, metrics_doc: Mapping[str, Any], results: Mapping[str, EnvironmentMetrics],
           history: Sequence[Mapping[str, Any]]) -> str:
    """The whole page. `metrics_doc` is the `cdkit metrics --json` document; `history` the deployment rows."""
    pygal = _pygal()
    sections = []
    for name, m in results.items():
        charts = "".join(environment_charts(pygal, m))
        sections.append(f'<section class="environment" data-environment="{html.escape(name)}">'
                        f"<h2>{html.escape(name)}</h2>{_tiles(m)}<div class=\"charts\">{charts}</div></section>")
    if not sections:
        sections.append("<p>No deployments in this window.</p>")
    window = f"{metrics_doc.get('since') or 'the first deployment'} to {metrics_doc.get('until')} (UTC)"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class=\"meta\">From {html.escape(str(metrics_doc.get('source')))}, "
        f"{html.escape(window)}; generated {html.escape(str(metrics_doc.get('generated_at')))}.</p>"
        f"{DEFINITIONS}{''.join(sections)}<h2>Deployment history</h2>{history_rows(history)}"
        f'<script type="application/json" id="cdkit-metrics">{_safe_json(metrics_doc)}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
