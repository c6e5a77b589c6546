"""One decoder layer: pre-norm residual blocks, ``x += TokenMixer(norm(x))`` then
``x += SGLU(norm(x))``. The token mixer is TNL's (with or without LRPE) or, in the
baselines, softmax attention."""
from __future__ import annotations

import jax
from flax import nnx

from tnl_jax.channel_mixer import SGLU
from tnl_jax.config import ModelConfig
from tnl_jax.norms import SRMSNorm
from tnl_jax.softmax_attention import SoftmaxAttention
from tnl_jax.token_mixer import NormLinearAttention

LAYER_KINDS = ("lrpe", "linear", "softmax")


class DecoderLayer(nnx.Module):
    """``kind``: ``'lrpe'``, ``'linear'`` or ``'softmax'`` (see ``ModelConfig.layer_kinds``)."""

    def __init__(self, cfg: ModelConfig, kind: str, decay_init: jax.Array, rngs: nnx.Rngs):
        if kind not in LAYER_KINDS:
            raise ValueError(f"layer kind {kind!r}, expected one of {LAYER_KINDS}")
        self.softmax = kind == "softmax"
        self.token_norm = SRMSNorm()
        if self.softmax:
            self.token_mixer = SoftmaxAttention(cfg, rngs)
        else:
            self.token_mixer = NormLinearAttention(cfg, kind == "lrpe", decay_init, rngs)
        self.channel_norm = SRMSNorm()
        self.channel_mixer = SGLU(cfg, rngs)
        self.dtype = cfg.compute_dtype

    def _mix_channels(self, x: jax.Array) -> jax.Array:
        return x + self.channel_mixer(self.channel_norm(x))

    def __call__(self, x: jax.Array, decay: jax.Array, segment_ids: jax.Array | None,
                 positions: jax.Array, *, cache_size: int | None = None):
        """x ``(B, T, d)`` -> x, or with ``cache_size`` ``(x, cache)``: the linear
        layers' final state, or the softmax layers' key/value cache."""
        normed = self.token_norm(x.astype(self.dtype))
        if self.softmax:
            out = self.token_mixer(normed, segment_ids, positions, cache_size=cache_size)
        else:
            out = self.token_mixer(normed, decay, segment_ids, positions,
                                   return_state=cache_size is not None)
        if cache_size is None:
            return self._mix_channels(x + out)
        y, cache = out
        return self._mix_channels(x + y), cache

    def step(self, x: jax.Array, decay: jax.Array, positions: jax.Array, cache,
             index: jax.Array, kv_valid: jax.Array):
        """One decode step, x ``(B, d)`` -> ``(x, cache)``; ``index`` and ``kv_valid``
        serve the softmax layers' cache (see ``SoftmaxAttention.step``)."""
        normed = self.token_norm(x)
        if self.softmax:
            y, cache = self.token_mixer.step(normed, positions, cache, index, kv_valid)
        else:
            y, cache = self.token_mixer.step(normed, decay, positions, cache)
        return self._mix_channels(x + y), cache
