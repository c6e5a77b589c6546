"""The training iterator's position as checkpoint data (Grain's checkpoint handler
saves and restores it next to the model state)."""
from __future__ import annotations

import json
from typing import Any

import grain


def _restore_tuples(state: Any) -> Any:
    """Undoes JSON's tuple -> list on Grain's ConcatThenSplit state.

    grain 0.2.18 compares `remainder_slices` entries with the tuple `(-1, -1)`;
    after a JSON round trip they are lists, the comparison fails, and a restored
    iterator reads one document too many. (Found by this package's resume test.)
    """
    if isinstance(state, dict):
        return {k: ({f: tuple(v) for f, v in value.items()} if k == "remainder_slices"
                    else _restore_tuples(value)) for k, value in state.items()}
    if isinstance(state, list):
        return [_restore_tuples(v) for v in state]
    return state


class IteratorCheckpoint:
    """What `grain.checkpoint.CheckpointSave/Restore` see of the training iterator.

    Saving: the state is captured when this object is made, because Orbax may
    write it after the loop has moved on. Restoring: the JSON is repaired (see
    `_restore_tuples`) before the live iterator is moved.
    """

    def __init__(self, iterator: grain.DatasetIterator):
        self._iterator = iterator
        self._state = json.dumps(iterator.get_state(), indent=1).encode()

    def get_state(self) -> bytes:
        return self._state

    def set_state(self, state: bytes) -> None:
        self._iterator.set_state(_restore_tuples(json.loads(state)))

    def start_prefetch(self) -> None:
        """Called by Grain's handler after a restore; the iterator prefetches on its own."""
