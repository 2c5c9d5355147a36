"""`cdkit init` on small projects of each kind, made here (no network): stages that fit and pass today."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cdkit.config import Stage, load
from cdkit.detect import detect
from tests.helpers import allowed_signers, cdkit, commit, git, make_bare, make_repo, signing_env

PYPROJECT = '[project]\nname = "calc"\nversion = "0.1.0"\n'
PY_TEST = "def test_adds():\n    assert 1 + 1 == 2\n"
GITIGNORE = "__pycache__/\n.pytest_cache/\n/target\nnode_modules/\n"
# Read before the tests move HOME: where this machine's Rust toolchain lives.
REAL_HOME = Path.home()
RUST_ENV = {"RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(REAL_HOME / ".rustup")),
            "CARGO_HOME": os.environ.get("CARGO_HOME", str(REAL_HOME / ".cargo")), "CARGO_NET_OFFLINE": "true"}
BOB = {"GIT_AUTHOR_NAME": "Bob Reviewer", "GIT_AUTHOR_EMAIL": "bob@example.com",
       "GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com"}


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = make_repo(tmp_path / "project")
    commit(repo, {".gitignore": GITIGNORE, **files}, "the project as it is")
    return repo


def stages_of(repo: Path) -> dict[str, Stage]:
    return {s.name: s for s in load(repo / ".cdkit.yml").stages}


def init_and_commit(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = cdkit("init", *args, cwd=repo, env=env)
    assert result.returncode == 0, result.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "adopt cdkit")
    return result.stdout


def test_python_project_gets_pytest_and_the_push_passes_through_the_hook(tmp_path: Path) -> None:
    repo = project(tmp_path, {"pyproject.toml": PYPROJECT, "tests/test_calc.py": PY_TEST})
    out = init_and_commit(repo)
    assert "cdkit: found python; stages: test\n" in out
    test = stages_of(repo)["test"]
    assert test.run == "python -m pytest -q" and test.on == ("pre-push", "ci")
    assert test.paths == ("**/*.py", "pyproject.toml", "setup.cfg", "setup.py")
    # validate and plan ran on what was written, then the next three commands
    assert "$ cdkit validate\n" in out and ": valid (1 stage(s), 1 environment(s))" in out
    assert "$ cdkit plan --trigger pre-push\n" in out and "  run  test  paths matched" in out
    assert out.endswith("try next:\n  cdkit run             # run the stages now, in this work tree\n"
                        "  cdkit hook install    # run the pre-push stages before every git push\n"
                        "  cdkit doctor          # check the hook, the tools the stages call, the remote and the token\n")
    # the stages pass today: a real push through the installed hook
    remote = make_bare(tmp_path / "remote.git")
    git(repo, "remote", "add", "origin", str(remote))
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    pushed = subprocess_push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert "✓ test passed" in pushed.stderr
    # and a broken test blocks the next push (the stage is real, not a placeholder)
    commit(repo, {"tests/test_calc.py": PY_TEST.replace("== 2", "== 3")}, "break it")
    assert subprocess_push(repo).returncode != 0


def subprocess_push(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], cwd=repo, capture_output=True,
                          text=True, timeout=300)


def test_a_leftover_build_directory_is_not_the_build_package(tmp_path: Path) -> None:
    # setuptools leaves build/ in the root; `import build` there finds it (an empty namespace
    # package) though `python -m build` cannot run: no build stage is proposed for it.
    leftover = {"pyproject.toml": PYPROJECT, "build/lib/calc/__init__.py": "", "tests/test_calc.py": PY_TEST}
    repo = project(tmp_path / "leftover", leftover)
    assert subprocess.run(["python3", "-c", "import build"], cwd=repo).returncode == 0  # what fooled the old probe
    if subprocess.run(["python3", "-m", "build", "--version"], cwd=repo, capture_output=True).returncode == 0:
        pytest.skip("the real `build` is installed here: the leftover directory cannot be told from it")
    assert "build" not in [s.name for s in detect(repo, which=lambda tool: None if tool == "python" else
                                                   shutil.which(tool))[0]]
    # Positive control: a `build` that `python -m build` runs is proposed.
    runnable = {**leftover, "build/__init__.py": "", "build/__main__.py": "print('built')\n"}
    repo = project(tmp_path / "runnable", runnable)
    assert "build" in [s.name for s in detect(repo, which=lambda tool: None if tool == "python" else
                                              shutil.which(tool))[0]]


def test_configured_linter_that_is_missing_is_a_note_not_a_failing_stage(tmp_path: Path) -> None:
    repo = project(tmp_path, {"pyproject.toml": PYPROJECT + "\n[tool.ruff]\nline-length = 100\n",
                              "tests/test_calc.py": PY_TEST})
    stages, kinds, notes = detect(repo, which=lambda tool: None if tool == "ruff" else shutil.which(tool))
    assert [s.name for s in stages] == ["test"] and kinds == ["python"]
    assert notes == ["ruff is configured but not on PATH: no lint stage (install it, then add one)"]
    # positive control: with ruff on PATH the lint stage is written
    stages, _, notes = detect(repo, which=lambda tool: "/usr/bin/ruff" if tool == "ruff" else shutil.which(tool))
    assert [(s.name, s.run) for s in stages] == [("lint", "ruff check ."), ("test", "python -m pytest -q")]
    assert notes == []


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed here")
def test_node_project_uses_its_scripts_and_they_pass(tmp_path: Path) -> None:
    package = ('{"name": "web", "version": "1.0.0", "scripts": {"lint": "node -e \\"process.exit(0)\\"", '
               '"test": "node test.js", "build": "node -e 0"}}\n')
    repo = project(tmp_path, {"package.json": package, "test.js": "require('assert').strictEqual(1 + 1, 2);\n"})
    out = init_and_commit(repo)
    stages = stages_of(repo)
    assert {name: s.run for name, s in stages.items()} == {
        "lint": "npm run lint", "test": "npm test", "build": "npm run build"}
    assert stages["build"].on == ("ci",) and stages["build"].needs == ("lint", "test")
    assert "**/*.ts" in (stages["test"].paths or ())
    assert "cdkit: found node; stages: lint, test, build" in out
    ran = cdkit("run", cwd=repo)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_npm_placeholder_test_script_is_not_a_stage(tmp_path: Path) -> None:
    package = '{"name": "web", "scripts": {"test": "echo \\"Error: no test specified\\" && exit 1"}}\n'
    repo = project(tmp_path, {"package.json": package})
    stages, _, notes = detect(repo, which=lambda tool: "/usr/bin/npm")
    assert stages == [] and notes == ["package.json has no lint, test or build script: no Node stages"]


def test_pnpm_lock_means_pnpm(tmp_path: Path) -> None:
    repo = project(tmp_path, {"package.json": '{"scripts": {"test": "vitest"}}\n', "pnpm-lock.yaml": "x\n"})
    stages, _, _ = detect(repo, which=lambda tool: f"/usr/bin/{tool}")
    assert [s.run for s in stages] == ["pnpm test"]
    assert detect(repo, which=lambda tool: None)[2] == ["package.json found but `pnpm` is not on PATH: no Node stages"]


def test_go_project(tmp_path: Path) -> None:
    repo = project(tmp_path, {"go.mod": "module example.com/calc\n\ngo 1.21\n", "calc.go": "package calc\n"})
    stages, kinds, notes = detect(repo, which=lambda tool: "/usr/local/go/bin/go" if tool == "go" else None)
    assert [(s.name, s.run, s.on) for s in stages] == [
        ("vet", "go vet ./...", ("pre-push", "ci")), ("test", "go test ./...", ("pre-push", "ci"))]
    assert stages[0].paths == ("**/*.go", "go.mod", "go.sum") and kinds == ["go"] and notes == []
    assert detect(repo, which=lambda tool: None)[0:3:2] == ([], ["go.mod found but `go` is not on PATH: no Go stages"])


def test_go_project_without_go_writes_a_pipeline_that_still_validates(tmp_path: Path) -> None:
    repo = project(tmp_path, {"go.mod": "module example.com/calc\n"})
    out = init_and_commit(repo)
    if shutil.which("go"):
        assert set(stages_of(repo)) == {"vet", "test"}
    else:
        assert "cdkit: note: go.mod found but `go` is not on PATH: no Go stages" in out
        assert list(stages_of(repo)) == ["check"]
    assert cdkit("validate", cwd=repo).returncode == 0


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed here")
def test_rust_project_gets_clippy_and_test_and_they_pass(tmp_path: Path) -> None:
    repo = project(tmp_path, {
        "Cargo.toml": '[package]\nname = "calc"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n',
        "src/lib.rs": "pub fn add(a: i32, b: i32) -> i32 { a + b }\n\n#[cfg(test)]\nmod tests {\n"
                      "    #[test]\n    fn adds() { assert_eq!(super::add(1, 1), 2); }\n}\n",
    })
    out = cdkit("init", cwd=repo, env=RUST_ENV).stdout
    if "stages: check" in out:
        pytest.skip("cargo is on PATH but has no toolchain here")
    assert "cdkit: note: there is no Cargo.lock: cargo writes one" in out
    # as a Rust project commits it: then the stages leave the tree as it was
    subprocess.run(["cargo", "generate-lockfile", "--offline"], cwd=repo, env={**os.environ, **RUST_ENV}, check=True,
                   capture_output=True)
    init_and_commit(repo, "--force", env=RUST_ENV)
    stages = stages_of(repo)
    clippy = subprocess.run(["cargo", "clippy", "--version"], capture_output=True, env={**os.environ, **RUST_ENV})
    expected = {"test": "cargo test"} | ({"clippy": "cargo clippy"} if clippy.returncode == 0 else {})
    assert {name: s.run for name, s in stages.items()} == expected
    ran = cdkit("run", cwd=repo, env=RUST_ENV)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_makefile_targets_win_over_the_language_ones(tmp_path: Path) -> None:
    makefile = "lint:\n\ttrue\n\ntest:\n\ttest -f pyproject.toml\n\nbuild:\n\ttrue\n"
    repo = project(tmp_path, {"Makefile": makefile, "pyproject.toml": PYPROJECT, "tests/test_calc.py": PY_TEST})
    out = init_and_commit(repo)
    assert {name: s.run for name, s in stages_of(repo).items()} == {"lint": "make lint", "test": "make test"}
    assert "cdkit: note: `make test` is the test stage (python's own is left out)" in out
    ran = cdkit("run", cwd=repo)
    assert ran.returncode == 0, ran.stdout + ran.stderr


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed here")
def test_two_languages_are_told_apart(tmp_path: Path) -> None:
    repo = project(tmp_path, {"pyproject.toml": PYPROJECT, "tests/test_calc.py": PY_TEST,
                              "package.json": '{"scripts": {"test": "node -e 0"}}\n'})
    init_and_commit(repo)
    assert {name: s.run for name, s in stages_of(repo).items()} == {
        "test": "python -m pytest -q", "node-test": "npm test"}
    ran = cdkit("run", cwd=repo)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_nothing_recognised_writes_one_passing_stage_and_says_so(tmp_path: Path) -> None:
    repo = project(tmp_path, {"README": "hello\n"})
    out = init_and_commit(repo)
    assert "cdkit: found nothing recognised (one placeholder stage `check`); stages: check" in out
    assert "nothing recognised here: replace with your checks" in (repo / ".cdkit.yml").read_text()
    assert cdkit("run", cwd=repo).returncode == 0


def test_init_in_a_repository_without_commits_says_plan_needs_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "empty")
    result = cdkit("init", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "(no commit yet: commit something, then `cdkit plan`)" in result.stdout


def test_existing_cdkit_yaml_is_not_overwritten(tmp_path: Path) -> None:
    repo = project(tmp_path, {".cdkit.yaml": "mine\n"})
    result = cdkit("init", cwd=repo)
    assert result.returncode == 2 and ".cdkit.yaml already exist(s)" in result.stderr
    assert (repo / ".cdkit.yaml").read_text() == "mine\n" and not (repo / ".cdkit.yml").exists()
    forced = cdkit("init", "--force", cwd=repo)
    assert forced.returncode == 0, forced.stderr
    assert not (repo / ".cdkit.yaml").exists(), "--force leaves one pipeline file, not two"


def test_approval_local_is_an_offline_delivery_setup_that_releases(tmp_path: Path) -> None:
    repo = project(tmp_path, {"pyproject.toml": PYPROJECT, "tests/test_calc.py": PY_TEST})
    out = init_and_commit(repo, "--approval", "local")
    assert out.startswith("cdkit: wrote .cdkit.yml (delivery mode: main waits for approval via local)\n")
    assert not (repo / ".github").exists(), "local approval needs no GitHub workflow"
    pipeline = load(repo / ".cdkit.yml")
    assert pipeline.mode == "delivery" and pipeline.environments[0].approval.via == "local"
    sha = commit(repo, allowed_signers("bob@example.com"), "Bob signs approvals")  # local approvals are signed
    assert cdkit("run", cwd=repo).returncode == 0
    adopt = cdkit("adopt", "--env", "production", "--empty", cwd=repo)  # a new production: it runs nothing yet
    assert adopt.returncode == 0, adopt.stderr
    # the author cannot approve their own commits; a reviewer can, then the deploy goes through, offline
    assert cdkit("approve", sha, "--env", "production", cwd=repo).returncode != 0
    approved = cdkit("approve", sha, "--env", "production", cwd=repo, env={**BOB, **signing_env("bob@example.com")})
    assert approved.returncode == 0, approved.stderr
    deployed = cdkit("deploy", "--env", "production", cwd=repo)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
