"""Load and validate `.cdkit.yml` into a `Pipeline`.

The YAML is composed into nodes (so every value keeps its line and column),
converted with YAML 1.2 core rules (so `on`, `no` and `yes` stay strings rather
than YAML 1.1 booleans), validated against `schema.json`, then checked for what
a schema cannot say (duplicate stage names, unknown `needs`, cycles).
Every problem is reported as `FILE:LINE:COL: key.path: message`.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from cdkit import CONFIG_NAMES as CONFIG_NAMES  # re-exported: defined beside __version__ for the hook
from cdkit import DEFAULT_CONFIG as DEFAULT_CONFIG
from cdkit import __version__
from cdkit.errors import ConfigError

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from cdkit.ntuple import NamedTuple

if TYPE_CHECKING:
    # Imported where it is used: PyYAML costs every `git push` ~14 ms, and the pre-push hook
    # reuses a cached, already validated pipeline (see hook_entry) without parsing YAML.
    import yaml

SCHEMA_PATH = Path(__file__).with_name("schema.json")
DEFAULT_TIMEOUT = 30 * 60.0

JsonPath = tuple["str | int", ...]

# Tokens GitHub issues carry a recognisable prefix; one inline in a committed file is a leak.
TOKEN_PATTERN = r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"
DURATION_PATTERN = r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$"


class StageCI(NamedTuple):
    """How a fanned-out workflow runs a stage (`cdkit workflow generate`); the pre-push hook ignores it."""

    runs_on: str | None = None  # default: ubuntu-latest
    timeout_minutes: int | None = None  # default: the stage's timeout, rounded up
    shards: int = 1  # N jobs, each with CDKIT_SHARD_INDEX (1..N) and CDKIT_SHARD_TOTAL


class Stage(NamedTuple):
    name: str
    run: str
    on: tuple[str, ...] = ("ci",)
    paths: tuple[str, ...] | None = None
    needs: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    env: Mapping[str, str] = MappingProxyType({})
    working_directory: str | None = None
    # A stage that rewrites files (a formatter, a code generator) fails unless this says it may.
    allow_changes: bool = False
    env_passthrough: tuple[str, ...] = ()  # credentials the command may see (cdkit.secrets.without_credentials)
    ci: StageCI = StageCI()


class ApprovalPolicy(NamedTuple):
    via: str = "local"
    required: int = 1
    reviewers: tuple[str, ...] = ()
    merge: bool = False  # via: review: merge the release pull request once deployed
    # A released commit that names no GitHub account: "refuse" (fail closed) or "allow" (recorded).
    unidentified_authors: str = "refuse"
    signed: bool = True  # via: local: approvals must carry a signature verified against .cdkit/allowed_signers
    expires: float | None = None  # seconds after which an approval no longer counts (`expires: 7d`); None: never


class Verify(NamedTuple):
    """An environment's `verify:` check, run after its deploy command succeeds."""

    run: str
    timeout: float = 300.0
    retries: int = 1  # attempts
    interval: float = 10.0


class Window(NamedTuple):
    """A freeze (`deny`) or deploy (`allow`) window: open from each cron fire time for `duration` (cdkit.windows)."""

    name: str
    kind: str  # "deny" or "allow"
    schedule: str  # five cron fields, read in `timezone`'s wall-clock time
    duration: float  # seconds of elapsed time
    timezone: str = "UTC"


class Environment(NamedTuple):
    name: str
    mode: str
    deploy: str
    url: str | None = None
    approval: ApprovalPolicy = ApprovalPolicy()
    env_passthrough: tuple[str, ...] = ()  # credentials the deploy command may see
    verify: Verify | None = None
    on_failure: str = "stop"  # or "rollback": redeploy the last verified SHA
    soak: float = 0.0  # seconds a SHA must run verified here before the next environment takes it
    windows: tuple[Window, ...] = ()
    break_glass: int | None = None  # approvals a --break-glass deploy inside a window needs; None: none may
    break_glass_signed: bool = True  # break-glass approvals must be signed (default: as approval.signed)


# GitHub Actions' app id: the `GITHUB_TOKEN` of a workflow run creates its check runs as this app,
# and its commit statuses and deployments as this account.
ACTIONS_APP_ID = 15368
ACTIONS_ACCOUNT = "github-actions[bot]"


class Evidence(NamedTuple):
    """Whose results on GitHub the release gate counts (`evidence:` in the pipeline)."""

    app_id: int = ACTIONS_APP_ID  # check runs: only this app's, in a workflow run of this repository
    creators: tuple[str, ...] = (ACTIONS_ACCOUNT,)  # commit statuses and cdkit's deployments: only these accounts'


class Pipeline(NamedTuple):
    stages: tuple[Stage, ...]
    environments: tuple[Environment, ...] = ()
    release_branch: str = "main"
    mode: str = "delivery"
    report: str = "auto"
    path: str = DEFAULT_CONFIG
    evidence: Evidence = Evidence()
    logs_keep: float = 30 * 86400.0  # logs.keep, in seconds
    logs_max_size: int = 1 << 30  # logs.max_size, in bytes

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)


# --- YAML with positions ------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _strict_loader() -> Any:
    """A safe loader that resolves plain scalars by YAML 1.2 core rules only."""
    import re  # not at import time: the hook's cached pipeline needs no regex
    import yaml

    class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    _StrictLoader.yaml_implicit_resolvers = {}
    for tag, regexp, first in (
        ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
        (
            "tag:yaml.org,2002:float",
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            list("-+.0123456789"),
        ),
    ):
        _StrictLoader.add_implicit_resolver(tag, re.compile(regexp), first)
    return _StrictLoader


class _Where(NamedTuple):
    line: int
    column: int
    text: str | None  # the scalar as written, for messages


# YAML aliases may repeat a value: a few hundred levels of "billion laughs" would expand to
# more values than memory holds. No real pipeline comes near this.
MAX_VALUES = 20_000


class _Document:
    __slots__ = ("data", "where", "errors", "values", "open_nodes")

    def __init__(self, data: Any, where: dict[JsonPath, _Where], errors: list[str]) -> None:
        self.data = data
        self.where = where
        self.errors = errors
        self.values = 0  # values converted so far, aliases expanded
        self.open_nodes: set[int] = set()  # collections being converted: an alias to one is a loop


def _scalar_value(node: yaml.ScalarNode) -> Any:
    tag = node.tag
    value = node.value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        if value.startswith("0o"):
            return int(value[2:], 8)
        return int(value, 0) if value.startswith("0x") else int(value)
    if tag == "tag:yaml.org,2002:float":
        lowered = value.lower()
        if lowered.endswith("nan"):
            return float("nan")
        if lowered.endswith("inf"):
            return float("-inf") if value.startswith("-") else float("inf")
        return float(value)
    if tag == "tag:yaml.org,2002:str":
        return value
    raise _UnsupportedTag(tag)


class _UnsupportedTag(Exception):
    pass


def _convert(node: yaml.Node, path: JsonPath, doc: _Document, filename: str) -> Any:
    import yaml

    start = node.start_mark
    text = node.value if isinstance(node, yaml.ScalarNode) else None
    doc.where[path] = _Where(start.line + 1, start.column + 1, text)
    doc.values += 1
    if doc.values > MAX_VALUES:
        raise ConfigError([f"{filename}:{start.line + 1}:{start.column + 1}: {_dotted(path)}: the file expands to "
                           f"more than {MAX_VALUES:,} values (YAML aliases repeating aliases?); write it out plainly"])
    if isinstance(node, yaml.ScalarNode):
        try:
            return _scalar_value(node)
        except _UnsupportedTag:
            doc.errors.append(
                f"{filename}:{start.line + 1}:{start.column + 1}: {_dotted(path)}: "
                f"tag {node.tag} is not allowed (cdkit reads plain YAML data only)"
            )
            return None
    if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
        doc.errors.append(
            f"{filename}:{start.line + 1}:{start.column + 1}: {_dotted(path)}: "
            f"tag {node.tag} is not allowed (cdkit reads plain YAML data only)"
        )
        return None
    if id(node) in doc.open_nodes:
        doc.errors.append(f"{filename}:{start.line + 1}:{start.column + 1}: {_dotted(path)}: "
                          "an alias refers to a value that contains it (a loop); remove the alias")
        return None
    doc.open_nodes.add(id(node))
    try:
        return _convert_collection(node, path, doc, filename)
    finally:
        doc.open_nodes.discard(id(node))


def _convert_collection(node: yaml.Node, path: JsonPath, doc: _Document, filename: str) -> Any:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), doc, filename) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.MappingNode)
    result: dict[Any, Any] = {}
    first_seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = _convert(key_node, path + ("<key node>",), doc, filename)
        if not isinstance(key, str):
            key = str(key)
        line = key_node.start_mark.line + 1
        if key in first_seen:
            doc.errors.append(
                f"{filename}:{line}:{key_node.start_mark.column + 1}: {_dotted(path + (key,))}: "
                f"duplicate key {key!r} (first defined on line {first_seen[key]}); remove one of them"
            )
            continue
        first_seen[key] = line
        doc.where[path + (key, "<key>")] = _Where(line, key_node.start_mark.column + 1, None)
        result[key] = _convert(value_node, path + (key,), doc, filename)
    doc.where.pop(path + ("<key node>",), None)
    return result


def _compose(text: str, filename: str) -> _Document:
    import yaml

    doc = _Document(data=None, where={}, errors=[])
    try:
        node = yaml.compose(text, Loader=_strict_loader())
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_error_message(exc, text, filename)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{filename}:1:1: invalid YAML: {exc}"]) from None
    if node is None:
        raise ConfigError([f"{filename}:1:1: the file is empty (start with `version: 1` and a `stages:` list)"])
    doc.data = _convert(node, (), doc, filename)
    return doc


# The parser's words for the three mistakes people make most, in plain words. libyaml and the
# pure-Python parser word them differently; both are matched.
_INDENTATION_PROBLEMS = ("did not find expected key", "did not find expected '-' indicator",
                         "mapping values are not allowed", "expected <block end>")
INDENTATION_HINT = ("the indentation here does not line up: keys of one mapping, and the `-` items of one list, "
                    "must start in the same column as the ones above")
TAB_HINT = "tabs are not allowed for indentation in YAML; use spaces"
UNCLOSED_QUOTE_HINT = "this quoted string is never closed; add the closing quote (or leave the value unquoted)"


def _yaml_error_message(exc: yaml.MarkedYAMLError, text: str, filename: str) -> str:
    """`FILE:LINE:COL: invalid YAML: what, in plain words`, then the line and a caret under the column."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    lines = text.split("\n")
    line_text = lines[mark.line] if mark and mark.line < len(lines) else ""
    at_tab = mark is not None and line_text[mark.column:mark.column + 1] == "\t"
    if at_tab or "tab" in problem:
        plain = TAB_HINT
    elif "quoted scalar" in (exc.context or "") and exc.context_mark is not None:
        mark, plain = exc.context_mark, UNCLOSED_QUOTE_HINT  # point at the opening quote, not the end of file
    elif any(p in problem for p in _INDENTATION_PROBLEMS):
        plain = f"{INDENTATION_HINT} (the parser says: {problem})"
    elif not line_text.strip() and exc.context_mark is not None:
        # Reached the end of the file looking for a closing bracket: show where it opened.
        what = (exc.context or "").removeprefix("while parsing ").removeprefix("while scanning ")
        mark, plain = exc.context_mark, f"{problem}: {what} starts here and is never closed"
    else:
        plain = problem
    if mark is None:
        return f"{filename}:1:1: invalid YAML: {plain}"
    message = f"{filename}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {plain}"
    return message + _caret(lines[mark.line] if mark.line < len(lines) else "", mark.column)


def _caret(line: str, column: int) -> str:
    """The offending line and a caret under `column` (tabs copied so the caret lines up)."""
    if not line.strip():
        return ""
    pad = "".join(c if c == "\t" else " " for c in line[:column])
    return f"\n    {line}\n    {pad}^"


# --- Schema validation ----------------------------------------------------------------------


def _dotted(path: JsonPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _load_schema() -> dict[str, Any]:
    import json  # here, not at the top: the hook reuses a validated pipeline and never needs it

    with SCHEMA_PATH.open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}
_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer", "boolean": "true or false"}
_HINTS = {
    "#/$defs/duration": "is not a duration (use e.g. 10m, 90s, 1h30m)",
    "#/$defs/name": "is not a valid name (letters, digits, _ . - ; at most 64 characters)",
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, int):
        return f"number {value}"
    if isinstance(value, str):
        import json  # only when a message quotes a value

        return json.dumps(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "nothing (null)"


class _Validator:
    """Validates data against the subset of JSON Schema that schema.json uses.

    A hand-written walker rather than the jsonschema package: it keeps the hook's
    start-up small and lets every message carry the key path and a suggestion.
    """

    def __init__(self, schema: dict[str, Any], where: dict[JsonPath, _Where]) -> None:
        self.schema = schema
        self.where = where
        self.problems: list[tuple[JsonPath, str]] = []

    def shown(self, value: Any, path: JsonPath) -> str:
        """The value as the user wrote it (1e3, not 1000.0), else as data."""
        where = self.where.get(path)
        if where and where.text is not None and not isinstance(value, str):
            return where.text
        return _describe(value)

    def resolve(self, schema: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        ref = schema.get("$ref")
        if ref is None:
            return schema, None
        target: Any = self.schema
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return merged, ref

    def validate(self, value: Any, schema: dict[str, Any], path: JsonPath) -> None:
        schema, ref = self.resolve(schema)
        if "anyOf" in schema:
            self._check_any_of(value, schema["anyOf"], path)
            return
        expected = schema.get("type")
        if expected and not _TYPE_CHECKS[expected](value):
            if ref in _HINTS:
                self.problems.append((path, f"{self.shown(value, path)} {_HINTS[ref]}"))
            else:
                self.problems.append((path, f"expected {_TYPE_NAMES[expected]}, got {self.shown(value, path)}"))
            return
        if "enum" in schema and value not in schema["enum"]:
            import json

            choices = ", ".join(json.dumps(e) for e in schema["enum"])
            self.problems.append((path, f"{self.shown(value, path)} is not one of {choices}{_enum_hint(value, path)}"))
            return
        if isinstance(value, str):
            self._check_string(value, schema, ref, path)
        elif isinstance(value, int) and not isinstance(value, bool):
            self._check_number(value, schema, path)
        elif isinstance(value, list):
            self._check_array(value, schema, path)
        elif isinstance(value, dict):
            self._check_object(value, schema, path)

    def _check_any_of(self, value: Any, choices: list[dict[str, Any]], path: JsonPath) -> None:
        """Valid when one choice accepts it; else the problems of the choice of the value's own type."""
        attempts: list[list[tuple[JsonPath, str]]] = []
        for choice in choices:
            trial = _Validator(self.schema, self.where)
            trial.validate(value, choice, path)
            if not trial.problems:
                return
            attempts.append(trial.problems)
        types = [self.resolve(c)[0].get("type") for c in choices]
        for kind, problems in zip(types, attempts):
            if kind and _TYPE_CHECKS[kind](value):
                self.problems += problems
                return
        wanted = " or ".join(_TYPE_NAMES[t] for t in types if t)
        self.problems.append((path, f"expected {wanted}, got {self.shown(value, path)}{_any_of_hint(value, path, self.shown(value, path))}"))

    def _check_string(self, value: str, schema: dict[str, Any], ref: str | None, path: JsonPath) -> None:
        if len(value) < schema.get("minLength", 0):
            self.problems.append((path, "must not be empty" if value == "" else f"{_describe(value)} is too short"))
        elif "maxLength" in schema and len(value) > schema["maxLength"]:
            self.problems.append((path, f"is longer than {schema['maxLength']} characters"))
        elif "pattern" in schema and not _matches(schema["pattern"], value):
            hint = _HINTS.get(ref or "", f"does not match {schema['pattern']}")
            self.problems.append((path, f"{_describe(value)} {hint}"))

    def _check_number(self, value: int, schema: dict[str, Any], path: JsonPath) -> None:
        if "minimum" in schema and value < schema["minimum"]:
            hint = ""
            if path[-2:] == ("approval", "required"):
                hint = " (delivery mode needs at least one approval; use mode: deployment to release without one)"
            self.problems.append((path, f"{value} is less than the minimum of {schema['minimum']}{hint}"))
        if "maximum" in schema and value > schema["maximum"]:
            self.problems.append((path, f"{value} is more than the maximum of {schema['maximum']}"))

    def _check_array(self, value: list[Any], schema: dict[str, Any], path: JsonPath) -> None:
        if len(value) < schema.get("minItems", 0):
            self.problems.append((path, f"needs at least {schema['minItems']} item(s)"))
        if schema.get("uniqueItems"):
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    self.problems.append((path + (i,), f"{_describe(item)} is listed twice"))
                seen.append(item)
        if "items" in schema:
            for i, item in enumerate(value):
                self.validate(item, schema["items"], path + (i,))

    def _check_object(self, value: dict[str, Any], schema: dict[str, Any], path: JsonPath) -> None:
        properties: dict[str, Any] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                self.problems.append((path, f"missing required key {key!r}"))
        names = schema.get("propertyNames")
        for key, item in value.items():
            if names and "pattern" in names and not _matches(names["pattern"], key):
                self.problems.append((path + (key,), f"{key!r} is not a valid name"))
            if key in properties:
                self.validate(item, properties[key], path + (key,))
                continue
            extra = schema.get("additionalProperties", True)
            if extra is False:
                self.problems.append((path + (key,), _unknown_key_message(key, list(properties))))
            elif isinstance(extra, dict):
                self.validate(item, extra, path + (key,))


# Names a GitHub workflow's `on:` takes; written in a stage's `on:` they are a mix-up worth naming.
GITHUB_EVENT_NAMES = frozenset({
    "push", "pull_request", "pull_request_target", "pull_request_review", "workflow_dispatch", "merge_group",
    "deployment", "schedule", "release", "workflow_run", "workflow_call", "pre-commit", "commit",
})


def _enum_hint(value: Any, path: JsonPath) -> str:
    on_path = "on" in path[-2:] and path[:1] == ("stages",)
    if on_path and isinstance(value, str) and value in GITHUB_EVENT_NAMES:
        return ("; GitHub events (push, pull_request, ...) belong in the workflow's `on:` "
                "(.github/workflows/cdkit.yml); a stage's `on:` says where it runs: pre-push, ci, or both")
    return ""


def _any_of_hint(value: Any, path: JsonPath, shown: str) -> str:
    if len(path) >= 2 and path[-2] == "env" and isinstance(value, (bool, float)):
        import json

        return f"; quote it to pass the text as written: {path[-1]}: {json.dumps(shown)}"
    return ""


def _matches(pattern: str, value: str) -> bool:
    """JSON Schema (ECMA-262) `pattern`: a final `$` is the end of the string, not "before a final newline"."""
    import re  # not at import time: the hook's cached pipeline needs no regex
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.search(pattern, value) is not None


def _unknown_key_message(key: str, allowed: list[str]) -> str:
    import difflib  # only on this error path

    # Also try the first word, so `requried_approvals` still finds `required`.
    guess = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6) or difflib.get_close_matches(
        key.split("_")[0], allowed, n=1, cutoff=0.7
    )
    hint = f"; did you mean {guess[0]!r}?" if guess else f" (allowed: {', '.join(allowed)})"
    return f"unknown key {key!r}{hint}"


# --- Checks a schema cannot express ------------------------------------------------------------


def _semantic_problems(data: dict[str, Any], where: dict[JsonPath, _Where]) -> Iterator[tuple[JsonPath, str]]:
    def line_of(path: JsonPath) -> int:
        return where[path].line if path in where else 0

    stages = data.get("stages") or []
    yield from _glob_problems(stages)
    first_index: dict[str, int] = {}
    for i, stage in enumerate(stages):
        name = stage.get("name")
        if name in first_index:
            yield ("stages", i, "name"), (
                f"duplicate stage name {name!r} (first defined on line {line_of(('stages', first_index[name], 'name'))}); "
                "stage names must be unique"
            )
        else:
            first_index[name] = i
    for i, stage in enumerate(stages):
        for j, need in enumerate(stage.get("needs") or []):
            if need not in first_index:
                yield ("stages", i, "needs", j), _unknown_stage_message(need, list(first_index))
            elif need == stage.get("name"):
                yield ("stages", i, "needs", j), f"stage {need!r} cannot need itself"
    cycle = _find_cycle(_needs_graph(stages))
    if cycle:
        index = first_index[cycle[0]]
        yield ("stages", index, "needs"), "needs form a cycle: " + " -> ".join(cycle + [cycle[0]])
    env_names: dict[str, int] = {}
    for i, env in enumerate(data.get("environments") or []):
        if env.get("name") in env_names:
            first = line_of(("environments", env_names[env["name"]], "name"))
            yield ("environments", i, "name"), f"duplicate environment name {env['name']!r} (first defined on line {first})"
        env_names.setdefault(env.get("name"), i)
        approval = env.get("approval") or {}
        if approval.get("via") == "environment" and approval.get("required", 1) > 1:
            yield ("environments", i, "approval", "required"), (
                f"{approval['required']} approvals cannot be had via environment: GitHub releases an environment "
                "after one of its required reviewers approves; use via: review for several approvals"
            )
        yield from _window_problems(env.get("windows") or [], ("environments", i, "windows"))


def _window_problems(windows: list[dict[str, Any]], path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """Each window is exactly one of deny/allow, with a cron schedule, a duration and a time zone that exist.

    croniter is imported only for a pipeline that has windows (the pre-push hook validates pipelines too).
    """
    names: dict[str, int] = {}
    for j, window in enumerate(windows):
        here = path + (j,)
        if window["name"] in names:
            yield here + ("name",), (f"duplicate window name {window['name']!r} (also window {names[window['name']] + 1}"
                                     " of this environment); window names must be unique")
        names.setdefault(window["name"], j)
        kinds = [k for k in ("deny", "allow") if k in window]
        if len(kinds) != 1:
            yield here, ("a window is either `deny:` (a freeze) or `allow:` (deploys only then), with exactly one "
                         f"of them; this one has {' and '.join(kinds) or 'neither'}")
            continue
        spec = window[kinds[0]]
        yield from _cron_problems(spec["schedule"], here + (kinds[0], "schedule"))
        if parse_duration(spec["duration"]) < 60:
            yield here + (kinds[0], "duration"), f"{_describe(spec['duration'])} is shorter than a minute, the " \
                "cron schedule's step; give at least 1m"
        if "timezone" in spec:
            yield from _timezone_problems(spec["timezone"], here + (kinds[0], "timezone"))


def _cron_problems(schedule: str, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    fields = schedule.split()
    if len(fields) != 5:
        yield path, (f"{_describe(schedule)} has {len(fields)} field(s); a schedule has five: minute hour "
                     "day-of-month month day-of-week, e.g. \"0 16 * * FRI\"")
        return
    from croniter import croniter

    # croniter's Jenkins-style `H` (hashed) fields need a job id to mean anything: not a window's schedule.
    if not croniter.is_valid(schedule) or any("H" in f.upper() for f in fields[:3]):
        yield path, (f"{_describe(schedule)} is not a valid cron schedule (minute 0-59, hour 0-23, day 1-31, "
                     "month 1-12 or JAN-DEC, weekday 0-6 or SUN-SAT; *, lists, ranges and /steps)")


def _timezone_problems(name: str, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "Europe"
        yield path, (f"{_describe(name)} is not an IANA time zone this machine knows; write one such as "
                     "Europe/Berlin, America/New_York or UTC")


def _working_directory_problems(stages: list[dict[str, Any]], root: Path | None) -> Iterator[tuple[JsonPath, str]]:
    """A stage runs inside the repository: never above it, never at an absolute path."""
    import posixpath

    from cdkit.util import is_within

    for i, stage in enumerate(stages):
        directory = stage.get("working_directory")
        if directory is None:
            continue
        path = ("stages", i, "working_directory")
        normal = posixpath.normpath(directory)
        if posixpath.isabs(directory) or normal == ".." or normal.startswith("../"):
            yield path, (f"{_describe(directory)} is outside the repository; give a directory relative to the "
                         "repository root, inside it (e.g. services/api)")
        elif root is not None and not (root / normal).is_dir():
            yield path, (f"{_describe(directory)} is not a directory in {root}; create it, or fix the path "
                         "(relative to the repository root)")
        elif root is not None and not is_within(root / normal, root):
            yield path, f"{_describe(directory)} leads outside the repository (through a symbolic link)"


def _glob_problems(stages: list[dict[str, Any]]) -> Iterator[tuple[JsonPath, str]]:
    """A `paths` glob that cannot be compiled fails here, not in the middle of a run."""
    import re  # not at import time: the hook's cached pipeline needs no regex
    from cdkit.globs import glob_regex

    for i, stage in enumerate(stages):
        for j, pattern in enumerate(stage.get("paths") or []):
            try:
                glob_regex(pattern.removeprefix("!"))
            except re.error as exc:
                yield ("stages", i, "paths", j), f"{_describe(pattern)} is not a valid glob ({exc.msg})"


def _unknown_stage_message(name: str, known: list[str]) -> str:
    import difflib

    guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {guess[0]!r}?" if guess else f" (stages: {', '.join(known)})"
    return f"unknown stage {name!r}{hint}"


def _needs_graph(stages: list[dict[str, Any]]) -> dict[str, list[str]]:
    graph: dict[str, list[str]] = {}
    previous: str | None = None
    for stage in stages:
        name = stage["name"]
        needs = stage.get("needs")
        graph[name] = list(needs) if needs is not None else ([previous] if previous else [])
        previous = name
    return graph


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if nxt not in graph or nxt == node:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _token_problems(value: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    import re  # not at import time: the hook's cached pipeline needs no regex
    if isinstance(value, str):
        match = re.search(TOKEN_PATTERN, value)
        if match:
            masked = match.group(0)[:4] + "****"
            yield path, (
                f"contains what looks like a GitHub token ({masked}); never commit tokens: "
                "revoke it, and pass tokens through the environment (GITHUB_TOKEN) instead"
            )
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _token_problems(item, path + (i,))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _token_problems(item, path + (key,))


def _version_problems(data: dict[str, Any]) -> Iterator[tuple[JsonPath, str]]:
    import re  # not at import time: the hook's cached pipeline needs no regex
    wanted = data.get("minimum_version")
    if isinstance(wanted, str) and re.fullmatch(r"[0-9]+(\.[0-9]+){0,2}", wanted):
        def parts(v: str) -> tuple[int, ...]:
            return tuple(int(p) for p in (v.split(".") + ["0", "0"])[:3])

        if parts(wanted) > parts(__version__.split("+")[0]):
            yield ("minimum_version",), (
                f"this file needs cdkit {wanted} or newer, but this is cdkit {__version__} "
                "(upgrade with: pip install -U cdkit)"
            )


# --- Public API ------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    import re  # not at import time: the hook's cached pipeline needs no regex
    match = re.match(DURATION_PATTERN, text)
    if not match or not text:
        raise ValueError(f"{text!r} is not a duration")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """`500MB` -> bytes (binary units, as `du -h` shows them); the schema has checked the shape."""
    number = text.rstrip("BKMGT")
    return int(number) * SIZE_UNITS[text[len(number):]]


def parse_age(text: str) -> float:
    """`30d` -> seconds; the schema has checked the shape."""
    return float(int(text[:-1]) * AGE_UNITS[text[-1]])


def decode_config(raw: bytes, filename: str) -> str:
    """Bytes to text: UTF-8 with or without a BOM; CRLF and CR become LF so no command holds a '\\r'."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [f"{filename}:{line}:1: the file is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"]
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def find_config(root: Path) -> Path:
    """The pipeline file at the repository root: `.cdkit.yml` or `.cdkit.yaml`, never both.

    When neither exists, the default name (so a message can say what to create).
    """
    present = [root / name for name in CONFIG_NAMES if (root / name).is_file()]
    if len(present) > 1:
        raise ConfigError([f"{present[0]} and {present[1]} both exist; cdkit reads one pipeline file: "
                           f"merge them into {DEFAULT_CONFIG} and delete {present[1].name}"])
    return present[0] if present else root / DEFAULT_CONFIG


def load_text(text: str, filename: str = DEFAULT_CONFIG, *, root: Path | None = None) -> Pipeline:
    """Parse and validate pipeline text; raise ConfigError listing every problem.

    With `root` (the work tree the file belongs to), what can be known about the tree is
    checked too: every `working_directory` exists there.
    """
    doc = _compose(text, filename)
    problems: list[tuple[JsonPath, str]] = []
    if not doc.errors:
        validator = _Validator(_load_schema(), doc.where)
        validator.validate(doc.data, validator.schema, ())
        problems = validator.problems
        if isinstance(doc.data, dict):
            problems += list(_token_problems(doc.data, ()))
            problems += list(_version_problems(doc.data))
            if not problems:
                problems += list(_semantic_problems(doc.data, doc.where))
                problems += list(_working_directory_problems(doc.data.get("stages") or [], root))
    messages = doc.errors + [_locate(filename, doc, path, message) for path, message in problems]
    if messages:
        raise ConfigError(messages)
    return _build(doc.data, filename)


def _locate(filename: str, doc: _Document, path: JsonPath, message: str) -> str:
    probe = path + ("<key>",) if message.startswith("unknown key") else path
    while probe not in doc.where and probe:
        probe = probe[:-1]
    where = doc.where.get(probe, _Where(1, 1, None))
    return f"{filename}:{where.line}:{where.column}: {_dotted(path)}: {message}"


def load(path: str | Path, *, root: Path | None = None) -> Pipeline:
    """Read, parse and validate the pipeline file at `path` (`root`: see `load_text`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: no pipeline file here; create one with `cdkit init`, or pass --config PATH"]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the pipeline file: {exc.strerror}"]) from None
    return load_text(decode_config(raw, str(path)), str(path), root=root)


def _as_tuple(value: str | list[str]) -> tuple[str, ...]:
    """`on: pre-push` means `on: [pre-push]`."""
    return (value,) if isinstance(value, str) else tuple(value)


def _verify(raw: dict[str, Any] | None) -> Verify | None:
    if raw is None:
        return None
    return Verify(run=raw["run"], timeout=parse_duration(raw.get("timeout", "5m")), retries=raw.get("retries", 1),
                  interval=parse_duration(raw.get("interval", "10s")))


def _window(raw: Mapping[str, Any]) -> Window:
    kind = "deny" if "deny" in raw else "allow"
    spec = raw[kind]
    return Window(name=raw["name"], kind=kind, schedule=spec["schedule"], duration=parse_duration(spec["duration"]),
                  timezone=spec.get("timezone", "UTC"))


def _stage_ci(raw: Mapping[str, Any]) -> StageCI:
    return StageCI(runs_on=raw.get("runs-on"), timeout_minutes=raw.get("timeout-minutes"),
                   shards=int(raw.get("shards", 1)))


def _build(data: dict[str, Any], filename: str) -> Pipeline:
    mode = data.get("mode", "delivery")
    stages: list[Stage] = []
    for raw in data["stages"]:
        needs = raw.get("needs")
        if needs is None:
            needs = [stages[-1].name] if stages else []
        stages.append(
            Stage(
                name=raw["name"],
                run=raw["run"],
                on=_as_tuple(raw.get("on", ["ci"])),
                paths=tuple(raw["paths"]) if "paths" in raw else None,
                needs=tuple(needs),
                timeout=parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_TIMEOUT,
                env={key: str(value) for key, value in (raw.get("env") or {}).items()},  # 3 -> "3"
                working_directory=raw.get("working_directory"),
                allow_changes=bool(raw.get("allow_changes", False)),
                env_passthrough=tuple(raw.get("env_passthrough") or ()),
                ci=_stage_ci(raw.get("ci") or {}),
            )
        )
    environments = []
    for raw in data.get("environments") or []:
        approval = raw.get("approval") or {}
        environments.append(
            Environment(
                name=raw["name"],
                mode=raw.get("mode", mode),
                deploy=raw["deploy"],
                url=raw.get("url"),
                approval=ApprovalPolicy(
                    via=approval.get("via", "local"),
                    required=approval.get("required", 1),
                    reviewers=tuple(approval.get("reviewers") or ()),
                    merge=approval.get("merge", False),
                    unidentified_authors=approval.get("unidentified_authors", "refuse"),
                    signed=approval.get("signed", True),
                    expires=parse_age(approval["expires"]) if "expires" in approval else None,
                ),
                env_passthrough=tuple(raw.get("env_passthrough") or ()),
                verify=_verify(raw.get("verify")),
                on_failure=raw.get("on_failure", "stop"),
                soak=parse_duration(raw["soak"]) if "soak" in raw else 0.0,
                windows=tuple(_window(w) for w in raw.get("windows") or ()),
                break_glass=(raw.get("break_glass") or {}).get("required"),
                break_glass_signed=(raw.get("break_glass") or {}).get("signed", approval.get("signed", True)),
            )
        )
    return Pipeline(
        stages=tuple(stages),
        environments=tuple(environments),
        release_branch=data.get("release_branch", "main"),
        mode=mode,
        report=data.get("report", "auto"),
        path=filename,
        evidence=Evidence(app_id=(data.get("evidence") or {}).get("app_id", ACTIONS_APP_ID),
                          creators=tuple((data.get("evidence") or {}).get("creators") or (ACTIONS_ACCOUNT,))),
        logs_keep=parse_age(data.get("logs", {}).get("keep", "30d")),
        logs_max_size=parse_size(data.get("logs", {}).get("max_size", "1GB")),
    )
