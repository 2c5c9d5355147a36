#!/usr/bin/env python3
"""Release cdkit: `python scripts/release.py X.Y.Z [--date YYYY-MM-DD]`, from a clean work tree.

One commit and one annotated tag, nothing pushed:
1. `cdkit.__version__` becomes X.Y.Z (pyproject.toml reads its version from there);
2. CHANGELOG.md's `## Unreleased` section (it must list something) becomes `## vX.Y.Z (date)`, under a
   new empty `## Unreleased`;
3. what carries the version is written again: examples/*.yml (cdkit's Action by the tag vX.Y.Z, as
   `cdkit init` writes it offline) and the pre-commit `rev:` in .pre-commit-hooks.yaml;
4. the commit `Release vX.Y.Z`, and the annotated tag `vX.Y.Z` on it.

Then push both (`git push origin HEAD vX.Y.Z`): from then on `cdkit init` of an installed X.Y.Z
resolves the tag with `git ls-remote` and pins the Action to that commit's SHA.

Refused, changing nothing: a dirty work tree, a version that is not X.Y.Z or not above the current
one, a tag that exists already, an empty or missing `## Unreleased` section.
"""
from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
from pathlib import Path

VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)
UNRELEASED = re.compile(r"^## Unreleased\n(?P<body>.*?)(?=^## |\Z)", re.M | re.S)


class ReleaseError(Exception):
    """A release that must not happen; the message says why and what to do."""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def parse(version: str) -> tuple[int, int, int]:
    match = VERSION.match(version)
    if match is None:
        raise ReleaseError(f"{version!r} is not a version X.Y.Z (digits only, no leading v)")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def current_version(root: Path) -> str:
    match = VERSION_LINE.search((root / "cdkit" / "__init__.py").read_text())
    if match is None:
        raise ReleaseError("cdkit/__init__.py has no `__version__ = \"X.Y.Z\"` line")
    return match.group(1)


def changelog_with_release(text: str, version: str, date: str) -> str:
    match = UNRELEASED.search(text)
    if match is None:
        raise ReleaseError("CHANGELOG.md has no `## Unreleased` section: add one listing what this release changes")
    if not match.group("body").strip():
        raise ReleaseError("CHANGELOG.md's `## Unreleased` section is empty: say what this release changes")
    released = f"## Unreleased\n\n## v{version} ({date})\n{match.group('body').rstrip()}\n\n"
    return text[:match.start()] + released + text[match.end():].lstrip("\n")


def write_versioned_files(root: Path, version: str) -> None:
    """The files that name the version, written again by the released code itself."""
    init = root / "cdkit" / "__init__.py"
    init.write_text(VERSION_LINE.sub(f'__version__ = "{version}"', init.read_text(), count=1))
    hooks = root / ".pre-commit-hooks.yaml"
    hooks.write_text(re.sub(r"^(#\s+rev: )v\S+$", rf"\g<1>v{version}", hooks.read_text(), count=1, flags=re.M))
    # A fresh interpreter on this tree, so the examples come from the new version's code.
    script = ("from pathlib import Path\nfrom cdkit.commands.init import render_workflow, tag_ref\n"
              "for stem, (mode, approval) in {'deployment': ('deployment', None), "
              "'delivery-environment': ('delivery', 'environment'), 'delivery-review': ('delivery', 'review')}.items():\n"
              "    Path('examples', stem + '.yml').write_text(render_workflow(mode, approval, action=tag_ref()))\n")
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, env={"PYTHONPATH": str(root), "PATH": ""})


def release(root: Path, version: str, date: str) -> str:
    """Bump, commit and tag; returns the tag. Checks everything before changing anything."""
    if git(root, "status", "--porcelain", "--untracked-files=normal"):
        raise ReleaseError("the work tree has uncommitted changes: commit or stash them, then release")
    current = current_version(root)
    if parse(version) <= parse(current):
        raise ReleaseError(f"v{version} is not above the current version {current}")
    tag = f"v{version}"
    if git(root, "tag", "--list", tag):
        raise ReleaseError(f"the tag {tag} exists already: pick the next version")
    changelog = root / "CHANGELOG.md"
    if not changelog.exists():
        raise ReleaseError("there is no CHANGELOG.md: add one with a `## Unreleased` section")
    new_changelog = changelog_with_release(changelog.read_text(), version, date)
    changelog.write_text(new_changelog)
    write_versioned_files(root, version)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", f"Release {tag}")
    git(root, "tag", "-a", tag, "-m", f"cdkit {tag}")
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="the new version, X.Y.Z")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="the release date (default: today)")
    args = parser.parse_args(argv)
    root = Path(git(Path.cwd(), "rev-parse", "--show-toplevel"))
    try:
        tag = release(root, args.version, args.date)
    except ReleaseError as exc:
        print(f"release: {exc}; nothing was changed", file=sys.stderr)
        return 2
    sha = git(root, "rev-parse", f"{tag}^{{commit}}")
    print(f"release: {tag} is commit {sha}. Push it: git push origin HEAD {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
