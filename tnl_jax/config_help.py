"""The help of configuration keys, from one source: each dataclass field carries its
one-line description (``described``), and what a key allows is what its range check
reports for a value no key accepts (``allowed_by_checks``), so the help and the checks
cannot disagree. ``tnl-train --help`` prints one line per key (``help_table``)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
import typing
from typing import Any, Callable, Iterable

# A value every range check refuses (negative, huge, an integer: no size, count,
# probability, name or flag), so each check states its range for it.
OUT_OF_EVERY_RANGE = -(10**9)


def described(default: Any, help: str) -> Any:
    """A dataclass field with default ``default`` and the one-line ``help`` shown by
    ``tnl-train --help`` (``help_of``)."""
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(field: dataclasses.Field) -> str:
    """A field's description (``""`` when it has none)."""
    return field.metadata.get("help", "")


def allowed_by_checks(key: str, problems_if: Callable[[Any], list[str]]) -> str | None:
    """What the range check of ``key`` allows, in its own words: the problem that
    ``problems_if(value)`` (every problem of a config whose ``key`` is ``value``) reports
    for ``OUT_OF_EVERY_RANGE``, without its ``key=value:`` and ``expected``; None when no
    check names ``key``."""
    leaf = key.rsplit(".", 1)[-1]
    for problem in problems_if(OUT_OF_EVERY_RANGE):
        for name in (key, leaf):
            prefix = f"{name}={OUT_OF_EVERY_RANGE!r}"
            if problem.startswith(prefix):
                return _without_opening(problem[len(prefix):])
    return None


def _without_opening(rest: str) -> str:
    """``": expected an integer >= 1"`` -> ``"an integer >= 1"`` (from the first
    ``expected``, else all); a bracket closed after the cut is dropped
    (``"x; see y)"`` -> ``"x; see y"``; an interval's ``[0, 1)`` stays)."""
    rest = rest.lstrip(":").strip()
    if "expected " in rest:
        rest = rest[rest.index("expected ") + len("expected "):]
    kept, depth = [], 0
    for char in rest:
        if char in "([":
            depth += 1
        elif char in ")]":
            if not depth:
                continue  # Its opening was cut off.
            depth -= 1
        kept.append(char)
    return "".join(kept).strip()


def help_table(rows: Iterable[tuple[str, Any, str, str | None]], width: int | None = None) -> str:
    """``(key, value, description, allowed)`` rows as aligned lines: the key, its value
    (as JSON, which YAML reads: ``null``, ``true``, ``"bytes"``), then the description
    and ``[allowed: ...]``, wrapped to ``width`` (the terminal's)."""
    rows = list(rows)
    width = width or max(100, shutil.get_terminal_size((120, 24)).columns)
    key_width = max(len(key) for key, *_ in rows)
    values = [json.dumps(value) for _, value, *_ in rows]  # As YAML reads it back.
    value_width = min(max(len(v) for v in values), 24)
    lines = []
    for (key, _, description, allowed), value in zip(rows, values):
        head = f"  {key:<{key_width}}  {value:<{value_width}}  "
        text = " ".join(filter(None, [description, allowed and f"[allowed: {allowed}]"]))
        lines.append(textwrap.fill(text, width, initial_indent=head,
                                   subsequent_indent=" " * min(len(head), width // 2)))
    return "\n".join(lines)



def field_at(cls: type, dotted: str) -> dataclasses.Field:
    """The field of a (nested) config dataclass named by a dotted key."""
    *groups, leaf = dotted.split(".")
    for group in groups:
        cls = typing.get_type_hints(cls)[group]  # Annotations may be strings.
    return {f.name: f for f in dataclasses.fields(cls)}[leaf]


def replaced(config: Any, dotted: str, value: Any) -> Any:
    """A copy of a (nested) config dataclass with one dotted key set, for dataclasses
    that do not check themselves: what the range checks are then asked about."""
    group, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(config, **{group: value})
    return dataclasses.replace(config, **{group: replaced(getattr(config, group), rest, value)})
