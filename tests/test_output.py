"""Stage output at volume: results are never distorted by it, a reader that goes away never
stops a run, and no encoding of a secret reaches the console. Real processes, real repositories."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdkit import secrets
from cdkit.ledger import Ledger
from cdkit.secrets import redact
from tests.helpers import cdkit, commit, config
from tests.json_schemas import epoch

TOKEN = "s3cr3t-T0ken/with+chars=x9"  # not shaped like a GitHub token: only knowing its value redacts it


def ledger_runs(repo: Path) -> list[tuple[int, str]]:
    ledger = Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3")
    try:
        return [(r.id, r.status) for r in ledger.recent_runs(10)]
    finally:
        ledger.close()


def cdkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cdkit", *args]


# --- secrets in every encoding --------------------------------------------------------------------


@pytest.mark.parametrize("user", ["x-access-token", "a", "", "ab", "oauth2"])
def test_a_basic_credential_in_base64_is_redacted_whatever_the_user_name(user: str) -> None:
    header = base64.b64encode(f"{user}:{TOKEN}".encode()).decode()
    env = {"GITHUB_TOKEN": TOKEN}
    line = f'http.https://github.com/.extraheader AUTHORIZATION: basic {header}'
    assert redact(line, env) == "http.https://github.com/.extraheader AUTHORIZATION: ***"
    assert redact(f"seen {header} here", env) == "seen *** here"  # without the header's words too
    urlsafe = base64.urlsafe_b64encode(f"{user}:{TOKEN}".encode()).decode()
    assert redact(f"seen {urlsafe}", env) == "seen ***"


def test_raw_url_encoded_and_in_url_forms_are_redacted() -> None:
    env = {"GH_TOKEN": TOKEN}
    encoded = quote(TOKEN, safe="")
    lower_hex = re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded)
    assert encoded != TOKEN
    assert redact(f"raw {TOKEN} end", env) == "raw *** end"
    assert redact(f"https://x-access-token:{encoded}@github.com/o/r", env) == "https://***@github.com/o/r"
    assert redact(f"GET /api?token={lower_hex}&page=2", env) == "GET /api?token=***&page=2"
    assert redact(f"GET /api?token={quote(TOKEN)}", env) == "GET /api?token=***"


def test_redaction_leaves_text_without_secrets_alone() -> None:
    # The positive control: a base64 blob, a URL and an ordinary word stay as they are.
    env = {"GITHUB_TOKEN": TOKEN}
    text = f"{base64.b64encode(b'x-access-token:another-value-entirely').decode()} https://github.com/o/r tokenish"
    assert redact(text, env) == text


# Pieces a stage's output is made of: every form of the secret, token shapes, their surroundings, non-ASCII.
_PIECES = [TOKEN, quote(TOKEN, safe=""), base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode(),
           base64.urlsafe_b64encode(f"a:{TOKEN}".encode()).decode(), "ghp_" + "A1b2" * 5, "Authorization: Bearer ",
           "https://u:", "@host", "=", "/", "+", " ", "\n", "ü", "日本", "\x1f", "\xa0", "ſ", "plain words"]


@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=8), max_size=12))
@settings(max_examples=200)
@example(["Authorization: Bearer ", "\x1f"])  # a Unicode separator: whitespace to a str regex, unless ASCII
@example(["Authorization: ba", "ſ", "ic ", TOKEN[:6]])  # the long s folds to s in a Unicode case-insensitive match
def test_stage_output_redacted_as_bytes_is_redacted_as_text(pieces: list[str]) -> None:
    # The console redacts stage output without decoding it: it must find exactly what the text path finds.
    redactor = secrets.redactor({"GITHUB_TOKEN": TOKEN})
    text = "".join(pieces)
    assert redactor.redact_bytes(text.encode()) == redactor.redact(text).encode()


def test_redacting_stage_output_does_not_import_typing() -> None:
    # The hook redacts what a printing stage shows; typing would cost every such push milliseconds.
    probe = ("import sys\nfrom cdkit import secrets\n"
             f"out = secrets.redactor({{'GITHUB_TOKEN': {TOKEN!r}}}).redact_bytes(b'x {TOKEN} y')\n"
             "print(out, 'typing' in sys.modules)")
    result = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "b'x *** y' False", result.stdout + result.stderr


# --- a chatty stage never distorts a result -------------------------------------------------------


def test_a_flood_of_output_delays_neither_a_timeout_nor_the_record_of_an_exit(repo: Path, tmp_path: Path) -> None:
    # `flood` prints line by line (one write per line: the old worst case) for 4 s, and notes when
    # it ends; `slow` ignores TERM, so it ends exactly at the KILL after its 2 s + 1 s grace.
    flood_end = tmp_path / "flood.end"
    (tmp_path / "flood.py").write_text("import time\nend = time.time() + 4\n"
                                       "while time.time() < end:\n    print('flood ' * 12, flush=True)\n")
    flood = f"python3 {tmp_path / 'flood.py'}; python3 -c 'import time; print(time.time())' > {flood_end}"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - {{name: flood, run: {json.dumps(flood)}, needs: []}}
          - {{name: slow, run: "trap '' TERM; sleep 30", timeout: 2s, needs: []}}
          - {{name: after, run: "echo after", needs: [flood]}}
    """)})
    result = cdkit("run", "--json", cwd=repo, env={"CDKIT_KILL_GRACE": "1"})
    stages = {s["name"]: s for s in json.loads(result.stdout)["stages"]}
    assert result.returncode == 1
    slow = stages["slow"]
    assert slow["status"] == "timed_out" and slow["reason"] == "timed out after 2s"
    assert 3.0 <= slow["duration"] <= 3.0 + 0.5, "recorded at its limit plus the kill grace"
    flood_ended = float(flood_end.read_text())
    assert stages["flood"]["status"] == "passed"
    assert epoch(stages["flood"]["finished_at"]) - flood_ended < 0.5, "the end is when the process ended"
    assert stages["after"]["status"] == "passed" and epoch(stages["after"]["started_at"]) - flood_ended < 1.0
    log = Path(stages["flood"]["log"]).read_text()
    assert log.count("flood ") > 10_000 and log.endswith("\n")  # every line of the flood is in its log


def test_a_reader_that_stops_does_not_stop_the_run(repo: Path, tmp_path: Path) -> None:
    """`cdkit run | head -1`: console output stops; the run finishes, is recorded and exits as its stages."""
    marker = tmp_path / "second-ran"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - {{name: chatty, run: "yes 'a line of output' | head -n 200000"}}
          - {{name: second, run: "echo more; touch {marker}"}}
    """)})
    proc = subprocess.Popen(cdkit_cmd("run"), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"cdkit: running")
    proc.stdout.close()  # the reader goes away, as `head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert marker.exists()
    assert ledger_runs(repo)[0][1] == "passed"
    # A failing stage still fails the run: the exit code is the stages', never "interrupted".
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: bad, run: \"yes x | head -n 100000; exit 1\"}\n"})
    with subprocess.Popen(cdkit_cmd("run"), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()
        assert proc.wait(timeout=120) == 1
    assert ledger_runs(repo)[0][1] == "failed"


def test_a_closed_terminal_does_not_stop_the_run(repo: Path, tmp_path: Path) -> None:
    """The terminal closes (SIGHUP, then EIO on every write): the run goes on and is recorded."""
    started, marker = tmp_path / "started", tmp_path / "finished"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - {{name: slow, run: "touch {started}; sleep 1; yes 'after the hangup' | head -n 50000"}}
          - {{name: last, run: "touch {marker}"}}
    """)})
    master, slave = pty.openpty()

    def controlling_terminal() -> None:  # in the child: a session whose terminal is the pty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(cdkit_cmd("run"), cwd=repo, stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=controlling_terminal, env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                os.read(master, 65536)
            except OSError:
                break
    os.close(master)  # hang up
    assert proc.wait(timeout=120) == 0
    assert marker.exists()
    assert ledger_runs(repo)[0][1] == "passed"


# --- large output: every byte in the log, no secret on the console -----------------------------------


def test_large_output_is_logged_whole_and_redacted_across_chunks(repo: Path) -> None:
    header = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    # 3 MB of lines, the secret in several forms at the pipe's chunk boundaries and inside a 2 MiB line.
    script = (
        "import sys\n"
        "out = sys.stdout\n"
        f"forms = ['AUTHORIZATION: basic {header}', 'raw {TOKEN}', 'https://u:{quote(TOKEN, safe='')}@h']\n"
        "for i in range(40000):\n"
        "    out.write('line %06d ' % i + 'x' * 60 + '\\n')\n"
        "    if i % 9000 == 0: out.write(forms[i % 3] + '\\n')\n"
        "out.write(('word ' * 250000) + forms[0] + ' ' + ('word ' * 250000) + '\\n')\n"
        "out.write('no newline at the end ' + forms[1])\n"
    )
    (repo / "gen.py").write_text(script)
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: big, run: 'python3 gen.py'}\n"})
    result = cdkit("run", cwd=repo, env={"GITHUB_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    expected = subprocess.run([sys.executable, "gen.py"], cwd=repo, capture_output=True, env={
        **os.environ, "GITHUB_TOKEN": TOKEN}).stdout
    logs = sorted((repo / ".git" / "cdkit" / "logs").glob("*/big.log"))
    assert logs[-1].read_bytes() == expected  # the full log: every byte, unredacted, in the git dir only
    console = result.stdout
    for leak in (TOKEN, header, quote(TOKEN, safe=""), header[8:24]):
        assert leak not in console
    assert console.count("***") >= 7
    assert console.count("big │ line ") == 40000  # every line, prefixed
    assert "big │ no newline at the end raw ***\n" in console


# --- the console shows what is running ----------------------------------------------------------------


def test_a_line_says_which_stages_still_run_where_no_live_line_can_be_drawn(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: quiet, run: 'sleep 2'}\n"})
    result = cdkit("run", cwd=repo, env={"CDKIT_PROGRESS_EVERY": "0.5"})
    assert result.returncode == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("cdkit: still running: quiet ")]
    assert len(lines) >= 2, result.stdout
    assert "\r" not in result.stdout and "\x1b" not in result.stdout  # plain text for logs and CI
    assert cdkit("run", cwd=repo, env={"CDKIT_PROGRESS_EVERY": "soon"}).returncode == 2


def read_pty(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("colour", ["NO_COLOR", "FORCE_COLOR"])
def test_a_terminal_gets_a_live_line_of_running_stages(repo: Path, colour: str) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: quiet, run: 'sleep 2.5; echo done'}\n"})
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    code, screen = read_pty(cdkit_cmd("run"), repo, {**env, colour: "1", "TERM": "xterm"})
    assert code == 0
    assert re.search(r"running: quiet [12]s", screen), screen
    last_live = screen.rindex("running: quiet")
    erased = re.compile(r"\r {10,}\r").search(screen, last_live)  # spaces over it, then back to the start
    assert erased is not None and "run #" in screen[erased.end():]  # erased before the summary
    if colour == "NO_COLOR":
        assert "\x1b" not in screen  # plain: no escape sequence at all


def test_a_dumb_terminal_gets_plain_lines(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: quiet, run: 'sleep 1.5'}\n"})
    code, screen = read_pty(cdkit_cmd("run"), repo, {**os.environ, "TERM": "dumb", "CDKIT_PROGRESS_EVERY": "0.5"})
    assert code == 0
    assert "cdkit: still running: quiet" in screen
    assert "\x1b" not in screen and "\r\n" in screen and not re.search(r"\r[^\n]", screen)
