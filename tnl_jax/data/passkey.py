"""Passkey examples: a number hidden at a chosen depth of filler text, asked for at the
end. ``tnl_jax.evaluation.passkey`` scores them on held-out filler; ``training_rows``
makes them from the training text, one example filling a row, for the rows that
``passkey_rows`` mixes into training (the passkey fine-tune of long-context papers:
a small model that has not learned to copy from far back cannot be asked otherwise).

The format is Python, as the study's data is: the line ``PASS_KEY = 58213`` is put at
a line break near ``depth`` of the filler, and the example ends with the needle's own
prefix again, ``PASS_KEY = ``, then the five digits (as Mohtashami & Jaggi's "What is
the pass key? The pass key is"): a model that finds the needle answers by copying.
"""
from __future__ import annotations

import grain
import numpy as np

DIGITS = 5
PREFIX = b"PASS_KEY = "
QUESTION = PREFIX.decode()  # Saved with every result: what the row ends with.
DEPTH_RANGE = (0.05, 0.95)  # Where a training example's needle may lie.
FILLER_BYTES = 1 << 23  # Training text read for the training examples' filler.
TRAIN_STREAM = 1  # Keeps the training examples' draws apart from the evaluation's.


def needle(key: int) -> tuple[bytes, bytes, bytes]:
    """(the needle line, the question, the answer) for ``key``."""
    answer = f"{key:0{DIGITS}d}".encode()
    return b"\n" + PREFIX + answer + b"\n", b"\n" + PREFIX, answer


def example_bytes(filler: bytes, length: int, depth: float, index: int,
                  stream: tuple[int, ...] = ()) -> tuple[bytes, int]:
    """A ``length``-byte example and where its answer starts: filler from a random
    offset, the needle at the line break nearest ``depth`` of the filler, the question
    and the answer last. The draws hang on (length, depth, index, *stream) only: the
    evaluation's (``stream=()``) are the same in every run."""
    rng = np.random.default_rng([length, round(depth * 1000), index, *stream])
    key = int(rng.integers(10 ** (DIGITS - 1), 10 ** DIGITS))
    line, question, answer = needle(key)
    room = length - len(line) - len(question) - len(answer)
    if room <= 0 or len(filler) < room:
        raise ValueError(f"passkey: length={length} leaves no room for filler, or the "
                         f"filler ({len(filler)} bytes) is shorter than {room} bytes")
    start = int(rng.integers(0, len(filler) - room + 1))
    text = filler[start:start + room]
    cut = text.rfind(b"\n", 0, max(1, int(depth * room))) + 1  # After a line break.
    body = text[:cut] + line + text[cut:] + question
    return body + answer, len(body)


def filler_of(docs: grain.MapDataset, bos_id: int | None, seed: int,
              limit: int = FILLER_BYTES) -> bytes:
    """Up to ``limit`` bytes of the byte-token documents ``docs`` (their BOS dropped),
    in an order fixed by ``seed``."""
    parts, size = [], 0
    for doc in docs.shuffle(seed=seed):
        if doc is None:  # A document Grain's filter skipped.
            continue
        ids = doc["tokens"][1:] if bos_id is not None else doc["tokens"]
        parts.append(np.asarray(ids, np.uint8).tobytes())
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def training_rows(filler: bytes, seq_len: int, bos_id: int | None,
                  seed: int) -> grain.MapDataset:
    """Endless rows of ``seq_len + 1`` byte tokens, one example each (BOS first when
    the tokenizer has one), shaped as the packer's rows (``tokens``, one segment,
    positions from 0) with loss ``weights``: only the answer's digits, each weighing
    ``seq_len / DIGITS``, so that a passkey row carries a text row's weight (spread
    over five tokens, as the weight of 0.5% of a row's targets it would hardly teach
    retrieval: a CPU model trained so learned none). The needle's depth is drawn per
    row from ``DEPTH_RANGE``."""
    length = seq_len + (bos_id is None)

    def make(index: int) -> dict[str, np.ndarray]:
        draw = np.random.default_rng([TRAIN_STREAM, seed, index])
        depth = round(float(draw.uniform(*DEPTH_RANGE)), 3)
        text, answer_at = example_bytes(filler, length, depth, index, (TRAIN_STREAM, seed))
        ids = np.frombuffer(text, np.uint8).astype(np.int32)
        if bos_id is not None:
            ids, answer_at = np.concatenate([np.asarray([bos_id], np.int32), ids]), answer_at + 1
        weights = np.zeros(seq_len + 1, np.float32)
        weights[answer_at:answer_at + DIGITS] = seq_len / DIGITS
        return {"tokens": ids, "tokens_segment_ids": np.ones(seq_len + 1, np.int32),
                "tokens_positions": np.arange(seq_len + 1, dtype=np.int32),
                "weights": weights}

    return grain.MapDataset.range(1 << 40).map(make)
