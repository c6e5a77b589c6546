"""``fused_cross_entropy``: per-token cross entropy of ``logits = h wᵀ`` without the
``(tokens, vocab)`` logits ever written (kernels.py), behind ``jax.custom_vjp``: the
forward keeps only each token's logsumexp; the backward makes the logits again, tile by
tile, for ``dh`` and for ``dw`` (or, with ``CrossEntropyConfig.xla_grads_tokens``, a
chunk of tokens at a time in XLA's products: xla_grads.py)."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels.cross_entropy import kernels, xla_grads
from pallas_kernels.cross_entropy.kernels import CrossEntropyConfig

BACKENDS = ("pallas", "interpret")


@dataclasses.dataclass(frozen=True)
class _Static:
    vocab: int
    cfg: CrossEntropyConfig
    interpret: bool

    @property
    def kwargs(self) -> dict:
        return dict(vocab=self.vocab, cfg=self.cfg, interpret=self.interpret)


def check_arguments(h, w, targets, backend: str, config) -> None:
    """A ``ValueError`` naming the argument, its value and what was expected."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    if config is not None and not isinstance(config, CrossEntropyConfig):
        raise ValueError(f"config={config!r}: expected a CrossEntropyConfig or None")
    if h.ndim != 2 or w.ndim != 2 or h.shape[1] != w.shape[1]:
        raise ValueError(f"h has shape {h.shape} and w {w.shape}: expected (tokens, d) and "
                         "(vocab, d)")
    if targets.shape != h.shape[:1]:
        raise ValueError(f"targets has shape {targets.shape}: expected ({h.shape[0]},), one "
                         "per token of h")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets has dtype {targets.dtype}: expected integers")
    for name, x in (("h", h), ("w", w)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} has dtype {x.dtype}: expected floats")
    if h.dtype != w.dtype:
        raise ValueError(f"h is {h.dtype} and w {w.dtype}: expected one dtype")
    if 0 in w.shape:
        raise ValueError(f"w has shape {w.shape}: expected a vocabulary and a width >= 1")


def fused_cross_entropy(h: jax.Array, w: jax.Array, targets: jax.Array, *,
                        backend: str = "pallas",
                        config: CrossEntropyConfig | None = None) -> tuple[jax.Array, jax.Array]:
    """Cross entropy of ``logits = h wᵀ`` per token, the logits made a tile at a time.

    Args:
      h: ``(tokens, d)`` hidden states (after the final norm); w: ``(vocab, d)`` the
        head's weight (a tied embedding as it is stored), of ``h``'s dtype. Products
        accumulate in float32 (exact float32 for float32 operands).
      targets: ``(tokens,)`` ints in ``[0, vocab)``; a negative target is ignored (loss
        0, not correct, no gradient).
      backend: ``"pallas"`` (GPU, Triton lowering) or ``"interpret"`` (the same kernels,
        interpreted, any platform).
      config: blocks and launch (``CrossEntropyConfig``); ``None`` its defaults.

    Returns:
      ``(losses (tokens,) float32, correct (tokens,) bool)``: ``logsumexp - logit of the
      target``, and whether the first largest logit is the target's. Differentiable in
      ``h`` and ``w`` through ``losses``; the backward's logit gradient is rounded to
      ``h``'s dtype before its products (as the plain head's, head_matmul.py).
    """
    check_arguments(h, w, targets, backend, config)
    cfg = config or CrossEntropyConfig()
    tokens, width = h.shape
    if tokens == 0:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), bool)
    pad_tokens = -tokens % cfg.token_multiple
    pad_width = -width % cfg.width_multiple
    pad_vocab = -w.shape[0] % cfg.vocab_multiple
    hp = jnp.pad(h, [(0, pad_tokens), (0, pad_width)])
    wp = jnp.pad(w, [(0, pad_vocab), (0, pad_width)])
    tp = jnp.pad(targets.astype(jnp.int32), [(0, pad_tokens)], constant_values=-1)
    losses, correct = _fused(hp, wp, tp, _Static(w.shape[0], cfg, backend == "interpret"))
    return losses[:tokens], correct[:tokens]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _fused(h, w, targets, static: _Static):
    return _fused_fwd(h, w, targets, static)[0]


def _outputs(targets, lse, target_logit, best):
    valid = targets >= 0
    return jnp.where(valid, lse - target_logit, 0.0), valid & (best == targets)


def _fused_fwd(h, w, targets, static: _Static):
    lse, target_logit, best = kernels.forward(h, w, targets, **static.kwargs)
    return _outputs(targets, lse, target_logit, best), (h, w, targets, lse)


def _fused_bwd(static: _Static, residuals, cotangents):
    h, w, targets, lse = residuals
    dloss = jnp.where(targets >= 0, cotangents[0], 0.0).astype(jnp.float32)
    if static.cfg.xla_grads_tokens is not None:
        dh, dw = xla_grads.grads(h, w, targets, lse, dloss, vocab=static.vocab,
                                 chunk=static.cfg.xla_grads_tokens)
    else:
        dh = kernels.grad_hidden(h, w, targets, lse, dloss, **static.kwargs)
        dw = kernels.grad_weight(h, w, targets, lse, dloss, **static.kwargs)
    return dh.astype(h.dtype), dw.astype(w.dtype), None


_fused.defvjp(_fused_fwd, _fused_bwd)
