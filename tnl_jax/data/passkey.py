"""Passkey examples: a number hidden at a chosen depth of filler text, asked for at the
end. ``tnl_jax.evaluation.passkey`` scores them on held-out filler; ``training_rows``
makes them from the training text, rows of examples of every length, for the rows that
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
MIN_EXAMPLE_TOKENS = 128  # The shortest training example.


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


def example_lengths(seq_len: int) -> tuple[int, ...]:
    """The lengths (tokens, BOS included) a training example may take in a row of
    ``seq_len + 1`` tokens: the powers of two from ``MIN_EXAMPLE_TOKENS`` to
    ``seq_len``, each drawn equally often, so every scale of distance is trained."""
    lengths, length = [], MIN_EXAMPLE_TOKENS
    while length <= seq_len:
        lengths.append(length)
        length *= 2
    return tuple(lengths) or (seq_len,)


def _example_tokens(filler: bytes, length: int, depth: float, index: int,
                    stream: tuple[int, ...], bos_id: int | None) -> tuple[np.ndarray, int]:
    """One example as ``length`` token ids (BOS first when there is one) and where its
    answer starts."""
    text, answer_at = example_bytes(filler, length - (bos_id is not None), depth, index,
                                    stream)
    ids = np.frombuffer(text, np.uint8).astype(np.int32)
    if bos_id is None:
        return ids, answer_at
    return np.concatenate([np.asarray([bos_id], np.int32), ids]), answer_at + 1


def training_rows(filler: bytes, seq_len: int, bos_id: int | None,
                  seed: int) -> grain.MapDataset:
    """Endless rows of ``seq_len + 1`` byte tokens, shaped as the packer's rows
    (``tokens``, segment ids, positions from 0 in each segment), each filled with
    examples of one length, drawn per row from ``example_lengths``, one after another
    (what is left at the end is padding, segment 0), each needle's depth from
    ``DEPTH_RANGE``. Every length gets about as many rows, tokens and answers' weight,
    and a row of short examples holds many: about 32 examples a 16K row on average,
    where drawing each example's length (the row filled by whatever still fits) made
    about 11, and long ones rare.

    Loss ``weights``: only each answer's digits, together the example's length, so a
    passkey row weighs as much as a text row. Retrieval is learned from many answers:
    a CPU model (width 128) learned none from 3,200 examples and half of them after
    48,000 (docs/QUALITY.md); one example a row, or the whole row in the loss, is far
    too little of it."""
    width = seq_len + 1
    lengths = example_lengths(seq_len)

    def make(index: int) -> dict[str, np.ndarray]:
        draw = np.random.default_rng([TRAIN_STREAM, seed, index])
        row = {"tokens": np.zeros(width, np.int32),
               "tokens_segment_ids": np.zeros(width, np.int32),
               "tokens_positions": np.zeros(width, np.int32),
               "weights": np.zeros(width, np.float32)}
        start, segment = 0, 0
        length = int(draw.choice(lengths))
        while width - start >= length:
            depth = round(float(draw.uniform(*DEPTH_RANGE)), 3)
            ids, answer_at = _example_tokens(filler, length, depth, index,
                                             (TRAIN_STREAM, seed, segment), bos_id)
            segment += 1
            end = start + length
            row["tokens"][start:end] = ids
            row["tokens_segment_ids"][start:end] = segment
            row["tokens_positions"][start:end] = np.arange(length)
            row["weights"][start + answer_at:start + answer_at + DIGITS] = length / DIGITS
            start = end
        return row

    return grain.MapDataset.range(1 << 40).map(make)
