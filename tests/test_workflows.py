"""action.yml, the example workflows, this repository's workflows and those `cdkit init` writes:
schema-valid (check-jsonschema, offline), every action pinned by SHA, no expression inside a `run:`."""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdkit.commands.init import ACTION_REPOSITORY_ENV, release_tag, render_workflow, tag_ref
from tests.helpers import ROOT, cdkit, commit, git, make_repo

ACTION = ROOT / "action.yml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))
OWN_WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
MODES = [("deployment", None), ("delivery", "environment"), ("delivery", "review")]
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
                          capture_output=True, text=True)


def load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=yaml.BaseLoader)  # BaseLoader: `on:` stays a string key
    assert isinstance(data, dict)
    return data


def steps_of(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "runs" in data:
        yield from data["runs"].get("steps", [])
    for job in (data.get("jobs") or {}).values():
        yield from job.get("steps", [])


@pytest.fixture(scope="module")
def init_workflows(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    written = []
    for mode, approval in MODES:
        repo = make_repo(tmp_path_factory.mktemp("init") / "repo")
        args = ["init", "--mode", mode] + (["--approval", approval] if approval else [])
        result = cdkit(*args, cwd=repo)
        assert result.returncode == 0, result.stderr
        written.append(repo / ".github" / "workflows" / "cdkit.yml")
    return written


def test_action_yml_is_a_valid_action() -> None:
    result = check_jsonschema("vendor.github-actions", ACTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_valid(init_workflows: list[Path]) -> None:
    assert len(EXAMPLES) == 3 and OWN_WORKFLOWS
    result = check_jsonschema("vendor.github-workflows", *EXAMPLES, *OWN_WORKFLOWS, *init_workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_expression_inside_any_run_of_the_action() -> None:
    runs = [step["run"] for step in steps_of(load(ACTION)) if "run" in step]
    assert runs and not [run for run in runs if "${{" in run]
    assert all("env" in step for step in steps_of(load(ACTION)) if "run" in step)


def test_action_declares_and_describes_every_input_and_output() -> None:
    data = load(ACTION)
    assert list(data["inputs"]) == ["command", "config", "token", "environment", "stage", "shard", "python-version",
                                    "working-directory", "max-wait"]
    assert list(data["outputs"]) == ["result", "sha", "stages", "deploy", "environment", "run-stages",
                                     "deployment-id"]
    assert all(spec.get("description") for spec in [*data["inputs"].values(), *data["outputs"].values()])
    assert data["inputs"]["command"]["default"] == "auto" and data["inputs"]["config"]["default"] == ".cdkit.yml"
    assert data["inputs"]["token"]["default"] == "${{ github.token }}"
    assert data["runs"]["using"] == "composite"


def test_every_uses_is_pinned_to_a_full_sha_with_a_version_comment(init_workflows: list[Path]) -> None:
    for path in [ACTION, *EXAMPLES, *OWN_WORKFLOWS, *init_workflows]:
        lines = [line.strip() for line in path.read_text().splitlines() if re.match(r"^\s*(- )?uses:", line)]
        assert lines, path
        for line in lines:
            ref = line.split("uses:", 1)[1].split("#")[0].strip()
            if ref == "./" or ref == f"cdkit/cdkit@{release_tag()}" and line.endswith(tag_ref()):
                continue  # cdkit's own Action by the installed version's tag, saying to pin its SHA (tag_ref)
            assert PINNED.match(ref), f"{path}: {line}"
            assert re.search(r"# v\d", line), f"{path}: {line} (say which version the SHA is)"


def test_examples_are_what_cdkit_init_writes() -> None:
    names = {"deployment": MODES[0], "delivery-environment": MODES[1], "delivery-review": MODES[2]}
    assert sorted(p.stem for p in EXAMPLES) == sorted(names)
    for stem, (mode, approval) in names.items():
        # The examples name cdkit's Action by the tag of this version, offline or not: a SHA cannot be
        # known before the release commit exists, and a hand-written one goes stale.
        assert (ROOT / "examples" / f"{stem}.yml").read_text() == render_workflow(mode, approval, action=tag_ref()), \
            stem


@pytest.mark.parametrize("path", [*EXAMPLES, *OWN_WORKFLOWS], ids=lambda p: p.name)
def test_least_privilege_permissions(path: Path) -> None:
    data = load(path)
    assert data.get("permissions") in ({}, "{}"), "no default permissions at the workflow level"
    for name, job in data["jobs"].items():
        assert isinstance(job.get("permissions"), dict), f"{name} declares its own permissions"
        assert "write-all" not in str(job["permissions"])


@pytest.mark.parametrize("mode, approval", MODES)
def test_deploy_job_shape(mode: str, approval: str | None) -> None:
    data = yaml.load(render_workflow(mode, approval), Loader=yaml.BaseLoader)
    deploy = data["jobs"]["release" if approval == "review" else "deploy"]
    assert deploy["needs"] == "pipeline"
    if approval == "review":  # after a passing push (release PR) and on every review (deploy when approved)
        assert "github.event_name == 'pull_request_review'" in deploy["if"]
        assert deploy["permissions"]["pull-requests"] == "write"
    else:
        assert deploy["if"] == "needs.pipeline.outputs.deploy == 'true'"
    assert deploy["steps"][-1]["with"] == {"command": "deploy", "environment": "production"}
    assert deploy["concurrency"] == {"group": "cdkit-deploy-production", "cancel-in-progress": "false"}
    assert deploy["permissions"]["deployments"] == "write" and "deployments" not in data["jobs"]["pipeline"]["permissions"]
    assert (deploy.get("environment") == "production") == (approval == "environment")
    assert ("pull_request_review" in data["on"]) == (approval == "review")
    checkout = data["jobs"]["pipeline"]["steps"][0]
    assert checkout["with"]["fetch-depth"] == "0"


def test_own_ci_runs_the_tests_and_uses_the_action_on_itself() -> None:
    data = load(ROOT / ".github" / "workflows" / "ci.yml")
    assert set(data["on"]) == {"push", "pull_request"}
    steps = [step for job in data["jobs"].values() for step in job["steps"]]
    assert any(step.get("run") == "bash .ci/run" for step in steps)
    assert any(step.get("uses") == "./" for step in steps)


# --- cdkit init ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, approval", MODES)
def test_init_writes_a_pipeline_that_validates(tmp_path: Path, mode: str, approval: str | None) -> None:
    repo = make_repo(tmp_path / "repo")
    args = ["init", "--mode", mode] + (["--approval", approval] if approval else [])
    result = cdkit(*args, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cdkit: wrote .cdkit.yml and .github/workflows/cdkit.yml")
    validated = cdkit("validate", cwd=repo)
    assert validated.returncode == 0, validated.stderr
    pipeline = yaml.safe_load((repo / ".cdkit.yml").read_text())
    assert pipeline["mode"] == mode
    assert pipeline["environments"][0].get("approval", {}).get("via") == approval


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / ".cdkit.yml").write_text("mine\n")
    result = cdkit("init", cwd=repo)
    assert result.returncode == 2
    assert result.stderr.strip() == ("cdkit: .cdkit.yml already exist(s); nothing was written. "
                                     "Re-run with --force to overwrite")
    assert (repo / ".cdkit.yml").read_text() == "mine\n" and not (repo / ".github").exists()
    forced = cdkit("init", "--force", cwd=repo)
    assert forced.returncode == 0 and (repo / ".github" / "workflows" / "cdkit.yml").exists()


def test_init_rejects_an_approval_for_deployment_mode(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    result = cdkit("init", "--mode", "deployment", "--approval", "review", cwd=repo)
    assert result.returncode == 2 and "--approval applies to --mode delivery only" in result.stderr


def test_init_releases_from_the_checked_out_trunk(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", branch="master")
    assert cdkit("init", cwd=repo).returncode == 0
    assert "release_branch: master" in (repo / ".cdkit.yml").read_text()
    assert "branches: [master]" in (repo / ".github" / "workflows" / "cdkit.yml").read_text()
    assert git(repo, "status", "--porcelain") == "?? .cdkit.yml\n?? .github/"


def release_remote(path: Path, tag: str, *, annotated: bool = True) -> tuple[Path, str]:
    """A bare repository standing for github.com/cdkit/cdkit, with `tag` on its one commit: (url, commit)."""
    source = make_repo(path / "cdkit")
    sha = commit(source, {"action.yml": "name: cdkit\n"}, f"release {tag}")
    git(source, "tag", *(["-a", "-m", f"cdkit {tag}"] if annotated else []), tag)
    remote = path / "cdkit.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True)
    return remote, sha


@pytest.mark.parametrize("annotated", [True, False], ids=["annotated tag", "lightweight tag"])
def test_init_pins_the_action_to_the_commit_of_the_installed_versions_tag(tmp_path: Path, annotated: bool) -> None:
    remote, sha = release_remote(tmp_path, release_tag(), annotated=annotated)
    repo = make_repo(tmp_path / "repo")
    result = cdkit("init", cwd=repo, env={ACTION_REPOSITORY_ENV: str(remote)})
    assert result.returncode == 0, result.stderr
    text = (repo / ".github" / "workflows" / "cdkit.yml").read_text()
    uses = {line.split("uses:", 1)[1].strip() for line in text.splitlines() if "cdkit/cdkit@" in line}
    assert uses == {f"cdkit/cdkit@{sha} # {release_tag()}"}  # the commit, never the tag object's id
    assert f"the workflow uses cdkit/cdkit@{sha}, the commit of {release_tag()}" in result.stdout
    # `cdkit workflow generate` writes the same pin.
    generated = cdkit("workflow", "generate", cwd=repo, env={ACTION_REPOSITORY_ENV: str(remote)})
    assert generated.returncode == 0, generated.stderr
    assert f"cdkit/cdkit@{sha} # {release_tag()}" in (repo / ".github" / "workflows" / "cdkit.yml").read_text()


@pytest.mark.parametrize("where", ["unreachable", "no such tag"])
def test_init_names_the_tag_and_says_to_pin_it_when_the_tag_cannot_be_resolved(tmp_path: Path, where: str) -> None:
    if where == "unreachable":
        url = str(tmp_path / "nowhere.git")
    else:  # reachable, but this version was never released there: never another version's SHA
        url = str(release_remote(tmp_path, "v0.0.1")[0])
    repo = make_repo(tmp_path / "repo")
    result = cdkit("init", cwd=repo, env={ACTION_REPOSITORY_ENV: url})
    assert result.returncode == 0, result.stderr
    text = (repo / ".github" / "workflows" / "cdkit.yml").read_text()
    assert f"uses: {tag_ref()}" in text and not re.search(r"cdkit/cdkit@[0-9a-f]{40}", text)
    assert f"{release_tag()} could not be resolved to a commit" in result.stdout
    assert "replace it by the commit SHA" in result.stdout


# --- action.yml: the hash-pinned install and the runner OSes ------------------------------------------------


LOCK = ROOT / "requirements" / "action.lock"


def _lock_pins() -> dict[str, list[str]]:
    """The lock's requirements: name -> the hashes of its `name==version` line."""
    pins: dict[str, list[str]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==\S+ \\$", line):
            current = match.group(1).lower().replace("_", "-")
            pins[current] = []
        elif match := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            pins[current].append(match.group(1))
        else:
            assert not line.strip() or line.lstrip().startswith("#"), f"unexpected lock line: {line}"
    return pins


def test_the_lock_pins_every_runtime_dependency_and_the_build_backend_with_hashes() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in project["project"]["dependencies"]]
    wanted += [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in project["build-system"]["requires"]]
    pins = _lock_pins()
    assert set(wanted) <= set(pins), f"missing from {LOCK.name}: {set(wanted) - set(pins)} (re-run pip-compile)"
    assert all(pins.values()), [name for name, hashes in pins.items() if not hashes]


def test_the_action_installs_only_from_the_lock_and_cdkit_without_dependencies() -> None:
    steps = {s.get("name"): s for s in steps_of(load(ACTION))}
    deps = steps["Install cdkit's dependencies"]["run"]
    assert '--require-hashes' in deps and '--only-binary :all:' in deps
    assert '-r "$GITHUB_ACTION_PATH/requirements/action.lock"' in deps
    assert steps["Install cdkit's dependencies"]["if"] == "steps.cache.outputs.cache-hit != 'true'"
    own = steps["Install cdkit"]["run"]
    assert all(flag in own for flag in ("--no-deps", "--no-index", "--no-build-isolation", '"$GITHUB_ACTION_PATH"'))
    assert "github.action_path" not in ACTION.read_text()  # wrong inside container jobs; $GITHUB_ACTION_PATH is not
    cache = steps["Restore cdkit's virtualenv"]
    assert cache["with"] == {"path": "${{ steps.venv.outputs.path }}", "key": "${{ steps.venv.outputs.key }}"}
    assert steps["Install cdkit"]["if"] == "steps.installed.outputs.current != 'true'"


def test_the_source_digest_changes_with_every_file_the_package_is_built_from(tmp_path: Path) -> None:
    """What decides whether a cached virtualenv's cdkit is reinstalled: any change of the package's files
    (the attack: a cached older cdkit running under a newer action) moves it; caches do not (the control)."""
    import shutil
    import sys

    source = tmp_path / "action"
    shutil.copytree(ROOT / "cdkit", source / "cdkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")

    def digest() -> str:
        return subprocess.run([sys.executable, str(ROOT / "action" / "source_digest.py"), str(source)],
                              capture_output=True, text=True, check=True).stdout.strip()

    first = digest()
    assert len(first) == 64 and digest() == first
    (source / "cdkit" / "__pycache__").mkdir(exist_ok=True)
    (source / "cdkit" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    assert digest() == first
    for change in ("cdkit/release.py", "cdkit/schemas/adopt.schema.json", "pyproject.toml"):
        path = source / change
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert digest() != first, change
        path.write_bytes(original)
    (source / "cdkit" / "extra.py").write_text("")
    assert digest() != first


def test_a_windows_runner_fails_at_once_with_a_clear_message(tmp_path: Path) -> None:
    """The guard's script as the runner runs it on Windows (its `if:`); on Linux act shows it skipped."""
    first = next(steps_of(load(ACTION)))
    assert first["name"] == "Refuse a Windows runner" and first["if"] == "runner.os == 'Windows'"
    assert first["env"] == {"CDKIT_RUNNER_OS": "${{ runner.os }}"}
    proc = subprocess.run(["bash", "-e", "-c", first["run"]], env={"CDKIT_RUNNER_OS": "Windows", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout.startswith("::error title=cdkit does not run on Windows::cdkit's Action runs on Linux and "
                                  "macOS runners only")


def test_every_job_has_a_timeout(init_workflows: list[Path]) -> None:
    """A job without `timeout-minutes` waits GitHub's 6 hours on a hung stage (generated ones: tests/test_fanout.py)."""
    for path in [*EXAMPLES, *OWN_WORKFLOWS, *init_workflows]:
        for name, job in load(path)["jobs"].items():
            assert int(job.get("timeout-minutes", 0)) > 0, f"{path}: job {name} has no timeout-minutes"


def test_no_file_pins_cdkits_own_action_to_a_hand_written_sha() -> None:
    """A SHA written down goes stale while its comment keeps naming a version (issue 11 §4): only `cdkit init`
    and `cdkit workflow generate` write one, resolved from the tag at that moment."""
    shipped = [ROOT / "README.md", *EXAMPLES, *OWN_WORKFLOWS, *(ROOT / "cdkit" / "templates").iterdir()]
    for path in shipped:
        found = re.findall(r"cdkit/cdkit@[0-9a-f]{40}", path.read_text())
        assert not found, f"{path}: {found}"
