"""`cdkit demo`: the whole story in a throwaway repository, offline, with no token.

Everything happens under a temporary directory: nothing in the current directory
is read or written, and the git identity is the demo's own (passed by environment).
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cdkit import output
from cdkit.util import cmd_output_b

ALICE = {"GIT_AUTHOR_NAME": "Alice Developer", "GIT_AUTHOR_EMAIL": "alice@example.com",
         "GIT_COMMITTER_NAME": "Alice Developer", "GIT_COMMITTER_EMAIL": "alice@example.com"}

BUGGY_CALC = "def add(a, b):\n    return a - b  # bug: should add\n"
FIXED_CALC = "def add(a, b):\n    return a + b\n"


def pipeline_text(python: str = "python3") -> str:
    """The demo's pipeline, with commands as a person writes them (`python3`, found on the demo's PATH)."""
    py = shlex.quote(python)
    return textwrap.dedent(f"""\
        version: 1
        release_branch: main
        stages:
          - name: lint
            run: {py} -m py_compile calc.py
            on: [pre-push, ci]
            needs: []
          - name: test
            run: {py} -c "import calc; assert calc.add(2, 2) == 4, 'add(2, 2) != 4'; print('add(2, 2) == 4')"
            on: [pre-push, ci]
            paths: ["**.py"]
          - name: package
            run: mkdir -p dist && tar -cf dist/calc.tar calc.py && echo built dist/calc.tar
            needs: [test]
        """)


@dataclass
class Demo:
    root: Path
    repo: Path
    env: dict[str, str]
    step_no: int = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        color = output.use_color(sys.stdout)
        output.write_line()
        output.write_line(output.paint(f"── {self.step_no}. {title}", "bold", enabled=color))

    def say(self, text: str) -> None:
        output.write_line(textwrap.fill(text, width=96))

    def git(self, *args: str, cwd: Path | None = None) -> str:
        _, out, _ = cmd_output_b("git", *args, cwd=cwd or self.repo, env=self.env)
        return out.decode("utf-8", "replace").strip()

    def commit(self, files: Mapping[str, str], message: str) -> str:
        for name, text in files.items():
            (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / name).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def cdkit(self, *args: str, show: str | None = None) -> int:
        """Run the real cdkit CLI in the demo repository, echoing the command like a terminal would."""
        output.write_line(f"$ {show or 'cdkit ' + ' '.join(args)}")
        code, out, err = cmd_output_b(sys.executable, "-m", "cdkit", *args, cwd=self.repo, env=self.env, check=False)
        text = (out + err).decode("utf-8", "replace").rstrip()
        if text:
            output.write_line(textwrap.indent(text, "  "))
        output.write_line(f"  (exit code {code})")
        return code


@contextmanager
def demo_workspace(keep: bool) -> Iterator[Demo]:
    root = Path(tempfile.mkdtemp(prefix="cdkit-demo-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GITHUB_", "GH_", "CDKIT"))}
    env.update(ALICE)
    env.update({"HOME": str(root), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull})
    # The stages say `python3`; this interpreter's directory first on PATH makes it the one that runs.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    repo = root / "calc"
    repo.mkdir()
    demo = Demo(root=root, repo=repo, env=env)
    try:
        demo.git("init", "-q", "-b", "main")
        yield demo
    finally:
        if keep:
            output.write_line(f"\nThe demo repository is kept at {repo}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def story_stages(demo: Demo) -> None:
    demo.step("A repository with a pipeline file and a bug")
    demo.say("`.cdkit.yml` declares three stages once: lint and test run in the pre-push hook and in CI; "
             "package needs test and runs in CI only.")
    (demo.repo / ".cdkit.yml").write_text(pipeline_text())
    buggy = demo.commit({"calc.py": BUGGY_CALC, ".gitignore": "__pycache__/\ndist/\n"}, "Add calc with a bug")
    demo.cdkit("validate")

    demo.step("Run the pipeline: the test stage fails, so package never runs")
    demo.cdkit("run")

    demo.step("Fix the bug and run again: every stage passes")
    fixed = demo.commit({"calc.py": FIXED_CALC}, "Fix add()")
    demo.cdkit("plan", "--base", buggy, show="cdkit plan --base HEAD~1")
    demo.cdkit("run", "--base", buggy, show="cdkit run --base HEAD~1")

    demo.step("Everything is recorded in the ledger inside .git (no server, no token)")
    demo.cdkit("status", fixed[:12])
    demo.cdkit("log")


BOB = {"GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com"}
ENVIRONMENTS = textwrap.dedent("""\
    environments:
      - name: staging
        mode: deployment
        deploy: echo "deployed $CDKIT_SHA to $CDKIT_ENVIRONMENT (deployment $CDKIT_DEPLOYMENT_ID)"
      - name: prod
        mode: delivery
        deploy: echo "deployed $CDKIT_SHA to $CDKIT_ENVIRONMENT (deployment $CDKIT_DEPLOYMENT_ID)"
        approval: {via: local, required: 1}
    """)


def bob_demo(demo: Demo) -> Demo:
    """Bob, the reviewer: his git identity, and an SSH signing key (made once, in the demo's directory) that git's
    config names, as `cdkit approve` expects (gpg.format ssh, user.signingkey)."""
    key = demo.root / "bob_signing_key"
    if not key.exists():
        cmd_output_b("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bob@example.com", "-f", str(key),
                     env=demo.env, timeout=60)
    signing = {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "gpg.format", "GIT_CONFIG_VALUE_0": "ssh",
               "GIT_CONFIG_KEY_1": "user.signingkey", "GIT_CONFIG_VALUE_1": str(key)}
    return Demo(root=demo.root, repo=demo.repo, env={**demo.env, **BOB, **signing})


def allowed_signers(demo: Demo) -> str:
    """`.cdkit/allowed_signers`: who may sign approvals (git's allowed-signers format): Bob's key."""
    public = (demo.root / "bob_signing_key.pub").read_text().split()
    return f"bob@example.com {public[0]} {public[1]}\n"


def story_releases(demo: Demo) -> None:
    bob = bob_demo(demo)
    demo.step("Two environments: staging deploys by itself (deployment), prod waits for an approval (delivery)")
    demo.say("Approvals are signed with the approver's SSH key; `.cdkit/allowed_signers` lists who may sign them.")
    pipeline = (demo.repo / ".cdkit.yml").read_text() + ENVIRONMENTS
    running = demo.git("rev-parse", "HEAD").strip()
    first = demo.commit({".cdkit.yml": pipeline, ".cdkit/allowed_signers": allowed_signers(demo)},
                        "Add staging and prod")
    demo.say("prod already runs the fixed calc, deployed before cdkit: say so once, so its first release adds "
             "only what came after (nothing runs)")
    demo.cdkit("adopt", "--env", "prod", "--sha", running[:12], "--reason", "what prod runs today",
               show="cdkit adopt --env prod --sha HEAD~1 --reason 'what prod runs today'")
    demo.cdkit("run", "--deploy")

    demo.step("Delivery: prod refuses the unapproved commit, and its own author cannot approve it")
    demo.cdkit("deploy", "--env", "prod")
    demo.cdkit("approve", first[:12], "--env", "prod")

    demo.step("A second person (Bob) approves that exact commit; now prod deploys it")
    bob.cdkit("approve", first[:12], "--env", "prod", "--comment", "reviewed",
              show=f"GIT_COMMITTER_NAME='Bob Reviewer' cdkit approve {first[:12]} --env prod --comment reviewed")
    demo.cdkit("deploy", "--env", "prod")

    demo.step("A commit whose test fails is never released anywhere")
    demo.commit({"calc.py": BUGGY_CALC}, "Break add() again")
    demo.cdkit("run", "--deploy")
    demo.cdkit("deploy", "--env", "staging")

    demo.step("The fix ships to staging by itself, and to prod after Bob's approval")
    second = demo.commit({"calc.py": FIXED_CALC}, "Fix add() for good")
    demo.cdkit("run", "--deploy")
    bob.cdkit("approve", second[:12], "--env", "prod",
              show=f"GIT_COMMITTER_NAME='Bob Reviewer' cdkit approve {second[:12]} --env prod")
    demo.cdkit("deploy", "--env", "prod")

    demo.step("Deploying the older commit is refused; an explicit --rollback is allowed and recorded")
    demo.cdkit("deploy", "--env", "prod", "--sha", first[:12])
    demo.cdkit("deploy", "--env", "prod", "--sha", first[:12], "--rollback")
    demo.cdkit("environments")
    demo.cdkit("status", first[:12])


VERIFY = """\
    verify: {run: test ! -e maintenance.flag, retries: 2, interval: 1s}
    on_failure: rollback
"""


def story_verify(demo: Demo) -> None:
    demo.step("staging verifies every deploy (`verify:`) and rolls itself back when that fails")
    demo.say("The smoke test here fails while `maintenance.flag` exists: it stands in for a health check "
             "that a passing pipeline cannot catch.")
    text = (demo.repo / ".cdkit.yml").read_text()
    staging_deploy = next(line for line in text.splitlines(keepends=True) if line.strip().startswith("deploy:"))
    demo.commit({".cdkit.yml": text.replace(staging_deploy, staging_deploy + VERIFY, 1)}, "Verify staging")
    demo.cdkit("run", "--deploy")

    demo.step("A commit that passes every stage but fails verification: rolled back at once, and quarantined")
    bad = demo.commit({"maintenance.flag": "on\n"}, "Turn on maintenance mode")
    demo.cdkit("run", "--deploy")
    demo.cdkit("deploy", "--env", "staging", "--sha", bad[:12])
    demo.cdkit("environments")


def _show_git(demo: Demo, *args: str) -> int:
    """Run git in the demo repository, echoed like a terminal would (a push shows the hook's output)."""
    output.write_line(f"$ git {' '.join(args)}")
    code, out, err = cmd_output_b("git", *args, cwd=demo.repo, env=demo.env, check=False)
    text = (out + err).decode("utf-8", "replace").rstrip()
    if text:
        output.write_line(textwrap.indent(text, "  "))
    output.write_line(f"  (exit code {code})")
    return code


def story_hook(demo: Demo) -> None:
    demo.step("The pre-push hook: a push whose commits fail a stage is blocked")
    demo.say("`cdkit hook install` writes .git/hooks/pre-push. Every `git push` then runs the `on: pre-push` "
             "stages on exactly the commits being pushed (here to a bare repository standing in for GitHub).")
    remote = demo.root / "origin.git"
    demo.git("init", "-q", "--bare", "-b", "main", str(remote))
    demo.git("remote", "add", "origin", str(remote))
    demo.cdkit("hook", "install")
    demo.commit({"calc.py": BUGGY_CALC}, "Break add() just before pushing")
    _show_git(demo, "push", "origin", "main")

    demo.step("Fix it and push again: the stages pass and the push goes through")
    demo.commit({"calc.py": FIXED_CALC}, "Fix add() before pushing")
    _show_git(demo, "push", "origin", "main")
    demo.cdkit("hook", "status")


def freeze_text(now: datetime) -> str:
    """prod's freeze window, opened at the start of this hour (UTC) for 2 hours: in force while the demo runs."""
    return textwrap.indent(textwrap.dedent(f"""\
        break_glass: {{required: 1}}
        windows:
          - name: change freeze
            deny: {{schedule: "0 {now.hour} * * *", duration: 2h, timezone: UTC}}
        """), "    ")


def story_freeze(demo: Demo) -> None:
    demo.step("A freeze window: prod takes no deploy while it holds, and says until when")
    demo.say("prod gets a `windows:` entry: a deny window (cron schedule, duration, IANA time zone) that opened at "
             "the start of this hour. Staging has none, so it still deploys by itself.")
    text = (demo.repo / ".cdkit.yml").read_text()
    text = text.replace("approval: {via: local, required: 1}\n",
                        "approval: {via: local, required: 1}\n" + freeze_text(datetime.now(timezone.utc)), 1)
    (demo.repo / "maintenance.flag").unlink(missing_ok=True)
    rules = demo.commit({".cdkit.yml": text}, "Freeze prod for two hours; maintenance over")
    bob = bob_demo(demo)
    demo.say("A change to the rules is released under the rules before it (prod has no window yet), and "
             "governs prod's next deploy:")
    demo.cdkit("run", "--deploy")
    bob.cdkit("approve", rules[:12], "--env", "prod",
              show=f"GIT_COMMITTER_NAME='Bob Reviewer' cdkit approve {rules[:12]} --env prod")
    demo.cdkit("deploy", "--env", "prod")
    demo.say("A change during the freeze: prod's rules now hold the window, so it waits.")
    frozen = demo.commit({"calc.py": FIXED_CALC + "\n# during the freeze\n"}, "A change during the freeze")
    demo.cdkit("run", "--deploy")
    bob.cdkit("approve", frozen[:12], "--env", "prod",
              show=f"GIT_COMMITTER_NAME='Bob Reviewer' cdkit approve {frozen[:12]} --env prod")
    demo.cdkit("deploy", "--env", "prod")


def story_break_glass(demo: Demo) -> None:
    demo.step("Break-glass: deploying inside the freeze needs a second person's break-glass approval")
    frozen = demo.git("rev-parse", "HEAD")
    reason = ("deploy", "--env", "prod", "--break-glass", "--reason", "hotfix for the outage")
    shown = "cdkit deploy --env prod --break-glass --reason 'hotfix for the outage'"
    demo.cdkit(*reason, show=shown)
    bob = bob_demo(demo)
    bob.cdkit("approve", frozen[:12], "--env", "prod", "--break-glass", "--comment", "outage confirmed",
              show=f"GIT_COMMITTER_NAME='Bob Reviewer' cdkit approve {frozen[:12]} --env prod --break-glass "
                   "--comment 'outage confirmed'")
    demo.cdkit(*reason, show=shown)
    demo.say("The deployment is flagged for good: in the history, `cdkit status` and `cdkit environments`.")
    demo.cdkit("history", "--env", "prod", "--since", "1d")


STORIES: tuple[Callable[[Demo], None], ...] = (story_stages, story_releases, story_verify, story_hook, story_freeze,
                                               story_break_glass)


def demo(*, keep: bool = False) -> int:
    color = output.use_color(sys.stdout)
    output.write_line(output.paint("cdkit demo: one pipeline, run and recorded offline", "bold", enabled=color))
    with demo_workspace(keep) as workspace:
        ending = "it is kept at the end" if keep else "it is deleted at the end; `cdkit demo --keep` keeps it"
        output.write_line(f"(a throwaway repository in {workspace.repo}, {ending}; nothing here is touched)")
        for story in STORIES:
            story(workspace)
    output.write_line("\nDone. Try it on your own repository: `cdkit init`, then `cdkit run`.")
    return 0
