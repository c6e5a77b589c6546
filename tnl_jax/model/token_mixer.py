"""TNL's token mixer, gated norm-linear attention (``NormLinearAttention`` in the
published code):

    q, k, v, u = split₄(x W_qkvu);  q, k = silu(q), silu(k);  [LRPE on q, k]
    o = lightning_attention(q, k, v, s);  y = (SRMSNorm(o) ⊙ u) W_out

``W_qkvu`` is stored ``(d, 4, d)`` (in, q|k|v|u, heads·e) so that the last axis
shards by heads without cutting across the four parts. The layer owns its per-head
decay rates ``s`` (``λ = exp(-s)``): a fixed ``FixedDecay`` variable (not a
parameter: not trained, not in checkpoints) or, with ``learn_decay``, a parameter
``log_decay`` (learned in log space, so the rate stays positive).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import ShardAxes, lightning_attention, lightning_attention_step
from tnl_jax.model.fp8 import fp8_scalings, project
from tnl_jax.model.lrpe import Lrpe
from tnl_jax.model.norms import srms_norm_gate
from tnl_jax.model.params import create_param, normal
from tnl_jax.model.positions import default_positions
from tnl_jax.model.remat import name_op_inputs, name_op_output, name_projection
from tnl_jax.partitioning import split_axes


class FixedDecay(nnx.Variable):
    """A layer's fixed per-head decay rates: state, but not an ``nnx.Param``."""


def check_decay(decay: jax.Array | None, num_heads: int) -> jax.Array | None:
    """``decay`` as a float32 ``(num_heads,)`` array, or a ``ValueError`` naming it."""
    if decay is None:
        return None
    decay = jnp.asarray(decay, jnp.float32)
    if decay.shape != (num_heads,):
        raise ValueError(f"decay has shape {decay.shape}, expected ({num_heads},): one rate "
                         "per head")
    return decay


def op_shard_axes(q_shape: tuple[int, ...]) -> ShardAxes | None:
    """The mesh axes that split the op's batch, sequence and heads under the logical
    rules (``tnl_jax.partitioning``), or ``None`` without a mesh: then the op keeps
    its own choice. A split sequence is context parallelism, exact (LASP-2)."""
    axes = split_axes(("batch", "seq", "heads", None), q_shape)
    return None if axes is None else ShardAxes(*axes[:3])


class NormLinearAttention(nnx.Module):
    """``NormLinearAttention(num_heads, in_features, rngs=...)``: TNL's token mixer.

    Args:
      num_heads: heads ``H``; the head size is ``in_features // num_heads``.
      in_features: model width ``d`` (input and output).
      use_lrpe: LRPE on q and k (doubles their head size; TNL's first layer).
      decay: ``(H,)`` decay rates ``s``; ``None`` means no decay (``λ = 1``).
      learn_decay: train the rates (a ``log_decay`` parameter starting at ``decay``).
      backend, chunk_size: passed to ``lightning_attention`` (``None``: its choice).
      projection_dtype: ``"fp8"``: the q|k|v, gate and output products in fp8
        (``model/fp8.py``); ``None``: in ``dtype``.
      norm_kernel: the output norm and gate product by ``"xla"`` or in one ``"pallas"``
        kernel (``model/norms.py``).
    """

    def __init__(self, num_heads: int, in_features: int, *, use_lrpe: bool = False,
                 decay: jax.Array | None = None, learn_decay: bool = False,
                 init_std: float = 0.02, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, backend: str | None = None,
                 chunk_size: int | None = None, projection_dtype: str | None = None,
                 norm_kernel: str = "xla", rngs: nnx.Rngs):
        d = in_features
        if d % num_heads:
            raise ValueError(f"in_features={d} is not divisible by num_heads={num_heads}")
        decay = check_decay(decay, num_heads)
        if learn_decay and decay is None:
            raise ValueError("learn_decay=True needs decay=: the (num_heads,) initial rates")
        init = normal(init_std)
        self.qkvu_proj = create_param(rngs.params(), (d, 4, d), ("embed", None, "heads"),
                                      param_dtype, init)
        self.out_proj = create_param(rngs.params(), (d, d), ("heads", "embed"), param_dtype, init)
        self.lrpe = Lrpe(num_heads, d // num_heads, param_dtype=param_dtype,
                         rngs=rngs) if use_lrpe else None
        self.fixed_decay = None if learn_decay or decay is None else FixedDecay(decay)
        self.log_decay = create_param(rngs.params(), (num_heads,), (None,), jnp.float32,
                                      lambda *_: jnp.log(decay)) if learn_decay else None
        self.fp8_scaling = fp8_scalings(3, projection_dtype)  # q|k|v, u, output
        self.heads = num_heads
        self.dtype = jnp.dtype(dtype)
        self.backend = backend
        self.chunk_size = chunk_size
        self.norm_kernel = norm_kernel

    def decay_rates(self) -> jax.Array:
        """The ``(H,)`` float32 decay rates this layer uses now."""
        if self.log_decay is not None:
            return jnp.exp(self.log_decay[...])
        if self.fixed_decay is not None:
            return self.fixed_decay[...]
        return jnp.zeros((self.heads,), jnp.float32)

    def _project(self, x: jax.Array, positions: jax.Array | None, *, one_product: bool = False):
        """x ``(B, T, d)`` -> q, k ``(B, T, H, dk)``, v ``(B, T, H, e)``, u ``(B, T, d)``."""
        w, x = self.qkvu_proj[...].astype(self.dtype), x.astype(self.dtype)
        if one_product:  # Decode: the whole weight read once; its w[:, :3] is a copy.
            qkvu = jnp.einsum("btd,dfo->btfo", x, w)
            qkv, u = qkvu[:, :, :3], qkvu[:, :, 3]
        else:
            # Two products: the ``projections`` remat policy keeps q|k|v but not the gate
            # u, which the backward recomputes (one d x d product) instead of holding d
            # values per token per layer (so TNL's memory per token is within softmax's).
            qkv = name_projection(project(x, w[:, :3], self.fp8_scaling, 0))
            u = project(x, w[:, 3], self.fp8_scaling, 1)
        q, k, v = (qkv[:, :, i] for i in range(3))
        split_heads = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)
        q, k, v = split_heads(jax.nn.silu(q)), split_heads(jax.nn.silu(k)), split_heads(v)
        if self.lrpe is not None:
            q, k = self.lrpe(q, positions), self.lrpe(k, positions)
        return q, k, v, u

    def _output(self, o: jax.Array, u: jax.Array) -> jax.Array:
        gated = srms_norm_gate(o.reshape(*o.shape[:-2], -1), u, kernel=self.norm_kernel)
        return project(gated, self.out_proj[...], self.fp8_scaling, 2)

    def __call__(self, x: jax.Array, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, *, return_state: bool = False):
        """x ``(B, T, d)`` -> y ``(B, T, d)``, or ``(y, final_state (B, H, dk, e))``.

        ``segment_ids (B, T)`` keep packed documents apart; ``positions (B, T)`` (LRPE)
        default to the position inside each segment.
        """
        if positions is None and self.lrpe is not None:
            positions = default_positions(x.shape[0], x.shape[1], segment_ids)
        q, k, v, u = self._project(x, positions)
        q, k, v = name_op_inputs(q, k, v)
        o, state = lightning_attention(q, k, v, self.decay_rates(), segment_ids=segment_ids,
                                       return_final_state=True, chunk_size=self.chunk_size,
                                       backend=self.backend, shard_axes=op_shard_axes(q.shape))
        y = self._output(name_op_output(o), u)
        return (y, state) if return_state else y

    def step(self, x: jax.Array, state: jax.Array, positions: jax.Array | None = None):
        """One decode step: x ``(B, d)``, state ``(B, H, dk, e)``, positions ``(B,)``
        (needed with LRPE) -> ``(y (B, d), state)``."""
        if positions is None and self.lrpe is not None:
            raise ValueError("step: positions (B,) are needed by a layer with LRPE")
        q, k, v, u = self._project(x[:, None], None if positions is None else positions[:, None],
                                   one_product=True)
        o, state = lightning_attention_step(q[:, 0], k[:, 0], v[:, 0], self.decay_rates(), state,
                                            backend=self.backend)
        return self._output(o, u[:, 0]), state
