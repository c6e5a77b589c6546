"""Multi-query associative recall (MQAR) as Zoology trains and tests it (Arora et al.
2023, "Zoology: measuring and improving recall in efficient language models").

An example of ``length`` tokens opens with ``pairs`` key-value pairs
``k1 v1 k2 v2 ...`` (keys drawn without repeats from ``[1, V/2)``, values from
``[V/2, V)``, ``V`` the model's vocabulary: Zoology uses 8192), then every key is asked again once, ``k_i v_i``, at an even
offset of the rest of the example, the rest being random tokens of the whole
vocabulary. The offsets follow Zoology's power law (``p(gap) ∝ gap^(a-1)``, ``a =
POWER_A``): most queries come soon after the statement, a few far from it. Only the
answers ``v_i`` after a query carry loss weight, so loss and accuracy measure recall
alone. (Zoology writes noise after a query and puts the answer in the label only; here
the answer is the next token, as in text: each key is asked once, so a later query
cannot copy an earlier answer.)

Training draws its examples from ``train_mix(seq_len)``, (length, pairs) settings
mixed in equal parts and packed into rows: at 512-token rows Zoology's (128, 8),
(256, 16), (512, 32) and (512, 64). ``eval`` examples come from another stream, so the
test set is never trained on. Examples are generated from (split, index): the same
every run.
"""
from __future__ import annotations

import grain
import numpy as np

POWER_A = 0.01
DOCUMENTS_PER_SPLIT = 1_000_000
_SPLIT_SEED = {"train": 0, "eval": 1}


def query_gaps(rng: np.random.Generator, space: int, pairs: int) -> np.ndarray:
    """``pairs`` distinct query slots in ``[0, space)``, the power law favouring small:
    drawn one after another without replacement, each in proportion to its weight
    (Zoology's ``choice(..., replace=False, p=...)``), here by the Gumbel top-k trick,
    which draws the same distribution in one vectorised pass."""
    log_weights = (POWER_A - 1) * np.log(np.arange(1, space + 1, dtype=np.float64))
    return np.argsort(-(log_weights + rng.gumbel(size=space)))[:pairs]


def longest(seq_len: int) -> int:
    """The longest training example of rows of ``seq_len`` inputs: a multiple of 64."""
    return (seq_len + 1) // 64 * 64


def train_mix(seq_len: int) -> tuple[tuple[int, int], ...]:
    """The training settings ``(length, pairs)`` of rows of ``seq_len`` inputs."""
    top = longest(seq_len)
    return ((top // 4, top // 64), (top // 2, top // 32), (top, top // 16), (top, top // 8))


def extrapolation_mix(seq_len: int) -> tuple[tuple[int, int], ...]:
    """Settings past training: two and four times the longest example, more pairs."""
    top = longest(seq_len)
    return ((2 * top, top // 8), (2 * top, top // 4), (4 * top, top // 8), (4 * top, top // 2))


def example(split: str, index: int, length: int, pairs: int, vocab: int
            ) -> dict[str, np.ndarray]:
    """One example: ``tokens (length,)`` int32 and ``weights (length,)`` float32, 1 on
    each answer (the token after a query); ids below ``vocab``."""
    if 4 * pairs > length or pairs > vocab // 2 - 1:
        raise ValueError(f"MQAR: {pairs} pairs need length >= {4 * pairs} (the statement, "
                         f"then a query and its answer per pair) and a vocabulary of at least "
                         f"{2 * pairs + 2}, got length={length}, vocab={vocab}")
    rng = np.random.default_rng([_SPLIT_SEED[split], length, pairs, index])
    keys = 1 + rng.choice(vocab // 2 - 1, size=pairs, replace=False)
    values = vocab // 2 + rng.choice(vocab - vocab // 2, size=pairs, replace=False)
    tokens = rng.integers(0, vocab, size=length)  # The noise between queries.
    tokens[0:2 * pairs:2], tokens[1:2 * pairs:2] = keys, values
    at = 2 * pairs + 2 * query_gaps(rng, (length - 2 * pairs) // 2, pairs)
    tokens[at], tokens[at + 1] = keys, values
    weights = np.zeros(length, np.float32)
    weights[at + 1] = 1.0
    return {"tokens": tokens.astype(np.int32), "weights": weights}


def check(seq_len: int, vocab_size: int, key: str = "data") -> None:
    """Rows of at least 63 inputs (a 64-token example), and keys and values for the
    most pairs the evaluation asks (``extrapolation_mix``) in the vocabulary."""
    if seq_len < 63:
        raise ValueError(f"{key}='mqar' trains on examples of 64 tokens or more: needs "
                         f"seq_len >= 63, got seq_len={seq_len}")
    pairs = max(p for _, p in extrapolation_mix(seq_len))
    if vocab_size // 2 - 1 < pairs:
        raise ValueError(f"{key}='mqar' at seq_len={seq_len} asks up to {pairs} distinct keys "
                         f"and values: needs model.vocab_size >= {2 * pairs + 2}, got "
                         f"vocab_size={vocab_size} (Zoology uses 8192)")


def documents(split: str, seq_len: int, vocab: int) -> grain.MapDataset:
    """A large indexed set of MQAR examples, ``train_mix(seq_len)``'s settings in turn."""
    mix = train_mix(seq_len)

    def make(i: int) -> dict[str, np.ndarray]:
        length, pairs = mix[i % len(mix)]
        return example(split, i // len(mix), length, pairs, vocab)

    return grain.MapDataset.range(DOCUMENTS_PER_SPLIT).map(make)
