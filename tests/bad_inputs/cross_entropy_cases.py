"""The fused cross-entropy's bad inputs (area "cross entropy"): ``fused_cross_entropy``
and its ``CrossEntropyConfig``. Every row fails in validation, before anything is
traced (numpy inputs)."""
from __future__ import annotations

import numpy as np

from pallas_kernels.cross_entropy import CrossEntropyConfig, fused_cross_entropy
from tests.bad_inputs.case import BadInput

N, D, V = 6, 8, 11


def rand(*shape, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng().standard_normal(shape).astype(dtype)


def fused(**changes):
    """A call on fresh random inputs (backend ``"interpret"``) with ``changes``."""
    def call():
        args = dict(h=rand(N, D), w=rand(V, D), targets=np.arange(N, dtype=np.int32),
                    backend="interpret")
        args.update(changes)
        return fused_cross_entropy(args.pop("h"), args.pop("w"), args.pop("targets"), **args)
    return call


CASES = [
    BadInput("cross entropy: unknown backend", fused(backend="xla"), ValueError,
             ("backend='xla'", "'pallas', 'interpret'")),
    BadInput("cross entropy: widths differ", fused(w=rand(V, D + 1)), ValueError,
             ("(6, 8)", "(11, 9)", "(tokens, d) and (vocab, d)")),
    BadInput("cross entropy: 3-d hidden states", fused(h=rand(2, 3, D)), ValueError,
             ("(2, 3, 8)", "(tokens, d)")),
    BadInput("cross entropy: one target short", fused(targets=np.arange(N - 1)), ValueError,
             ("targets has shape (5,)", "expected (6,)")),
    BadInput("cross entropy: float targets", fused(targets=rand(N)), ValueError,
             ("targets has dtype float32", "integers")),
    BadInput("cross entropy: mixed dtypes", fused(w=rand(V, D, dtype=np.float16)), ValueError,
             ("h is float32 and w float16", "one dtype")),
    BadInput("cross entropy: empty vocabulary", fused(w=rand(0, D)), ValueError,
             ("w has shape (0, 8)", "vocabulary")),
    BadInput("cross entropy: config not a CrossEntropyConfig", fused(config={"token_block": 16}),
             ValueError, ("config={'token_block': 16}", "CrossEntropyConfig")),
    BadInput("cross entropy: block not a power of two",
             lambda: CrossEntropyConfig(vocab_block=48), ValueError,
             ("vocab_block=48", "power of two >= 16")),
    BadInput("cross entropy: XLA gradients of no tokens",
             lambda: CrossEntropyConfig(xla_grads_tokens=0), ValueError,
             ("xla_grads_tokens=0", "number of tokens >= 1")),
    BadInput("cross entropy: no warps", lambda: CrossEntropyConfig(num_warps=0), ValueError,
             ("num_warps=0", "integer >= 1")),
]
