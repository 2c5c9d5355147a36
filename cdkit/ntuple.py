"""`typing.NamedTuple`'s class syntax without importing `typing`, for modules on the pre-push hook's path.

Every push imports these modules, and `typing.NamedTuple` costs twice: `import typing`
(~4 ms here) and, with `from __future__ import annotations`, a `compile()` of every field's
annotation string into a ForwardRef (~25 NamedTuples, ~150 fields: several ms more). This
builds the same class, `collections.namedtuple` plus the body's methods and docstring, the way
`typing.NamedTupleMeta` does, and keeps the annotations as the strings they are.

Use it under a TYPE_CHECKING guard, so mypy sees the real `typing.NamedTuple`:

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from cdkit.ntuple import NamedTuple

(mypy treats any name TYPE_CHECKING as true; at run time it is False and typing is never imported.)
"""
from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The same names typing.NamedTuple refuses to overwrite, and the ones it does not copy.
_PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults",
                         "_make", "_replace", "_asdict", "_source"})
_SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})


class _NamedTupleMeta(type):
    def __new__(mcs, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
        if ns.get("_ntuple_root"):
            return super().__new__(mcs, typename, bases, ns)
        if bases != (NamedTuple,):
            raise TypeError("can only inherit from NamedTuple")
        annotations: dict[str, object] = ns.get("__annotations__", {})
        default_names: list[str] = []
        for field in annotations:
            if field in ns:
                default_names.append(field)
            elif default_names:
                raise TypeError(f"Non-default namedtuple field {field} cannot follow default field(s) "
                                f"{', '.join(default_names)}")
        make: Any = collections.namedtuple  # mypy wants literals here; these names come from the class body
        cls = make(typename, list(annotations), defaults=[ns[n] for n in default_names], module=ns["__module__"])
        cls.__annotations__ = dict(annotations)
        for key, value in ns.items():
            if key in _PROHIBITED:
                raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
            if key not in _SPECIAL and key not in cls._fields:
                setattr(cls, key, value)
        return cls


class NamedTuple(metaclass=_NamedTupleMeta):
    """Subclass it as you would typing.NamedTuple: annotated fields, defaults last, methods and properties."""

    _ntuple_root = True
