"""The three Pallas (Triton) kernels of the fused linear + cross-entropy. Each makes the
logits ``h wᵀ`` a ``(token block, vocab block)`` tile at a time, in registers (a loop
over the width in ``k_block`` slices), and never writes them:

- ``forward``: per token block, a walk over the vocabulary with an online logsumexp,
  the target's logit and the running argmax: ``lse``, ``target_logit``, ``best``.
- ``grad_hidden``: per token block, the walk again; each tile's ``g = (softmax -
  onehot) · dloss`` (rounded to the operands' dtype) times ``w``'s rows, summed into
  the block's ``dh`` (float32, in the output, ``d_block`` columns at a time).
- ``grad_weight``: per vocabulary block, a walk over the token blocks; ``gᵀ h`` summed
  into the block's ``dw``.

Operands are padded (ops.py): ``h (Np, dp)``, ``w (Vp, dp)``, ``targets``, ``lse``,
``dloss`` ``(Np,)``; ``vocab`` is the real vocabulary size (padded columns are masked).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels.lightning.chunk_math import dot

NO_INDEX = jnp.iinfo(jnp.int32).max


@dataclasses.dataclass(frozen=True)
class CrossEntropyConfig:
    """Blocks (powers of two, >= 16) and the Triton launch of the three kernels."""
    token_block: int = 64   # Tokens per program (forward, grad_hidden).
    vocab_block: int = 128  # Vocabulary entries per tile (forward) and per program (grad_weight).
    k_block: int = 64       # Width per slice of the logits' products.
    d_block: int = 64       # Width per slice of the gradients' sums.
    num_warps: int = 4
    num_stages: int = 2
    # The gradients' walks sum into float32 blocks in memory once per tile: larger tiles
    # there mean fewer passes over them. None: token_block / vocab_block.
    dh_vocab_block: int | None = None  # Vocabulary entries per tile of grad_hidden.
    dw_token_block: int | None = None  # Tokens per tile of grad_weight.
    # Instead of grad_hidden and grad_weight: the backward in XLA's products, this many
    # tokens' logits at a time (xla_grads.py).
    xla_grads_tokens: int | None = None

    def __post_init__(self):
        value = self.xla_grads_tokens
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"CrossEntropyConfig.xla_grads_tokens={value!r}: expected None "
                             "(the Pallas gradient kernels) or a number of tokens >= 1")
        for field in ("dh_vocab_block", "dw_token_block"):
            if getattr(self, field) is None:
                object.__setattr__(self, field, getattr(self, field[3:]))
        for field in ("token_block", "vocab_block", "k_block", "d_block", "dh_vocab_block",
                      "dw_token_block"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 16 or value & (value - 1):
                raise ValueError(f"CrossEntropyConfig.{field}={value!r}: expected a power of "
                                 "two >= 16")
        for field in ("num_warps", "num_stages"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CrossEntropyConfig.{field}={value!r}: expected an integer >= 1")

    @property
    def width_multiple(self) -> int:
        """What the padded width must be a multiple of."""
        return max(self.k_block, self.d_block)

    @property
    def token_multiple(self) -> int:
        """What the padded token count must be a multiple of."""
        return max(self.token_block, self.dw_token_block)

    @property
    def vocab_multiple(self) -> int:
        """What the padded vocabulary must be a multiple of."""
        return max(self.vocab_block, self.dh_vocab_block)


def _logits_tile(rows_ref, row_start, cols_ref, col_start, rows: int, cols: int,
                 width: int, k_block: int) -> jax.Array:
    """``(rows, cols)`` float32: ``rows_ref[row_start:] · cols_ref[col_start:]ᵀ``."""
    def step(k, acc):
        a = rows_ref[pl.ds(row_start, rows), pl.ds(k * k_block, k_block)]
        b = cols_ref[pl.ds(col_start, cols), pl.ds(k * k_block, k_block)]
        return acc + dot(a, b.T)
    return jax.lax.fori_loop(0, width // k_block, step, jnp.zeros((rows, cols), jnp.float32))


def _vocab_ids(start, shape: tuple[int, int], axis: int) -> jax.Array:
    return start + jax.lax.broadcasted_iota(jnp.int32, shape, axis)


def _forward_kernel(h_ref, w_ref, t_ref, lse_ref, target_ref, best_ref, *, vocab: int,
                    cfg: CrossEntropyConfig):
    n, v = cfg.token_block, cfg.vocab_block
    width, vocab_tiles = h_ref.shape[1], w_ref.shape[0] // v
    targets = t_ref[...]

    def tile(j, carry):
        top, total, target_logit, best = carry
        logits = _logits_tile(h_ref, 0, w_ref, j * v, n, v, width, cfg.k_block)
        ids = _vocab_ids(j * v, (n, v), 1)
        logits = jnp.where(ids < vocab, logits, -jnp.inf)
        tile_top = jnp.max(logits, axis=1)
        new_top = jnp.maximum(top, tile_top)
        total = total * jnp.exp(top - new_top) + jnp.sum(jnp.exp(logits - new_top[:, None]), 1)
        target_logit += jnp.sum(jnp.where(ids == targets[:, None], logits, 0.0), axis=1)
        tile_best = jnp.min(jnp.where(logits == tile_top[:, None], ids, NO_INDEX), axis=1)
        best = jnp.where(tile_top > top, tile_best, best)
        return new_top, total, target_logit, best

    init = (jnp.full((n,), -jnp.inf, jnp.float32), jnp.zeros((n,), jnp.float32),
            jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32))
    top, total, target_logit, best = jax.lax.fori_loop(0, vocab_tiles, tile, init)
    lse_ref[...] = top + jnp.log(total)
    target_ref[...] = target_logit
    best_ref[...] = best


def _logit_grads(logits, ids, targets, lse, dloss, vocab: int, token_axis: int):
    """``(softmax - onehot) · dloss`` of a logits tile whose tokens lie along
    ``token_axis``; masked vocabulary entries give 0."""
    expand = (lambda x: x[:, None]) if token_axis == 0 else (lambda x: x[None, :])
    probs = jnp.where(ids < vocab, jnp.exp(logits - expand(lse)), 0.0)
    onehot = (ids == expand(targets)).astype(jnp.float32)
    return (probs - onehot) * expand(dloss)


def _grad_hidden_kernel(h_ref, w_ref, t_ref, lse_ref, dloss_ref, dh_ref, *, vocab: int,
                        cfg: CrossEntropyConfig):
    n, v, dblk = cfg.token_block, cfg.dh_vocab_block, cfg.d_block
    width, vocab_tiles = h_ref.shape[1], w_ref.shape[0] // v
    targets, lse, dloss = t_ref[...], lse_ref[...], dloss_ref[...]

    def clear(c, _):
        dh_ref[:, pl.ds(c * dblk, dblk)] = jnp.zeros((n, dblk), jnp.float32)
    jax.lax.fori_loop(0, width // dblk, clear, None)

    def tile(j, _):
        logits = _logits_tile(h_ref, 0, w_ref, j * v, n, v, width, cfg.k_block)
        grads = _logit_grads(logits, _vocab_ids(j * v, (n, v), 1), targets, lse, dloss,
                             vocab, token_axis=0).astype(w_ref.dtype)

        def add(c, _):
            rows = w_ref[pl.ds(j * v, v), pl.ds(c * dblk, dblk)]
            dh_ref[:, pl.ds(c * dblk, dblk)] += dot(grads, rows)
        jax.lax.fori_loop(0, width // dblk, add, None)
    jax.lax.fori_loop(0, vocab_tiles, tile, None)


def _grad_weight_kernel(h_ref, w_ref, t_ref, lse_ref, dloss_ref, dw_ref, *, vocab: int,
                        cfg: CrossEntropyConfig):
    n, v, dblk = cfg.dw_token_block, cfg.vocab_block, cfg.d_block
    width, token_tiles = w_ref.shape[1], h_ref.shape[0] // n
    ids = _vocab_ids(pl.program_id(0) * v, (v, n), 0)

    def clear(c, _):
        dw_ref[:, pl.ds(c * dblk, dblk)] = jnp.zeros((v, dblk), jnp.float32)
    jax.lax.fori_loop(0, width // dblk, clear, None)

    def tile(i, _):
        tokens = pl.ds(i * n, n)
        logits_t = _logits_tile(w_ref, 0, h_ref, i * n, v, n, width, cfg.k_block)
        grads_t = _logit_grads(logits_t, ids, t_ref[tokens], lse_ref[tokens], dloss_ref[tokens],
                               vocab, token_axis=1).astype(h_ref.dtype)

        def add(c, _):
            rows = h_ref[tokens, pl.ds(c * dblk, dblk)]
            dw_ref[:, pl.ds(c * dblk, dblk)] += dot(grads_t, rows)
        jax.lax.fori_loop(0, width // dblk, add, None)
    jax.lax.fori_loop(0, token_tiles, tile, None)


def _call(kernel, grid, in_specs, out_specs, out_shape, cfg: CrossEntropyConfig,
          interpret: bool, name: str):
    """``pallas_call`` with the Triton compiler parameters given explicitly (on jax 0.10
    ``None`` would lower through Mosaic GPU)."""
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        interpret=interpret, name=name,
        compiler_params=plt.CompilerParams(num_warps=cfg.num_warps,
                                           num_stages=cfg.num_stages))


def _token_rows(cfg, width):
    return pl.BlockSpec((cfg.token_block, width), lambda i: (i, 0))


def _token_values(cfg):
    return pl.BlockSpec((cfg.token_block,), lambda i: (i,))


def _whole(shape):
    return pl.BlockSpec(shape, lambda i: (0,) * len(shape))


def forward(h, w, targets, *, vocab: int, cfg: CrossEntropyConfig, interpret: bool):
    """``(lse, target_logit, best)`` ``(Np,)``: float32, float32, int32."""
    tokens, width = h.shape
    values = [jax.ShapeDtypeStruct((tokens,), dt) for dt in (jnp.float32, jnp.float32, jnp.int32)]
    return _call(functools.partial(_forward_kernel, vocab=vocab, cfg=cfg),
                 (tokens // cfg.token_block,),
                 [_token_rows(cfg, width), _whole(w.shape), _token_values(cfg)],
                 [_token_values(cfg)] * 3, values, cfg, interpret, "fused_ce_fwd")(h, w, targets)


def grad_hidden(h, w, targets, lse, dloss, *, vocab: int, cfg: CrossEntropyConfig,
                interpret: bool) -> jax.Array:
    """``dh (Np, dp)`` float32."""
    tokens, width = h.shape
    return _call(functools.partial(_grad_hidden_kernel, vocab=vocab, cfg=cfg),
                 (tokens // cfg.token_block,),
                 [_token_rows(cfg, width), _whole(w.shape)] + [_token_values(cfg)] * 3,
                 _token_rows(cfg, width), jax.ShapeDtypeStruct(h.shape, jnp.float32), cfg,
                 interpret, "fused_ce_dh")(h, w, targets, lse, dloss)


def grad_weight(h, w, targets, lse, dloss, *, vocab: int, cfg: CrossEntropyConfig,
                interpret: bool) -> jax.Array:
    """``dw (Vp, dp)`` float32."""
    tokens, width = h.shape
    vocab_rows = pl.BlockSpec((cfg.vocab_block, width), lambda j: (j, 0))
    return _call(functools.partial(_grad_weight_kernel, vocab=vocab, cfg=cfg),
                 (w.shape[0] // cfg.vocab_block,),
                 [_whole(h.shape), vocab_rows] + [_whole((tokens,))] * 3,
                 vocab_rows, jax.ShapeDtypeStruct(w.shape, jnp.float32), cfg, interpret,
                 "fused_ce_dw")(h, w, targets, lse, dloss)
