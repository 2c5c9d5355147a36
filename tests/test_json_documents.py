"""One JSON shape: every `--json` document has a schema, and what cdkit prints meets it, refusals included.

`tests.helpers.cdkit` validates every `--json` document any test reads; this file walks every command
through its outcomes in one real repository, and checks the schemas are not vacuous.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from cdkit.cli import cli
from cdkit.jsondoc import STAGE_KEYS
from tests.helpers import allowed_signers, cdkit, commit, config, git, signing_env
from tests.json_schemas import SCHEMAS, problems, schema_path

BOB = {"GIT_AUTHOR_NAME": "Bob Reviewer", "GIT_AUTHOR_EMAIL": "bob@example.com",
       "GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com",
       **signing_env("bob@example.com")}


def json_commands(group: click.Group = cli, prefix: str = "") -> list[str]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += json_commands(command, f"{prefix}{name} ")
        elif any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.append(f"{prefix}{name}")
    return found


def test_every_command_with_json_has_a_schema() -> None:
    commands = json_commands()
    assert {"run", "status", "deploy", "plan", "log"} <= set(commands)  # the walk found the commands
    missing = [c for c in commands if not schema_path(c).exists()]
    assert not missing, f"commands whose --json has no schema in {SCHEMAS}: {missing}"


@pytest.fixture
def world(repo: Path) -> Path:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: lint, run: "true"}
          - {name: test, run: "echo testing", needs: [lint]}
          - {name: docs, run: "true", paths: ["docs/**"], on: [pre-push]}
        environments:
          - {name: staging, mode: deployment, deploy: "true"}
          - name: prod
            mode: delivery
            approval: {via: local, required: 1}
            deploy: "true"
    """), **allowed_signers("bob@example.com")})
    return repo


def document(*args: str, cwd: Path, env: dict[str, str] | None = None, code: int = 0) -> dict[str, object]:
    done = cdkit(*args, "--json", cwd=cwd, env=env)  # the helper validates the document against its schema
    assert done.returncode == code, done.stdout + done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    assert data["schema_version"] == 1 and data["command"] == args[0]
    return data


def test_every_command_prints_its_schema_on_every_outcome(world: Path) -> None:
    sha = git(world, "rev-parse", "HEAD")
    shown: dict[str, dict[str, object]] = {}
    shown["plan"] = document("plan", cwd=world)
    shown["run"] = document("run", "--deploy", cwd=world)
    shown["status"] = document("status", cwd=world)
    shown["log"] = document("log", cwd=world)
    shown["environments"] = document("environments", cwd=world)
    shown["adopt"] = document("adopt", "--env", "prod", "--empty", "--reason", "new", cwd=world)
    assert shown["adopt"]["adopted"] is True and shown["adopt"]["sha"] is None
    again = document("adopt", "--env", "prod", "--sha", sha, cwd=world, code=1)  # once, before any deployment
    assert again["adopted"] is False and "already adopted" in str(again["problems"])
    refused = document("deploy", "--env", "prod", cwd=world, code=1)  # not approved yet
    assert refused["deployed"] is False and refused["problems"]
    self_approval = document("approve", sha, "--env", "prod", cwd=world, code=1)  # the author cannot
    assert self_approval["approved"] is False and "exit_code" in self_approval
    shown["approve"] = document("approve", sha, "--env", "prod", cwd=world, env=BOB)
    shown["approvals"] = document("approvals", cwd=world)
    shown["deploy"] = document("deploy", "--env", "prod", cwd=world)
    assert shown["deploy"]["deployed"] is True
    for name in ("history", "metrics", "gc", "sync", "doctor"):
        shown[name] = document(name, cwd=world, code=1 if name == "doctor" else 0)
    unknown = document("deploy", "--env", "nowhere", cwd=world, code=2)
    assert "nowhere" in str(unknown["error"])
    assert {d["command"] for d in shown.values()} == set(shown)

    # One stage shape everywhere, with times as ISO 8601 UTC text.
    stage_lists = [shown["plan"]["stages"], shown["run"]["stages"], shown["status"]["stages"],
                   shown["log"]["runs"][0]["stages"]]  # type: ignore[index]
    for stages in stage_lists:
        assert stages and all(tuple(s)[:len(STAGE_KEYS)] == STAGE_KEYS for s in stages)  # type: ignore[union-attr]
    assert str(shown["run"]["stages"][0]["started_at"]).endswith("Z")  # type: ignore[index]
    assert str(shown["approvals"]["approvals"][0]["at"]).endswith("Z")  # type: ignore[index]


def test_an_invalid_pipeline_is_a_document_too(world: Path) -> None:
    commit(world, {".cdkit.yml": "version: 1\nstages: [{name: x}]\n"})
    for args in (("run",), ("plan",), ("environments",), ("deploy", "--env", "staging")):  # status shows runs anyway
        done = cdkit(*args, "--json", cwd=world)
        assert done.returncode == 2, done.stdout + done.stderr
        data = json.loads(done.stdout)
        assert data["command"] == args[0] and ".cdkit.yml" in str(data["error"]) and data["exit_code"] == 2


@pytest.mark.parametrize("command, good, bad", [
    ("log", {"runs": []}, {"runs": [{"id": 1, "trigger": "ci", "sha": "a" * 40, "status": "passed", "dirty": False,
                                     "started_at": 1796191544.6, "finished_at": None, "stages": []}]}),
    ("run", None, {"run_id": 1, "result": "passed", "trigger": "ci", "sha": "a" * 40, "base": None, "ref": None,
                   "stages": [{"name": "x", "status": "passed"}], "deployments": [], "would_deploy": [],
                   "does_not_count": [], "github": None}),
    ("approvals", {"approvals": []}, [{"id": 1}]),
    ("deploy", {"environment": "e", "sha": "a" * 40, "status": "refused", "deployed": False, "problems": []},
     {"environment": "e", "sha": "HEAD", "status": "refused", "deployed": False}),
])
def test_the_schemas_reject_what_breaks_the_shape(command: str, good: object, bad: object) -> None:
    """The control: a schema that accepted anything would let every check above pass vacuously."""
    def doc(body: object) -> object:
        return {"schema_version": 1, "command": command, **body} if isinstance(body, dict) else body

    if good is not None:
        assert problems(doc(good)) == []
    assert problems(doc(bad))
    if isinstance(good, dict):
        assert problems({**doc(good), "schema_version": 2})
