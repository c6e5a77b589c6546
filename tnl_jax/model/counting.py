"""Model size and cost from the config alone: parameters and training FLOPs per token."""
from __future__ import annotations

import math

import jax
from flax import nnx

from tnl_jax.model.config import ModelConfig
from tnl_jax.model.language_model import create_model


def count_params(cfg: ModelConfig) -> int:
    """Parameter count, from shapes only (nothing is allocated)."""
    model = nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0)))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def count_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3 × forward), attention included.

    Matrix products count 2 FLOPs per multiply-add. A lightning layer counts what the
    chunked op computes, per head and token with chunk ``C``: a full ``C``-wide tile
    for ``q kᵀ`` and for its product with ``v``, plus ``q S`` and ``kᵀ v`` against the
    ``dk × e`` state. A softmax layer counts its causal half: ``2 · d · seq_len``.
    """
    d, heads, e = cfg.decoder_embed_dim, cfg.decoder_attention_heads, cfg.head_dim
    chunk = min(cfg.chunk_size or 64, seq_len)
    forward = 2 * d * cfg.vocab_size  # head
    for kind in cfg.layer_kinds():
        forward += 2 * 3 * d * cfg.mlp_dim
        if kind == "softmax":
            forward += 2 * 4 * d * d + 2 * d * seq_len
        else:
            dk = 2 * e if kind == "lrpe" else e
            forward += 2 * 5 * d * d + heads * (2 * chunk * (dk + e) + 4 * dk * e)
    return 3.0 * forward
