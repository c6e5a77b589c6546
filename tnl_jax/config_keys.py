"""The one error for a misspelt configuration key: it names the nearest valid key.

Used by ``ModelConfig.from_dict`` and the training config's ``key=value`` overrides.
"""
from __future__ import annotations

import difflib
from typing import Iterable


def unknown_key_error(key: str, valid: Iterable[str], what: str = "config") -> ValueError:
    """``ValueError("unknown <what> key 'key' (nearest valid key: '...')")``."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
    hint = f" (nearest valid key: '{match[0]}')" if match else ""
    return ValueError(f"unknown {what} key '{key}'{hint}")
