"""The language model: embedding (× √d unless ``no_scale_embedding``), decoder
layers, final SRMSNorm, head (tied to the embedding unless ``tie_word_embeddings``
is false). One class serves TNL, the softmax baseline and the hybrid: the layers are
grouped into runs of one kind (``ModelConfig.layer_kinds``), each run a stack whose
parameters carry a leading ``'layers'`` axis, created with ``nnx.vmap`` and run with
``nnx.scan`` (optionally rematerialised), so compile time does not grow with depth.
Published TNL: a run of one LRPE layer (layer 0), then a run of ``L − 1`` layers.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnl_jax.config import ModelConfig
from tnl_jax.decay import layer_decays
from tnl_jax.decoder_layer import DecoderLayer
from tnl_jax.norms import SRMSNorm
from tnl_jax.params import create_param, normal

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "checkpoint_dots": jax.checkpoint_policies.checkpoint_dots,
    "checkpoint_dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def layer_runs(kinds: list[str]) -> list[tuple[str, int, int]]:
    """Consecutive layers of one kind as ``(kind, start, stop)``."""
    runs: list[tuple[str, int, int]] = []
    for index, kind in enumerate(kinds):
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1], index + 1)
        else:
            runs.append((kind, index, index + 1))
    return runs


def fixed_decays(cfg: ModelConfig) -> np.ndarray:
    """``(L, H)`` float32 decay of every layer (zeros when ``use_decay`` is off)."""
    decays = layer_decays(cfg.decoder_attention_heads, cfg.decoder_layers)
    return decays if cfg.use_decay else np.zeros_like(decays)


def positions_in_segments(segment_ids: jax.Array) -> jax.Array:
    """Position of each token inside its contiguous run of ``segment_ids``."""
    seq = segment_ids.shape[1]
    index = jnp.arange(seq, dtype=jnp.int32)[None]
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                              segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    run_start = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return index - run_start


class LayerStack(nnx.Module):
    """``n`` identical layers with parameters stacked on a leading ``'layers'`` axis."""

    def __init__(self, cfg: ModelConfig, kind: str, decay_init: np.ndarray, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=len(decay_init))
        @nnx.vmap(in_axes=(0, 0), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def create(rngs: nnx.Rngs, decay: jax.Array) -> DecoderLayer:
            return DecoderLayer(cfg, kind, decay, rngs)

        self.layers = create(rngs, jnp.asarray(decay_init))
        self.remat = cfg.remat

    def __call__(self, x, decays, segment_ids, positions):
        def body(layer: DecoderLayer, x, decay):
            return layer(x, decay, segment_ids, positions)

        if self.remat != "none":
            body = nnx.remat(body, policy=REMAT_POLICIES[self.remat])
        return nnx.scan(body, in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry)(self.layers, x, decays)

    def prefill(self, x, decays, segment_ids, positions, cache_size: int):
        def body(layer: DecoderLayer, x, decay):
            return layer(x, decay, segment_ids, positions, cache_size=cache_size)

        return nnx.scan(body, in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry, 0))(
            self.layers, x, decays)

    def step(self, x, decays, positions, cache, index, kv_valid):
        def body(layer: DecoderLayer, x, decay, layer_cache):
            return layer.step(x, decay, positions, layer_cache, index, kv_valid)

        return nnx.scan(body, in_axes=(0, nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))(
            self.layers, x, decays, cache)


class LanguageModel(nnx.Module):
    """``model(input_ids, segment_ids=None, positions=None) -> logits (B, T, V)`` float32.

    ``segment_ids (B, T)`` separates packed documents (attention and state never
    cross a change of id); ``positions (B, T)`` (LRPE / RoPE) default to the position
    inside each segment.
    """

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        d, vocab, dtype = cfg.decoder_embed_dim, cfg.vocab_size, cfg.weight_dtype
        pad = cfg.pad_token_id

        def embed_init(key, shape, dt):
            table = normal(cfg.init_std)(key, shape, dt)
            return table.at[pad].set(0) if 0 <= pad < vocab else table

        self.embed_tokens = create_param(rngs.params(), (vocab, d), ("vocab", "embed"), dtype,
                                         embed_init)
        decays = fixed_decays(cfg)
        self.runs = tuple(layer_runs(cfg.layer_kinds()))
        self.stacks = nnx.List([LayerStack(cfg, kind, decays[start:stop], rngs)
                                for kind, start, stop in self.runs])
        self.final_norm = SRMSNorm()
        self.lm_head = None if cfg.tie_word_embeddings else create_param(
            rngs.params(), (d, vocab), ("embed", "vocab"), dtype, normal(cfg.init_std))
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(d)

    def _run_decays(self) -> list[jax.Array]:
        decays = fixed_decays(self.cfg)
        return [jnp.asarray(decays[start:stop]) for _, start, stop in self.runs]

    def embed(self, input_ids: jax.Array) -> jax.Array:
        table = self.embed_tokens[...]
        return jnp.take(table, input_ids, axis=0).astype(self.cfg.compute_dtype) * self.embed_scale

    def logits(self, x: jax.Array) -> jax.Array:
        """Final norm and head; float32 logits."""
        x = self.final_norm(x)
        dtype = self.cfg.compute_dtype
        if self.lm_head is None:
            return jnp.einsum("...d,vd->...v", x, self.embed_tokens[...].astype(dtype),
                              preferred_element_type=jnp.float32)
        return jnp.einsum("...d,dv->...v", x, self.lm_head[...].astype(dtype),
                          preferred_element_type=jnp.float32)

    def _inputs(self, input_ids, segment_ids, positions):
        if positions is None:
            if segment_ids is None:
                positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
            else:
                positions = positions_in_segments(segment_ids)
        return self.embed(input_ids), positions

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        x, positions = self._inputs(input_ids, segment_ids, positions)
        for stack, decays in zip(self.stacks, self._run_decays()):
            x = stack(x, decays, segment_ids, positions)
        return self.logits(x)

    def prefill(self, input_ids: jax.Array, segment_ids: jax.Array | None,
                positions: jax.Array | None, cache_size: int):
        """The forward pass for decoding: the last position's logits ``(B, V)`` (the
        full ``(B, T, V)`` would not fit at long context) and every layer's decode
        cache (one entry per stack, stacked over its layers): linear layers' final
        states ``(n, B, H, dk, e)`` float32, softmax layers' key/value caches
        ``(n, B, cache_size, H, e)``."""
        x, positions = self._inputs(input_ids, segment_ids, positions)
        caches = []
        for stack, decays in zip(self.stacks, self._run_decays()):
            x, cache = stack.prefill(x, decays, segment_ids, positions, cache_size)
            caches.append(cache)
        return self.logits(x[:, -1]), caches

    def decode_step(self, token_ids: jax.Array, positions: jax.Array, caches: list,
                    index: jax.Array, kv_valid: jax.Array):
        """One token per row: token_ids and positions ``(B,)``; ``index`` is the cache
        slot this token takes, ``kv_valid (B, cache_size)`` the slots it may attend to
        (softmax layers only). Returns ``(logits (B, V), caches)``."""
        x = self.embed(token_ids)
        new_caches = []
        for stack, decays, cache in zip(self.stacks, self._run_decays(), caches):
            x, cache = stack.step(x, decays, positions, cache, index, kv_valid)
            new_caches.append(cache)
        return self.logits(x), new_caches


def create_model(cfg: ModelConfig, rngs: nnx.Rngs) -> LanguageModel:
    """TNL, softmax or hybrid, as ``cfg.architecture`` says."""
    return LanguageModel(cfg, rngs)


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
