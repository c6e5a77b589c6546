"""FLA 0.6.0's models at one of our presets' shape, in pure Python (neither torch nor
jax): what ``fla_anchor_torch.py`` builds and what ``train_bench --anchor fla`` counts.

TNL's layer maps onto FLA's ``RetNetForCausalLM``: retention is the same op family
(a fixed per-head decay, chunked), and with ``expand_k = expand_v = 1`` and the output
gate on, its q, k, v, gate and output projections are TNL's five ``d x d`` products;
its gated MLP (``fuse_swiglu``) has TNL's three ``d x glu`` products. Our softmax
layer maps onto ``TransformerForCausalLM`` (four ``d x d`` products, the same MLP).
Both tie the head to the embedding as our presets do. What differs (RetNet's xPos
rotary and swish gate against TNL's LRPE on layer 0 and SRMSNorm; RMSNorm weights)
costs no matrix product. Each FLA row's MFU uses the FLOP count of the matching
architecture of ours (``FLOP_ARCH``), so all rows share one count.
"""
from __future__ import annotations

import dataclasses

FLA_MODELS = ("retnet", "transformer")
# The architecture of ours whose FLOP count (tnl_jax.model.counting) an FLA model's rows use.
FLOP_ARCH = {"retnet": "tnl", "transformer": "softmax"}
ANCHOR_OF_ARCH = {arch: model for model, arch in FLOP_ARCH.items()}
LOSSES = ("fused_linear", "fused", "plain")


@dataclasses.dataclass(frozen=True)
class Shape:
    """Width, depth, heads, MLP width and vocabulary of a preset (``ModelConfig``'s
    ``decoder_embed_dim, decoder_layers, decoder_attention_heads, glu_dim, vocab_size``)."""
    hidden: int
    layers: int
    heads: int
    mlp: int
    vocab: int
    tied: bool = True

    def as_args(self) -> list[str]:
        """The shape as ``fla_anchor_torch.py``'s command-line arguments."""
        args = [f"--{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                if f.name != "tied"]
        return args if self.tied else [*args, "--untied"]


def fla_config(model: str, shape: Shape, rows: int, loss: str = "fused_linear") -> dict:
    """Keyword arguments of FLA's ``RetNetConfig`` (``model="retnet"``) or
    ``TransformerConfig`` (``"transformer"``) at ``shape``, for rows of ``rows`` tokens,
    with FLA's fused modules: fused RMSNorm, fused swiglu and the loss ``loss``
    (``fused_linear``: the fused linear cross-entropy, no logits array; ``fused``: FLA's
    fused cross-entropy on the logits; ``plain``: torch's)."""
    if model not in FLA_MODELS:
        raise ValueError(f"model={model!r}: expected one of {FLA_MODELS}")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}: expected one of {LOSSES}")
    if shape.hidden % shape.heads:
        raise ValueError(f"hidden={shape.hidden} is not divisible by heads={shape.heads}")
    common = dict(
        hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_heads=shape.heads,
        intermediate_size=shape.mlp, hidden_act="swish", vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied, max_position_embeddings=rows, fuse_norm=True,
        fuse_swiglu=True, fuse_cross_entropy=loss == "fused",
        fuse_linear_cross_entropy=loss == "fused_linear", use_cache=False)
    if model == "retnet":
        return {**common, "attn_mode": "chunk", "expand_k": 1.0, "expand_v": 1.0,
                "use_output_gate": True, "use_short_conv": False, "feature_map": None}
    return {**common, "num_kv_heads": None, "qkv_bias": False, "qk_norm": False,
            "window_size": None}


def matrix_params(model: str, config: dict) -> int:
    """Weights of the matrix products that ``config`` (``fla_config``'s) gives FLA's
    ``model``: embedding, the layers' projections and MLP, and an untied head; norms not
    counted. Read from the config's keys as FLA's layers read them."""
    d, m, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    if model == "retnet":
        key, value = round(d * config["expand_k"]), round(d * config["expand_v"])
        gate = value if config["use_output_gate"] else 0
        attention = d * (2 * key + value + gate) + value * d  # q, k, v, g and o
    else:
        attention = 4 * d * d  # q, k, v and o (no grouped heads)
    embeddings = config["vocab_size"] * d * (1 if config["tie_word_embeddings"] else 2)
    return embeddings + layers * (attention + 3 * d * m)
