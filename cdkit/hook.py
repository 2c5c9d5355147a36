"""Install, remove and inspect cdkit's pre-push hook.

The hook is a tiny POSIX sh script carrying a marker line, so install and
uninstall recognise their own file (installing twice changes nothing). A foreign
pre-push hook already there is kept beside it as `pre-push.legacy`, run first
with the same arguments and stdin, and put back by uninstall.

The script `exec`s the interpreter cdkit was installed with, by absolute path
(a PATH shim such as pyenv's costs ~100 ms per push), with `-I` (no user site,
no PYTHON* variables) and `-S`: site-packages `.pth` files (editable installs,
certificate injectors) can cost more than the whole hook; the directories cdkit
and PyYAML live in are recorded instead. If that interpreter is gone, the hook
says how to reinstall and blocks the push.
"""
from __future__ import annotations

import os
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from cdkit import git
from cdkit.errors import CdkitError
from cdkit.util import is_within

HOOK_NAME = "pre-push"
LEGACY_NAME = "pre-push.legacy"
MARKER = "cdkit-managed-hook"

_TEMPLATE = """\
#!/bin/sh
# {marker}: written by `cdkit hook install`; `cdkit hook uninstall` removes it and puts back
# the previous pre-push hook, if any (kept beside it as pre-push.legacy and run first).
# Skip once: `CDKIT=0 git push` (a previous hook still runs) or `git push --no-verify` (no hook runs).
CDKIT_PYTHON={python}
CDKIT_SYS_PATH={sys_path}
if [ "${{CDKIT-}}" = 0 ]; then
    echo "cdkit: CDKIT=0: pre-push stages skipped (CI still checks)" >&2
    if [ -x "${{0%/*}}/{legacy}" ]; then exec "${{0%/*}}/{legacy}" "$@"; fi
    exit 0
fi
if [ ! -x "$CDKIT_PYTHON" ]; then
    echo "cdkit: this pre-push hook runs $CDKIT_PYTHON, which no longer exists." >&2
    echo "cdkit: reinstall it with the cdkit you use now: \\`cdkit hook install\\` (or skip it once: git push --no-verify)" >&2
    exit 1
fi
exec "$CDKIT_PYTHON" -I -S -c '{bootstrap}' "$CDKIT_SYS_PATH" "$0" "$@"
"""

# Runs under `python -I -S`: add the recorded import paths, then hand over. They go after the
# standard library, so every stdlib import is found at its first stop. No single quotes in
# here: it sits inside a single-quoted shell word.
_BOOTSTRAP = """import sys
sys.path += sys.argv.pop(1).split("\\n")
try:
    from cdkit.hook_entry import main_and_exit
except ImportError as exc:
    sys.stderr.write(f"cdkit: cannot import cdkit with {sys.executable} ({exc}); reinstall the hook: cdkit hook install\\n")
    sys.exit(1)
main_and_exit()"""


class HookError(CdkitError):
    """The hook cannot be installed or removed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class HookLocation:
    directory: Path
    hooks_path: str | None  # core.hooksPath as configured, when set
    inside_work_tree: bool  # a hooks directory in the repository is usually committed and shared

    @property
    def hook(self) -> Path:
        return self.directory / HOOK_NAME

    @property
    def legacy(self) -> Path:
        return self.directory / LEGACY_NAME


@dataclass(frozen=True)
class HookState:
    location: HookLocation
    exists: bool
    ours: bool
    executable: bool
    crlf: bool
    python: str | None  # the interpreter our hook runs
    python_exists: bool
    current: bool  # byte for byte what `install` would write now
    legacy_exists: bool
    legacy_executable: bool

    @property
    def healthy(self) -> bool:
        return self.ours and self.executable and not self.crlf and self.python_exists


def locate(cwd: str | os.PathLike[str] | None = None) -> HookLocation:
    repo = git.find_repo(cwd)
    directory = git.hooks_dir(cwd=cwd)
    inside = repo.root is not None and is_within(directory, repo.root)
    return HookLocation(directory, git.hooks_path_setting(cwd=cwd), inside)




def import_paths() -> list[str]:
    """The directories `python -S` must be told about: where cdkit and PyYAML are installed, and croniter and
    dateutil, which a pipeline with windows imports (found without importing them)."""
    import importlib.util

    import yaml

    import cdkit

    origins = [cdkit.__file__, yaml.__file__]
    for name in ("croniter", "dateutil"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            origins.append(spec.origin)
    paths: list[str] = []
    for origin in origins:
        directory = str(Path(origin or "").resolve().parent.parent)
        if directory not in paths:
            paths.append(directory)
    return paths


def render(python: str | None = None, paths: list[str] | None = None) -> str:
    """The hook script for this interpreter and these import paths."""
    python = python or os.path.abspath(sys.executable)
    paths = paths if paths is not None else import_paths()
    if any("\n" in p for p in [python, *paths]):
        raise HookError(f"cannot record an install path containing a newline ({python!r}, {paths!r})")
    return _TEMPLATE.format(marker=MARKER, python=shlex.quote(python), sys_path=shlex.quote("\n".join(paths)),
                            legacy=LEGACY_NAME, bootstrap=_BOOTSTRAP)


def is_ours(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return MARKER.encode() in f.read(4096)
    except OSError:
        return False


def _recorded_python(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("CDKIT_PYTHON="):
            words = shlex.split(line[len("CDKIT_PYTHON="):])
            return words[0] if words else None
    return None


def _executable(path: Path) -> bool:
    return path.exists() and os.access(path, os.X_OK)


def hook_state(cwd: str | os.PathLike[str] | None = None) -> HookState:
    location = locate(cwd)
    hook = location.hook
    exists = hook.is_file()
    data = hook.read_bytes() if exists else b""
    ours = MARKER.encode() in data
    python = _recorded_python(data.decode("utf-8", "replace").replace("\r", "")) if ours else None
    return HookState(
        location=location, exists=exists, ours=ours, executable=_executable(hook), crlf=b"\r\n" in data,
        python=python, python_exists=bool(python) and os.access(str(python), os.X_OK),
        current=ours and data == render().encode(), legacy_exists=location.legacy.exists(),
        legacy_executable=_executable(location.legacy),
    )


def _write_hook(path: Path) -> None:
    """Write atomically (a push running right now sees the old or the new file, never half) and
    executable for everyone who can read it, as git needs."""
    tmp = path.with_name(f".{path.name}.cdkit-tmp")
    tmp.write_bytes(render().encode())
    mode = tmp.stat().st_mode
    tmp.chmod(mode | ((mode & 0o444) >> 2) | stat.S_IXUSR)
    os.replace(tmp, path)


def install(*, force: bool = False, cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Install (or repair, or update) the hook; return what was done, line by line."""
    state = hook_state(cwd)
    location = state.location
    messages: list[str] = []
    if location.hooks_path:
        if location.inside_work_tree and not force:
            raise HookError(
                f"core.hooksPath is set to {location.hooks_path!r}, a directory inside this repository, so its hooks "
                "are probably committed and shared (husky and similar tools do this); a hook recording this machine's "
                "Python does not belong there. Either call cdkit from that hook (see hooks/pre-push in cdkit's "
                "repository: `exec cdkit hook run pre-push \"$@\"`), or install there anyway with "
                "`cdkit hook install --force`."
            )
        messages.append(f"core.hooksPath is set ({location.hooks_path}): installing into {location.directory}, "
                        "where git looks for hooks")
    location.directory.mkdir(parents=True, exist_ok=True)
    if state.ours:
        if state.current and state.executable:
            messages.append(f"the pre-push hook is already installed: {location.hook}")
            return messages
        repairs = [what for what, bad in (("not executable", not state.executable), ("CRLF line endings", state.crlf))
                   if bad]
        _write_hook(location.hook)
        if repairs:
            messages.append(f"repaired the pre-push hook ({', '.join(repairs)}): {location.hook}")
        else:
            messages.append(f"updated the pre-push hook (it now runs {os.path.abspath(sys.executable)}): "
                            f"{location.hook}")
        return messages
    if state.exists:
        if state.legacy_exists and not force:
            raise HookError(
                f"{location.hook} is another tool's hook and {location.legacy} already exists, so there is nowhere to "
                "keep the current one; merge them by hand, or `cdkit hook install --force` to replace "
                f"{LEGACY_NAME} with the current hook"
            )
        os.replace(location.hook, location.legacy)
        messages.append(f"kept the existing pre-push hook as {location.legacy}; it runs first, with the same input")
    _write_hook(location.hook)
    messages.append(f"installed the pre-push hook: {location.hook} (runs {os.path.abspath(sys.executable)})")
    return messages


def uninstall(*, cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove cdkit's hook and put back the one it replaced; never touch a hook that is not ours."""
    location = locate(cwd)
    if not location.hook.exists():
        if location.legacy.exists():
            os.replace(location.legacy, location.hook)
            return [f"cdkit's hook was not there; restored {location.hook} from {LEGACY_NAME}"]
        return [f"no pre-push hook installed in {location.directory}; nothing to do"]
    if not is_ours(location.hook):
        raise HookError(f"{location.hook} is not cdkit's hook (no {MARKER} line); left as it is")
    location.hook.unlink()
    if location.legacy.exists():
        os.replace(location.legacy, location.hook)
        return [f"removed cdkit's pre-push hook and restored the previous one: {location.hook}"]
    return [f"removed cdkit's pre-push hook: {location.hook}"]


def describe(state: HookState) -> tuple[list[str], list[str]]:
    """(facts, problems) for `cdkit hook status`; each problem says how to fix it."""
    loc = state.location
    facts = [f"hooks directory: {loc.directory}" + (f" (core.hooksPath = {loc.hooks_path})" if loc.hooks_path else "")]
    problems: list[str] = []
    if not state.exists:
        problems.append("no pre-push hook is installed: run `cdkit hook install`")
    elif not state.ours:
        problems.append(f"{loc.hook} is another tool's hook: `cdkit hook install` keeps it as {LEGACY_NAME} and "
                        "chains it")
    else:
        facts.append(f"pre-push hook: {loc.hook} (cdkit's)")
        facts.append(f"interpreter: {state.python}")
        if not state.python_exists:
            problems.append(f"the interpreter {state.python} is gone, so every push is blocked: "
                            "run `cdkit hook install` again")
        if not state.executable:
            problems.append("the hook is not executable, so git ignores it: run `cdkit hook install` to repair it")
        if state.crlf:
            problems.append("the hook has CRLF line endings, which sh cannot run: run `cdkit hook install` to "
                            "repair it")
        if state.python_exists and state.executable and not state.crlf and not state.current:
            facts.append("the hook was written by another cdkit install (`cdkit hook install` updates it)")
    if state.legacy_exists:
        runs = "runs first" if state.legacy_executable else "is NOT executable, so it is skipped (chmod +x it)"
        facts.append(f"chained hook: {loc.legacy} ({runs})")
    return facts, problems
