"""The one error for a misspelt configuration key: it names the nearest valid key.

Used by ``ModelConfig.from_dict`` and the training config's ``key=value`` overrides
(and ``nearest`` by the checks of named values, e.g. remat policies).
"""
from __future__ import annotations

import difflib
from typing import Iterable


def nearest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most like ``name`` (``None`` when there are none): a valid dotted
    key ending with ``name``'s last part first (``optim.lr`` -> ``lr``), else the most
    similar spelling."""
    valid = list(valid)
    last = name.rsplit(".", 1)[-1]
    same_leaf = [key for key in valid if key.rsplit(".", 1)[-1] == last]
    match = difflib.get_close_matches(name, same_leaf or valid, n=1, cutoff=0.0)
    return match[0] if match else None


def unknown_key_error(key: str, valid: Iterable[str], what: str = "config") -> ValueError:
    """``ValueError("unknown <what> key 'key' (nearest valid key: '...')")``."""
    match = nearest(key, valid)
    hint = f" (nearest valid key: '{match}')" if match else ""
    return ValueError(f"unknown {what} key '{key}'{hint}")
