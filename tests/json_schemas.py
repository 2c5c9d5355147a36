"""Every `--json` document cdkit prints, checked against its schema in cdkit/schemas/.

`tests.helpers.cdkit` calls `validate_document` on the stdout of every command run with `--json`,
so each test that reads a JSON document also checks it against the published contract.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "cdkit" / "schemas"


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def schema_path(command: str) -> Path:
    return SCHEMAS / f"{command.replace(' ', '-')}.schema.json"


@cache
def _validator(command: str) -> Draft202012Validator:
    path = schema_path(command)
    if not path.exists():
        raise AssertionError(f"`cdkit {command} --json` has no schema: add {path.relative_to(SCHEMAS.parent.parent)}")
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


def problems(document: Any) -> list[str]:
    """Why `document` breaks its command's schema (empty when it conforms)."""
    if not isinstance(document, dict) or not isinstance(document.get("command"), str):
        return ["not an object with a `command` string"]
    validator = _validator(document["command"])
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]


def validate_document(text: str) -> dict[str, Any]:
    document = json.loads(text)
    found = problems(document)
    assert not found, f"`cdkit {document.get('command')} --json` breaks its schema:\n" + "\n".join(found) + \
        f"\n{json.dumps(document, indent=2)[:3000]}"
    return dict(document)


def epoch(text: str) -> float:
    """A document's ISO 8601 UTC time as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
