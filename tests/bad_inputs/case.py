"""One row of the bad-input table: a call that must fail, the error type it must raise,
and the words its message must contain (the argument's name, the value, what is allowed).

Each area keeps its rows in ``<area>_cases.py`` as ``CASES: list[BadInput]``;
``test_bad_inputs.py`` runs them all. A row's ``call`` builds its own inputs (small, fresh
random values), so rows are independent and any one can be run alone with ``-k name``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class BadInput:
    name: str                        # Unique test id, e.g. "op: decay=+inf as a list".
    call: Callable[[], Any]          # Must raise `error`.
    error: type[BaseException]       # The exact type (a subclass does not pass).
    says: tuple[str, ...] = ()       # Substrings of the message: the argument, the value...

    def __post_init__(self):
        if isinstance(self.says, str):
            object.__setattr__(self, "says", (self.says,))
