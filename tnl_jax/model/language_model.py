"""The language model: embedding (× √d unless ``no_scale_embedding``), decoder
layers, final norm (SRMSNorm; RMSNorm for llama), head (tied to the embedding unless ``tie_word_embeddings``
is false). One class serves TNL, the softmax baseline and the hybrid: the layers are
grouped into runs of one kind (``ModelConfig.layer_kinds``), each run a stack whose
parameters carry a leading ``'layers'`` axis, created with ``nnx.vmap`` and run with
``nnx.scan`` (optionally rematerialised per layer: ``remat.py``), so compile time
does not grow with depth (``scan_unroll`` inlines layers instead). Each layer's fixed
decay rates are stacked the same way (a ``FixedDecay`` variable per layer, different in
every layer). Published TNL: a run of one LRPE layer (layer 0), then a run of ``L − 1``
layers.

``ModelConfig`` is read here only: the blocks themselves take plain keyword arguments.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnl_jax.model.call_checks import check_call_arguments
from tnl_jax.model.config import ModelConfig
from tnl_jax.model.decay import layer_decays
from tnl_jax.model.decoder_layer import DecoderLayer
from tnl_jax.model.head_matmul import head_matmul
from tnl_jax.model.norms import make_norm
from tnl_jax.model.params import create_param, normal
from tnl_jax.model.positions import default_positions
from tnl_jax.model.remat import REMAT_POLICIES, call_after_cotangent
from tnl_jax.partitioning import ACTIVATION, constrain

# The logits (B, T, V) under a mesh: rows and sequence like the residual stream, the
# vocabulary over `tensor` like the head's weight.
LOGITS = ("batch", "seq", "vocab")


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


def layer_arguments(cfg: ModelConfig, kind: str) -> dict[str, Any]:
    """``DecoderLayer``'s keyword arguments for a layer of ``kind`` (but its decay)."""
    args = dict(num_heads=cfg.decoder_attention_heads, in_features=cfg.decoder_embed_dim,
                mlp_features=cfg.mlp_dim, init_std=cfg.init_std, dtype=cfg.compute_dtype,
                param_dtype=cfg.weight_dtype, projection_dtype=cfg.projection_dtype,
                norm_kernel=cfg.norm_kernel)
    if cfg.llama_style:
        args.update(norm_gain=True, mlp_activation="silu")
    if kind == "softmax":
        return {**args, "attention": "softmax",
                "rope_theta": cfg.rope_theta if cfg.softmax_rope else None,
                "qk_norm": cfg.qk_norm, "logn_length": cfg.softmax_logn_length}
    return {**args, "attention": "linear", "use_lrpe": kind == "lrpe",
            "learn_decay": cfg.decay_learnable, "backend": cfg.attention_backend,
            "chunk_size": cfg.chunk_size}


class LayerStack(nnx.Module):
    """``len(decays)`` identical layers with their state stacked on a leading axis
    (``'layers'`` for the parameters); ``decays (n, H)``, or ``None`` for softmax."""

    def __init__(self, layer_args: dict[str, Any], count: int, decays: np.ndarray | None,
                 remat: str, rngs: nnx.Rngs, unroll: int = 1):
        @nnx.split_rngs(splits=count)
        @nnx.vmap(in_axes=(0, 0), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def create(rngs: nnx.Rngs, decay: jax.Array | None) -> DecoderLayer:
            return DecoderLayer(**layer_args, decay=decay, rngs=rngs)

        self.layers = create(rngs, None if decays is None else jnp.asarray(decays))
        self.remat_policy = REMAT_POLICIES[remat]
        self.remat = remat != "none"
        self.unroll = min(unroll, count)
        self.count = count

    def __call__(self, x, segment_ids, positions):
        def body(layer: DecoderLayer, x):
            return layer(x, segment_ids, positions)

        if self.remat and self.unroll == self.count:
            # One iteration (a one-layer stack, like TNL's LRPE layer 0, or one unrolled
            # whole) is no loop to XLA: each layer recomputes after its cotangent.
            body = lambda layer, x: call_after_cotangent(layer, self.remat_policy, x,
                                                         segment_ids, positions)
        elif self.remat:  # Per layer: the scan's body. In a loop CSE cannot undo it.
            body = nnx.remat(body, policy=self.remat_policy, prevent_cse=False)
        return nnx.scan(body, in_axes=(0, nnx.Carry), out_axes=nnx.Carry,
                        unroll=self.unroll)(self.layers, x)

    def prefill(self, x, segment_ids, positions, cache_size: int):
        def body(layer: DecoderLayer, x):
            return layer(x, segment_ids, positions, cache_size=cache_size)

        return nnx.scan(body, in_axes=(0, nnx.Carry), out_axes=(nnx.Carry, 0))(self.layers, x)

    def step(self, x, positions, cache, index, kv_valid):
        def body(layer: DecoderLayer, x, layer_cache):
            return layer.step(x, layer_cache, positions, index=index, kv_valid=kv_valid)

        return nnx.scan(body, in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry, 0))(
            self.layers, x, cache)


class LanguageModel(nnx.Module):
    """``model(input_ids, segment_ids=None, positions=None) -> logits (B, T, V)`` float32.

    ``segment_ids (B, T)`` separates packed documents (attention and state never
    cross a change of id); ``positions (B, T)`` (LRPE / RoPE) default to the position
    inside each segment. Positions and segment ids stay global ``(B, T)`` arrays, so
    they are right however a mesh (``jax.set_mesh``) splits the rows and the sequence;
    under one the activations are split by ``tnl_jax.partitioning``'s rules.
    Bad arguments are named while tracing (call_checks.py): ``input_ids`` must be a
    ``(B, T)`` integer array, its ids in ``[0, vocab_size)`` (checked when concrete),
    ``segment_ids`` and ``positions`` integer arrays of its shape.
    ``hidden_states`` and ``logits`` are its two halves (the training loss calls them
    apart, to make the logits a chunk of tokens at a time).
    """

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        d, vocab, dtype = cfg.decoder_embed_dim, cfg.vocab_size, cfg.weight_dtype
        pad = cfg.pad_token_id

        def embed_init(key, shape, dt):
            table = normal(cfg.init_std)(key, shape, dt)
            return table if pad is None else table.at[pad].set(0)  # In range: config_checks.

        self.embed_tokens = create_param(rngs.params(), (vocab, d), ("vocab", "embed"), dtype,
                                         embed_init)
        decays = fixed_decays(cfg)
        self.runs = tuple(layer_runs(cfg.layer_kinds()))
        self.stacks = nnx.List([
            LayerStack(layer_arguments(cfg, kind), stop - start,
                       None if kind == "softmax" else decays[start:stop], cfg.remat, rngs,
                       cfg.scan_unroll)
            for kind, start, stop in self.runs])
        self.final_norm = make_norm(cfg.llama_style, d, param_dtype=dtype,
                                    kernel=cfg.norm_kernel, rngs=rngs)
        self.lm_head = None if cfg.tie_word_embeddings else create_param(
            rngs.params(), (d, vocab), ("embed", "vocab"), dtype, normal(cfg.init_std))
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(d)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        # Under a mesh the table's `embed` split (FSDP) is gathered first, as for any
        # weight: else the lookup's rows come out split over the width, and moving
        # them to the rows' split costs a full rematerialization.
        table = constrain(self.embed_tokens[...], ("vocab", None))
        return jnp.take(table, input_ids, axis=0).astype(self.cfg.compute_dtype) * self.embed_scale

    def head_weight(self) -> jax.Array:
        """The output projection as ``(V, d)`` in the parameters' dtype: the embedding
        when tied; an untied head's ``(d, V)`` weight transposed."""
        return self.embed_tokens[...] if self.lm_head is None else self.lm_head[...].T

    def head_input(self, x: jax.Array) -> jax.Array:
        """The final norm of ``x (..., d)`` in the compute dtype: the head's input."""
        return self.final_norm(x).astype(self.cfg.compute_dtype)

    def head_operands(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The head's two operands in the compute dtype: ``head_input(x)`` and
        ``head_weight()``. The fused loss takes them as they are."""
        return self.head_input(x), self.head_weight().astype(self.cfg.compute_dtype)

    def logits(self, x: jax.Array) -> jax.Array:
        """The head: final norm, then the output projection (the embedding when tied);
        float32 logits. ``x (..., d)``: ``hidden_states``'s, a chunk of its tokens (how
        the training loss avoids holding every token's logits) or one position's;
        ``(B, T, d)`` gives ``(B, T, V)``, split as ``LOGITS`` under a mesh."""
        out = head_matmul("...d,vd->...v", *self.head_operands(x))
        return constrain(out, LOGITS) if out.ndim == len(LOGITS) else out

    def _inputs(self, input_ids, segment_ids, positions):
        check_call_arguments(input_ids, segment_ids, positions, self.cfg.vocab_size)
        if positions is None:
            positions = default_positions(*input_ids.shape, segment_ids)
        return constrain(self.embed(input_ids), ACTIVATION), positions

    def hidden_states(self, input_ids: jax.Array, segment_ids: jax.Array | None = None,
                      positions: jax.Array | None = None) -> jax.Array:
        """The last layer's output ``(B, T, d)`` in the compute dtype, before the final
        norm and head (``logits``): the training loss makes logits from it a chunk of
        tokens at a time. Arguments as for ``__call__``."""
        x, positions = self._inputs(input_ids, segment_ids, positions)
        for stack in self.stacks:
            x = stack(x, segment_ids, positions)
        return x

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        return self.logits(self.hidden_states(input_ids, segment_ids, positions))

    def prefill(self, input_ids: jax.Array, segment_ids: jax.Array | None,
                positions: jax.Array | None, cache_size: int):
        """The forward pass for decoding: the last position's logits ``(B, V)`` (the
        full ``(B, T, V)`` would not fit at long context) and every layer's decode
        cache (one entry per stack, stacked over its layers): linear layers' final
        states ``(n, B, H, dk, e)`` float32, softmax layers' key/value caches
        ``(n, B, cache_size, H, e)``."""
        x, positions = self._inputs(input_ids, segment_ids, positions)
        caches = []
        for stack in self.stacks:
            x, cache = stack.prefill(x, segment_ids, positions, cache_size)
            caches.append(cache)
        return self.logits(x[:, -1]), caches

    def decode_step(self, token_ids: jax.Array, positions: jax.Array, caches: list,
                    index: jax.Array, kv_valid: jax.Array):
        """One token per row: token_ids and positions ``(B,)``; ``index`` is the cache
        slot this token takes, ``kv_valid (B, cache_size)`` the slots it may attend to
        (softmax layers only). Returns ``(logits (B, V), caches)``."""
        x = self.embed(token_ids)
        new_caches = []
        for stack, cache in zip(self.stacks, caches):
            x, cache = stack.step(x, positions, cache, index, kv_valid)
            new_caches.append(cache)
        return self.logits(x), new_caches


def create_model(cfg: ModelConfig, rngs: nnx.Rngs) -> LanguageModel:
    """TNL, softmax (TNL's backbone), hybrid or llama, as ``cfg.architecture`` says."""
    return LanguageModel(cfg, rngs)


def model_with_params(cfg: ModelConfig, params: dict) -> LanguageModel:
    """A model of ``cfg`` holding the arrays ``params`` (the ``nnx.to_pure_dict`` tree of
    its ``nnx.Param`` state). No random init is spent: the parameters are only traced,
    and the other state (each layer's fixed decay) is computed from ``cfg``."""
    def split():
        return nnx.split(create_model(cfg, nnx.Rngs(0)), nnx.Param, ...)

    graphdef, param_state, _ = nnx.split(nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0))),
                                         nnx.Param, ...)
    rest = jax.jit(lambda: split()[2])()  # The unused random parameters are compiled away.
    nnx.replace_by_pure_dict(param_state, params)
    return nnx.merge(graphdef, param_state, rest)
