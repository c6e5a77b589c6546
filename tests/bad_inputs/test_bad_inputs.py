"""Every bad input and fault in one table: the exact error type and the words naming the
argument, the value and what is allowed. Rows live beside their area in ``*_cases.py``."""
import importlib
import pathlib

import pytest

from tests.bad_inputs import case

AREAS = [importlib.import_module(f"tests.bad_inputs.{path.stem}")
         for path in sorted(pathlib.Path(__file__).parent.glob("*_cases.py"))]
CASES: list[case.BadInput] = [row for area in AREAS for row in area.CASES]


def test_the_table_is_large_and_names_are_unique():
    names = [row.name for row in CASES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("row", CASES, ids=[row.name for row in CASES])
def test_bad_input_is_named(row: case.BadInput):
    with pytest.raises(BaseException) as caught:
        row.call()
    assert type(caught.value) is row.error, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    for words in row.says:
        assert words in message, f"{words!r} not in {message!r}"
