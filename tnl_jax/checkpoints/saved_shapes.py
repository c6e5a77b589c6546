"""The names and shapes of a saved Orbax tree, checked before anything is read: a
restore into other shapes fails late (inside Orbax's readers), and a partial restore
would skip saved parameters silently."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


class ParamsMismatch(ValueError):
    """A checkpoint's parameters are not the ones a model config expects (names or
    shapes): the config's problem, not a broken file's."""


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"stacks/0/layers/...": shape}``; a saved ``nnx.Variable``'s ``value`` level and
    the key types (``0`` or ``"0"``) do not count."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(key, "key", getattr(key, "idx", key))) for key in path]
        out["/".join(names[:-1] if names[-1] == "value" else names)] = tuple(leaf.shape)
    return out


def check(item_dir: str | Path, expected: dict, subtree: str | None = None) -> None:
    """``ParamsMismatch`` unless the tree saved in ``item_dir`` (or its ``subtree``) has
    exactly the names and shapes of ``expected`` (a pure dict of arrays or structs)."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
        saved = handler.metadata(epath.Path(item_dir)).tree
    finally:
        handler.close()
    have, want = shapes(saved[subtree] if subtree else saved), shapes(expected)
    if have != want:
        differ = sorted(set(have.items()) ^ set(want.items()))[:4]
        raise ParamsMismatch(f"{item_dir}: the saved parameters are not the expected ones "
                         f"(names and shapes in one but not the other: {differ})")
