"""The memory floor of one decode step: the bytes it cannot avoid moving, over the
device's memory bandwidth. Decode at small batch is bound by memory, not FLOPs, so
``measured time / floor`` says how far a step is from the best any kernel could do.

Bytes per step (one new token per row):

- every weight once, in its stored dtype (a tied embedding once: the head reads all of
  it, the lookup only ``B`` rows);
- linear (TNL) layers: each row's ``(H, dk, e)`` float32 state read and written
  (``dk = 2e`` with LRPE, TNL's first layer);
- softmax layers: each row's keys and values at ``context`` read, in the compute dtype
  (the one new slot written is left out: ``1 / context`` of the read).

Activations, logits and the sampled tokens are ``O(B · (d + V))``: left out too.
"""
from __future__ import annotations

import jax.numpy as jnp

from tnl_jax import ModelConfig
from tnl_jax.model.counting import count_params
from tnl_jax.training.metrics import device_peaks


def spec_tbps(device_kind: str) -> float | None:
    """The data-sheet memory bandwidth of a ``device_kind`` (tnl_jax's one table of
    device peaks, ``metrics.DEVICE_PEAKS``), or None for a kind not in it."""
    peaks = device_peaks(device_kind)
    return None if peaks is None else peaks.memory_tbps


def weight_bytes(cfg: ModelConfig) -> int:
    """Every parameter once, in ``param_dtype``."""
    return count_params(cfg) * jnp.dtype(cfg.param_dtype).itemsize


def state_bytes(cfg: ModelConfig, batch: int, context: int) -> int:
    """Per step: linear layers' float32 states read + written, softmax layers' key/value
    cache at ``context`` read."""
    heads, e = cfg.decoder_attention_heads, cfg.head_dim
    total = 0
    for kind in cfg.layer_kinds():
        if kind == "softmax":
            total += batch * context * heads * 2 * e * jnp.dtype(cfg.dtype).itemsize
        else:
            dk = 2 * e if kind == "lrpe" else e
            total += 2 * batch * heads * dk * e * 4
    return total


def decode_bytes(cfg: ModelConfig, batch: int, context: int) -> int:
    """Bytes one decode step of ``batch`` rows at ``context`` must move."""
    return weight_bytes(cfg) + state_bytes(cfg, batch, context)


def floor_ms(bytes_moved: int, tbps: float) -> float:
    """Milliseconds to move ``bytes_moved`` at ``tbps`` terabytes per second."""
    return bytes_moved / (tbps * 1e12) * 1e3
