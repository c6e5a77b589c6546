"""One decoder layer: pre-norm residual blocks, ``x += TokenMixer(norm(x))`` then
``x += SGLU(norm(x))``. The token mixer is TNL's ``NormLinearAttention`` (with or
without LRPE) or, in the baselines, ``SoftmaxAttention``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnl_jax.model.channel_mixer import SGLU
from tnl_jax.model.norms import make_norm
from tnl_jax.model.softmax_attention import SoftmaxAttention
from tnl_jax.model.token_mixer import NormLinearAttention
from tnl_jax.partitioning import ACTIVATION, constrain

ATTENTIONS = ("linear", "softmax")


class DecoderLayer(nnx.Module):
    """``DecoderLayer(num_heads, in_features, mlp_features, rngs=...)``.

    Args:
      attention: ``"linear"`` (TNL's ``NormLinearAttention``) or ``"softmax"``.
      use_lrpe, decay, learn_decay, backend, chunk_size: of the linear token mixer
        (see ``NormLinearAttention``); ``rope_theta`` (None: no RoPE), ``qk_norm``,
        ``logn_length``: of the softmax one.
      norm_gain: RMSNorm with a gain for both pre-norms (TNL: SRMSNorm, none).
      mlp_activation: the channel mixer's (``None``: TNL's SGLU; ``"silu"``: SwiGLU).
      projection_dtype: ``"fp8"``: every projection in fp8 (``model/fp8.py``).
      norm_kernel: SRMSNorm's implementation, ``"xla"`` or ``"pallas"`` (the pre-norms
        and the linear token mixer's output norm; ``model/norms.py``).
    """

    def __init__(self, num_heads: int, in_features: int, mlp_features: int, *,
                 attention: str = "linear", use_lrpe: bool = False,
                 decay: jax.Array | None = None, learn_decay: bool = False,
                 rope_theta: float | None = 10000.0, qk_norm: bool = False,
                 logn_length: int | None = None, norm_gain: bool = False,
                 mlp_activation: str | None = None, init_std: float = 0.02,
                 dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,
                 backend: str | None = None, chunk_size: int | None = None,
                 projection_dtype: str | None = None, norm_kernel: str = "xla",
                 rngs: nnx.Rngs):
        if attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r}, expected one of {ATTENTIONS}")
        self.softmax = attention == "softmax"
        common = dict(init_std=init_std, dtype=dtype, param_dtype=param_dtype,
                      projection_dtype=projection_dtype, rngs=rngs)
        norm = lambda: make_norm(norm_gain, in_features, param_dtype=param_dtype,
                                 kernel=norm_kernel, rngs=rngs)
        self.token_norm = norm()
        if self.softmax:
            if use_lrpe or decay is not None or learn_decay:
                raise ValueError("attention='softmax' takes no use_lrpe, decay or learn_decay")
            self.token_mixer = SoftmaxAttention(num_heads, in_features, rope_theta=rope_theta,
                                                qk_norm=qk_norm, logn_length=logn_length,
                                                **common)
        else:
            if qk_norm or logn_length is not None:
                raise ValueError("qk_norm and logn_length are of attention='softmax' (TNL "
                                 "normalises its output)")
            self.token_mixer = NormLinearAttention(
                num_heads, in_features, use_lrpe=use_lrpe, decay=decay, learn_decay=learn_decay,
                backend=backend, chunk_size=chunk_size, norm_kernel=norm_kernel, **common)
        self.channel_norm = norm()
        self.channel_mixer = SGLU(in_features, mlp_features, activation=mlp_activation, **common)
        self.dtype = jnp.dtype(dtype)

    def _mix_channels(self, x: jax.Array) -> jax.Array:
        return x + self.channel_mixer(self.channel_norm(x))

    def __call__(self, x: jax.Array, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, *, cache_size: int | None = None):
        """x ``(B, T, d)`` -> x, or with ``cache_size`` ``(x, cache)``: the linear
        layers' final state, or the softmax layers' key/value cache. Under a mesh the
        residual stream is kept split as ``partitioning.ACTIVATION`` says."""
        x = constrain(x, ACTIVATION)
        normed = self.token_norm(x.astype(self.dtype))
        if self.softmax:
            out = self.token_mixer(normed, segment_ids, positions, cache_size=cache_size)
        else:
            out = self.token_mixer(normed, segment_ids, positions,
                                   return_state=cache_size is not None)
        y, cache = (out, None) if cache_size is None else out
        x = self._mix_channels(constrain(x + y, ACTIVATION))
        x = constrain(x, ACTIVATION)
        return x if cache_size is None else (x, cache)

    def step(self, x: jax.Array, cache, positions: jax.Array | None = None, *,
             index: jax.Array | None = None, kv_valid: jax.Array | None = None):
        """One decode step, x ``(B, d)`` -> ``(x, cache)``; ``index`` and ``kv_valid``
        serve the softmax layers' cache (see ``SoftmaxAttention.step``)."""
        normed = self.token_norm(x)
        if self.softmax:
            y, cache = self.token_mixer.step(normed, cache, positions, index=index,
                                             kv_valid=kv_valid)
        else:
            y, cache = self.token_mixer.step(normed, cache, positions)
        return self._mix_channels(x + y), cache
