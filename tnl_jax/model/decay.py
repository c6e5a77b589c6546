"""The per-layer, per-head decay rates ``s`` of TNL (``λ = exp(-s)``), fixed float32
constants computed from the config, as in the published code (not in checkpoints)."""
from __future__ import annotations

import math

import numpy as np


def alibi_slopes(heads: int) -> np.ndarray:
    """ALiBi slopes ``2^(-8(h+1)/H)`` for a power of two ``H``; otherwise the slopes
    of the nearest lower power of two ``P``, then every other slope of ``2P``."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    def slopes(n: int) -> list[float]:
        if math.log2(n).is_integer():
            return power_of_two(n)
        lower = 2 ** math.floor(math.log2(n))
        return power_of_two(lower) + slopes(2 * lower)[0::2][: n - lower]

    return np.asarray(slopes(heads), np.float32)


def layer_decays(heads: int, layers: int) -> np.ndarray:
    """``(layers, heads)`` float32: ``slope_h · (1 − l/(L−1) + 1e-5)``; with one
    layer there is no layer factor. The first layer forgets fastest, the last
    barely at all."""
    slopes = alibi_slopes(heads)
    if layers == 1:
        return slopes[None]
    factors = np.array([1 - layer / (layers - 1) + 1e-5 for layer in range(layers)], np.float32)
    return (factors[:, None] * slopes[None, :]).astype(np.float32)
