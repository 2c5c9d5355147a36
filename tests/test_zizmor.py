"""zizmor (GitHub Actions static analysis), default persona, zero findings: on action.yml, this repository's
workflows, the examples, what `cdkit init` writes and the README's quick-start snippet.

A finding that is wrong is silenced where it occurs with `# zizmor: ignore[audit]` and a comment saying why.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.test_workflows import ACTION, EXAMPLES, OWN_WORKFLOWS, init_workflows  # noqa: F401 - a fixture


def zizmor(*paths: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("zizmor") or str(Path(sys.executable).parent / "zizmor")
    if not Path(exe).exists():
        pytest.fail("zizmor is not installed: pip install -e '.[test]' installs it")
    return subprocess.run([exe, "--offline", "--format", "plain", *map(str, paths)], capture_output=True, text=True)


def findings(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_the_action_the_workflows_and_the_examples_have_no_findings(init_workflows: list[Path]) -> None:
    result = zizmor(ACTION, *OWN_WORKFLOWS, *EXAMPLES, *init_workflows)
    assert result.returncode == 0 and "No findings to report" in findings(result), findings(result)


def test_the_readme_quick_start_has_no_findings(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The GitHub Action"):]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert snippet is not None
    body = snippet.group(1).replace("cdkit/cdkit@<full commit sha> # vX", "cdkit/cdkit@" + "0" * 40 + " # v0.1.0")
    workflow = tmp_path / "quick-start.yml"
    workflow.write_text("name: quick start\non: [push]\npermissions: {}\n" + body)
    result = zizmor(workflow)
    assert result.returncode == 0 and "No findings to report" in findings(result), findings(result)


def test_zizmor_does_find_what_it_should(tmp_path: Path) -> None:
    """The control: the quick start without `persist-credentials: false` is an artipacked finding."""
    workflow = tmp_path / "leaky.yml"
    workflow.write_text("name: leaky\non: [push]\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
                        "    timeout-minutes: 5\n    permissions: {contents: read}\n    steps:\n"
                        "      - uses: actions/checkout@d23441a48e516b6c34aea4fa41551a30e30af803 # v6.1.0\n"
                        "      - run: make\n")
    result = zizmor(workflow)
    assert result.returncode != 0 and "artipacked" in findings(result)
