#!/usr/bin/env python3
"""The README's report screenshot, made by hand: `python bench/report_screenshot.py [docs/report.png]`.

Builds a throwaway repository with twelve weeks of dated commits and a ledger of
deployments to `staging` and `production` (seeded, so the picture is the same each
time; the ledger's clock is set per deployment here, never in cdkit itself), writes
`cdkit report` and screenshots it in headless Chromium.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdkit.commands.report import report  # noqa: E402
from cdkit.ledger import Ledger  # noqa: E402

T0 = 1_767_571_200.0  # Monday 2026-01-05 00:00 UTC
DAY = 86400.0
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def git(repo: Path, *args: str, env: dict[str, str], stdin: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=env, input=stdin, check=True,
                          capture_output=True).stdout.decode().strip()


def commits(repo: Path, env: dict[str, str], count: int, rng: random.Random) -> list[tuple[str, float]]:
    """`count` commits at rising dates over twelve weeks, one fast-import; (sha, author time)."""
    stream, when = [], T0
    for n in range(count):
        when += rng.uniform(0.5, 1.4) * DAY * 80 / count
        subject = "fix: handle empty cart" if rng.random() < 0.12 else f"change {n}"
        message = subject.encode()
        stream.append(f"commit refs/heads/main\nmark :{n + 1}\nauthor Ada <ada@example.com> {int(when)} +0000\n"
                      f"committer Ada <ada@example.com> {int(when)} +0000\ndata {len(message)}\n".encode()
                      + message + f"\nM 644 inline file{n % 7}.txt\ndata 2\n{n % 10}\n\n".encode())
    git(repo, "fast-import", "--quiet", env=env, stdin=b"".join(stream))
    shas = git(repo, "rev-list", "--reverse", "main", env=env).split()
    times = [float(t) for t in git(repo, "log", "--reverse", "--format=%at", "main", env=env).split()]
    return list(zip(shas, times))


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report.png").resolve()
    rng = random.Random(13)
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "shop"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main", env=env)
        history = commits(repo, env, 160, rng)
        now = [0.0]
        with Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3", clock=lambda: now[0]) as ledger:
            for environment, every, fail_rate in (("staging", 2, 0.12), ("production", 5, 0.08)):
                for index in range(0, len(history), every):
                    sha, written = history[index]
                    now[0] = written + rng.uniform(0.2, 30) * 3600
                    deployment = ledger.start_deployment(environment=environment, sha=sha, rollback=False,
                                                         approval=None, deployed_by="@release-bot")
                    now[0] += rng.uniform(40, 400)
                    ledger.finish_deployment(deployment, "failure" if rng.random() < fail_rate else "success")
        page = Path(tmp) / "report.html"
        report(config=None, environment=None, since="2026-01-05", source="ledger", token=None,
               output_path=str(page), environ=env, clock=lambda: T0 + 84 * DAY, cwd=repo)
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chromium", *FLAGS, f"--user-data-dir={tmp}/profile", "--window-size=1100,1280",
                        f"--screenshot={target}", page.as_uri()], check=True, capture_output=True)
    # 256 colours are plenty for charts and text, and a quarter of the size (ImageMagick, where installed).
    subprocess.run(["convert", str(target), "-colors", "256", f"PNG8:{target}"], check=False, capture_output=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
