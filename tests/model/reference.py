"""A float64 NumPy reference of the TNL / softmax / hybrid / llama language model, written
from DESIGN.md's formulas (quadratic attention with an explicit decay mask), for the
model tests. ``layer_weights(model, l)`` reads layer ``l``'s weights out of the stacks."""
from __future__ import annotations

import numpy as np

from tnl_jax.model.decay import layer_decays


def srms(x):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)


def silu(x):
    return x / (1 + np.exp(-x))


def layer_weights(model, layer: int) -> dict[str, np.ndarray]:
    for (kind, start, stop), stack in zip(model.runs, model.stacks):
        if start <= layer < stop:
            mixer = stack.layers.token_mixer
            pick = lambda p: np.asarray(p[...][layer - start], np.float64)
            out = {"kind": kind, "l1": pick(stack.layers.channel_mixer.l1),
                   "l2": pick(stack.layers.channel_mixer.l2), "l3": pick(stack.layers.channel_mixer.l3),
                   "out": pick(mixer.out_proj)}
            layers = stack.layers
            if model.cfg.llama_style:  # Gains of the norms, SwiGLU.
                out["gains"] = [pick(layers.token_norm.scale), pick(layers.channel_norm.scale)]
                out["qk_gains"] = [pick(mixer.q_norm.scale), pick(mixer.k_norm.scale)]
            if kind == "softmax":
                out["qkv"] = pick(mixer.qkv_proj)
            else:
                out["qkvu"] = pick(mixer.qkvu_proj)
                if kind == "lrpe":
                    out["theta"] = pick(mixer.lrpe.theta)
            return out
    raise IndexError(layer)


def linear_mixer(x, w, decay, segments, positions, heads):
    B, T, d = x.shape
    q, k, v, u = (x @ w["qkvu"][:, i] for i in range(4))
    split = lambda t: t.reshape(B, T, heads, -1)
    q, k, v = split(silu(q)), split(silu(k)), split(v)
    if "theta" in w:
        angle = positions[:, :, None, None] * w["theta"][:, 0][None, None]
        q = np.concatenate([q * np.cos(angle), q * np.sin(angle)], -1)
        k = np.concatenate([k * np.cos(angle), k * np.sin(angle)], -1)
    t = np.arange(T)
    dist = t[:, None] - t[None, :]
    same = segments[:, :, None] == segments[:, None, :]
    mask = (dist >= 0)[None, None] & same[:, None]
    weights = np.exp(-decay[None, :, None, None] * np.maximum(dist, 0)) * mask
    scores = np.einsum("bthe,bshe->bhts", q, k) * weights
    o = np.einsum("bhts,bshe->bthe", scores, v).reshape(B, T, d)
    return (srms(o) * u) @ w["out"]


def rope(x, positions, theta=10000.0):
    half = x.shape[-1] // 2
    freqs = theta ** (-np.arange(half) / half)
    angle = positions[:, :, None, None] * freqs
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                           x2 * np.cos(angle) + x1 * np.sin(angle)], -1)


def softmax_mixer(x, w, segments, positions, heads, rope_theta=10000.0, logn_length=None):
    B, T, d = x.shape
    q, k, v = (x @ w["qkv"][:, i] for i in range(3))
    q, k, v = (t.reshape(B, T, heads, -1) for t in (q, k, v))
    if "qk_gains" in w:
        q, k = srms(q) * w["qk_gains"][0], srms(k) * w["qk_gains"][1]
    if rope_theta is not None:  # None: no positional encoding (NoPE).
        q, k = rope(q, positions, rope_theta), rope(k, positions, rope_theta)
    if logn_length is not None:  # Queries sharpened past the training rows.
        q = q * np.maximum(1.0, np.log(positions + 1.0) / np.log(logn_length))[:, :, None, None]
    scores = np.einsum("bthe,bshe->bhts", q, k) / np.sqrt(q.shape[-1])
    t = np.arange(T)
    mask = (t[:, None] >= t[None, :])[None, None] & (segments[:, :, None] == segments[:, None, :])[:, None]
    scores = np.where(mask, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhts,bshe->bthe", p, v).reshape(B, T, d) @ w["out"]


def reference_logits(model, ids, segments=None, positions=None):
    cfg = model.cfg
    ids = np.asarray(ids)
    B, T = ids.shape
    segments = np.zeros((B, T), int) if segments is None else np.asarray(segments)
    if positions is None:
        positions = np.zeros((B, T))
        for b in range(B):
            for t in range(1, T):
                positions[b, t] = 0 if segments[b, t] != segments[b, t - 1] else positions[b, t - 1] + 1
    positions = np.asarray(positions, np.float64)
    table = np.asarray(model.embed_tokens[...], np.float64)
    scale = 1.0 if cfg.no_scale_embedding else np.sqrt(cfg.decoder_embed_dim)
    x = table[ids] * scale
    decays = layer_decays(cfg.decoder_attention_heads, cfg.decoder_layers).astype(np.float64)
    if not cfg.use_decay:
        decays = 0 * decays
    heads = cfg.decoder_attention_heads
    for layer in range(cfg.decoder_layers):
        w = layer_weights(model, layer)
        gains = w.get("gains", [1.0, 1.0])
        h = srms(x) * gains[0]
        if w["kind"] == "softmax":
            theta = cfg.rope_theta if cfg.softmax_rope else None
            x = x + softmax_mixer(h, w, segments, positions, heads, theta,
                                  cfg.softmax_logn_length)
        else:
            x = x + linear_mixer(h, w, decays[layer], segments, positions, heads)
        h = srms(x) * gains[1]
        gate = silu(h @ w["l1"]) if cfg.llama_style else h @ w["l1"]
        x = x + (gate * (h @ w["l2"])) @ w["l3"]
    head = table.T if model.lm_head is None else np.asarray(model.lm_head[...], np.float64)
    final_gain = np.asarray(model.final_norm.scale[...], np.float64) if cfg.llama_style else 1.0
    return (srms(x) * final_gain) @ head
