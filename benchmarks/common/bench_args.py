"""Typed command-line values of the benchmarks: a malformed one is an argparse error
naming the option, the value and the expected form, not a traceback."""
from __future__ import annotations

import argparse
from typing import Callable


def colon_fields(form: str, *, ints: tuple[int, ...] = (), optional: int = 0) -> Callable:
    """An argparse ``type`` for ``"a:b:c"`` values of the fields in ``form`` (e.g.
    ``"arch:batch:context"``): the fields at positions ``ints`` must be positive ints;
    the last ``optional`` fields may be left out."""
    names = form.split(":")
    required = len(names) - optional
    form = ":".join(names[:required]) + "".join(f"[:{n}]" for n in names[required:])

    def parse(text: str) -> tuple:
        fields = text.split(":")
        if not required <= len(fields) <= len(names) or not all(fields):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {form}")
        try:
            values = [int(f) if i in ints else f for i, f in enumerate(fields)]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected {form} with {', '.join(names[i] for i in ints)} "
                "as integers") from None
        if any(values[i] <= 0 for i in ints if i < len(values)):
            raise argparse.ArgumentTypeError(f"{text!r}: {form}: the integers must be >= 1")
        return tuple(values)

    return parse


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return int(text)


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (``1e8`` or ``100000000``)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


def comma_list(item: Callable) -> Callable:
    """An argparse ``type`` for ``"x,y,..."``, each parsed by ``item``."""
    def parse(text: str) -> list:
        return [item(part) for part in text.split(",") if part]
    return parse
