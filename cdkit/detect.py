"""What a repository is built with, as the stages `cdkit init` writes for it.

Each detector looks at the files a project of its kind always has (`pyproject.toml`,
`package.json`, `go.mod`, `Cargo.toml`, a `Makefile`) and proposes only stages whose tool is
here now, so the starter pipeline passes on the day it is written. A tool the project
configures but this machine lacks becomes a note, never a stage that fails.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

Which = Callable[[str], "str | None"]


class Proposal(NamedTuple):
    """One stage for `.cdkit.yml`."""

    name: str
    run: str
    on: tuple[str, ...]
    paths: tuple[str, ...] | None = None
    needs: tuple[str, ...] | None = None  # None: the default (the stage before it)
    allow_changes: bool = False
    comment: str = ""


class Detected(NamedTuple):
    kind: str  # python, node, go, rust, make
    stages: tuple[Proposal, ...]
    notes: tuple[str, ...] = ()


FAST = ("pre-push", "ci")  # quick checks: before every push and in CI
CI_ONLY = ("ci",)

PYTHON_PATHS = ("**/*.py", "pyproject.toml", "setup.cfg", "setup.py")
NODE_PATHS = ("**/*.js", "**/*.jsx", "**/*.mjs", "**/*.cjs", "**/*.ts", "**/*.tsx", "package.json",
              "package-lock.json", "pnpm-lock.yaml", "yarn.lock")
GO_PATHS = ("**/*.go", "go.mod", "go.sum")
RUST_PATHS = ("**/*.rs", "Cargo.toml", "Cargo.lock")

# What `npm init` writes as the test script: a placeholder that always fails.
NPM_PLACEHOLDER_TEST = 'echo "Error: no test specified" && exit 1'


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _runs(*argv: str, cwd: Path | None = None) -> bool:
    """Whether a command works here now (a rustup proxy without a toolchain is on PATH, yet fails)."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _python_can_run(python: str, module: str, root: Path) -> bool:
    """Whether `python -m module` can run as a stage would, with the `python` on PATH in the project's root.

    Asked of `module.__main__`, not of `import module`: a directory of that name in the root (the
    `build/` setuptools leaves behind) imports as an empty namespace package, and `-m` then fails.
    """
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module + '.__main__'!r}) is None)"
    return _runs(python, "-c", probe, cwd=root)


def detect_python(root: Path, which: Which) -> Detected | None:
    if not any((root / name).is_file() for name in ("pyproject.toml", "setup.py", "setup.cfg")):
        return None
    python = "python" if which("python") else "python3"
    pyproject, setup_cfg, tox_ini = (_read(root / n) for n in ("pyproject.toml", "setup.cfg", "tox.ini"))
    stages: list[Proposal] = []
    notes: list[str] = []
    ruff = "[tool.ruff" in pyproject or (root / "ruff.toml").is_file() or (root / ".ruff.toml").is_file()
    flake8 = (root / ".flake8").is_file() or "[flake8]" in setup_cfg or "[flake8]" in tox_ini
    linters = ((ruff, "ruff", "ruff check .", ("ruff.toml", ".ruff.toml")),
               (flake8, "flake8", "flake8", (".flake8", "tox.ini")))
    for configured, tool, command, config_files in linters:
        if not configured:
            continue
        if which(tool):
            stages.append(Proposal("lint", command, FAST, PYTHON_PATHS + config_files, needs=()))
            break
        notes.append(f"{tool} is configured but not on PATH: no lint stage (install it, then add one)")
    has_tests = any((root / d).is_dir() for d in ("tests", "test")) or any(root.glob("test_*.py"))
    if has_tests:
        if _python_can_run(python, "pytest", root):
            stages.append(Proposal("test", f"{python} -m pytest -q", FAST, PYTHON_PATHS, needs=()))
        else:
            notes.append(f"there are tests but `{python} -m pytest` cannot run here: no test stage (pip install pytest)")
    if (root / "pyproject.toml").is_file() and _python_can_run(python, "build", root):
        stages.append(Proposal("build", f"{python} -m build", CI_ONLY, needs=tuple(s.name for s in stages) or None,
                               allow_changes=True, comment="writes dist/ and *.egg-info"))
    return Detected("python", tuple(stages), tuple(notes))


def _node_runner(root: Path) -> str:
    for lock, tool in (("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"), ("bun.lockb", "bun")):
        if (root / lock).is_file():
            return tool
    return "npm"


def detect_node(root: Path, which: Which) -> Detected | None:
    package = root / "package.json"
    if not package.is_file():
        return None
    try:
        scripts = json.loads(_read(package)).get("scripts") or {}
    except (ValueError, AttributeError):
        return Detected("node", (), ("package.json is not valid JSON: no Node stages",))
    tool = _node_runner(root)
    if not which(tool):
        return Detected("node", (), (f"package.json found but `{tool}` is not on PATH: no Node stages",))
    stages: list[Proposal] = []
    if isinstance(scripts.get("lint"), str):
        stages.append(Proposal("lint", f"{tool} run lint", FAST, NODE_PATHS, needs=()))
    test = scripts.get("test")
    if isinstance(test, str) and test.strip() != NPM_PLACEHOLDER_TEST:
        stages.append(Proposal("test", f"{tool} test", FAST, NODE_PATHS, needs=()))
    if isinstance(scripts.get("build"), str):
        stages.append(Proposal("build", f"{tool} run build", CI_ONLY, needs=tuple(s.name for s in stages) or None))
    notes = () if stages else ("package.json has no lint, test or build script: no Node stages",)
    return Detected("node", tuple(stages), notes)


def detect_go(root: Path, which: Which) -> Detected | None:
    if not (root / "go.mod").is_file():
        return None
    if not which("go"):
        return Detected("go", (), ("go.mod found but `go` is not on PATH: no Go stages",))
    return Detected("go", (
        Proposal("vet", "go vet ./...", FAST, GO_PATHS, needs=()),
        Proposal("test", "go test ./...", FAST, GO_PATHS, needs=()),
    ))


def detect_rust(root: Path, which: Which) -> Detected | None:
    if not (root / "Cargo.toml").is_file():
        return None
    cargo = which("cargo")
    if not cargo or not _runs(cargo, "--version"):
        return Detected("rust", (), ("Cargo.toml found but `cargo` does not run here: no Rust stages "
                                     "(install a toolchain: rustup default stable)",))
    stages = [Proposal("test", "cargo test", FAST, RUST_PATHS, needs=())]
    notes: list[str] = []
    if _runs(cargo, "clippy", "--version"):
        stages.insert(0, Proposal("clippy", "cargo clippy", FAST, RUST_PATHS, needs=()))
    else:
        notes.append("cargo clippy is not installed: no clippy stage (rustup component add clippy)")
    if not (root / "Cargo.lock").is_file():
        notes.append("there is no Cargo.lock: cargo writes one, and a stage that adds a file fails; commit one "
                     "(cargo generate-lockfile) or add Cargo.lock to .gitignore")
    return Detected("rust", tuple(stages), tuple(notes))


_MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", re.MULTILINE)


def detect_make(root: Path, which: Which) -> Detected | None:
    makefile = next((root / n for n in ("GNUmakefile", "makefile", "Makefile") if (root / n).is_file()), None)
    if makefile is None:
        return None
    targets = set(_MAKE_TARGET.findall(_read(makefile)))
    wanted = [t for t in ("lint", "test") if t in targets]
    if not wanted:
        return None
    if not which("make"):
        return Detected("make", (), ("the Makefile has lint/test targets but `make` is not on PATH",))
    return Detected("make", tuple(Proposal(t, f"make {t}", FAST, needs=()) for t in wanted))


DETECTORS: dict[str, Callable[[Path, Which], Detected | None]] = {
    "make": detect_make,  # first: a project's own `make test` is what its people run
    "python": detect_python,
    "node": detect_node,
    "go": detect_go,
    "rust": detect_rust,
}


def detect(root: Path, which: Which = shutil.which) -> tuple[list[Proposal], list[str], list[str]]:
    """(stages, kinds found, notes) from every detector.

    A Makefile target wins over the same stage of a language (its `make test` is what the
    project's people run); two languages' stages of one name are told apart by a prefix.
    """
    found = [d for d in (detector(root, which) for detector in DETECTORS.values()) if d is not None]
    stages: list[Proposal] = []
    notes: list[str] = []
    from_make: set[str] = set()
    for result in found:
        notes += result.notes
        renamed: dict[str, str] = {}
        for s in result.stages:
            if s.name in from_make:
                renamed[s.name] = s.name
                notes.append(f"`make {s.name}` is the {s.name} stage ({result.kind}'s own is left out)")
                continue
            taken = any(p.name == s.name for p in stages)
            renamed[s.name] = f"{result.kind}-{s.name}" if taken else s.name
            needs = tuple(renamed[n] for n in s.needs if n in renamed) if s.needs is not None else None
            stages.append(s._replace(name=renamed[s.name], needs=needs))
        if result.kind == "make":
            from_make = {s.name for s in result.stages}
    return stages, [d.kind for d in found], notes
