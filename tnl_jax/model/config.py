"""The model configuration: field names follow the published TransNormerLLM
``config.json`` (so a Hugging Face config loads as is), plus the fields this codebase
adds (backend, dtypes, architecture, remat, fp8 projections). The preset files
(``tnl_jax/presets``) keep these fields under a top-level ``model:`` mapping."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from tnl_jax import presets
from tnl_jax.config_help import described
from tnl_jax.config_keys import unknown_key_error
from tnl_jax.model import config_checks

# Keys of earlier versions that chose only how a step ran, not the parameters (each
# measured slower on an H100 and removed, docs/DESIGN.md): a config saved with them (a
# run directory, a converted checkpoint) still loads, without them.
RETIRED_KEYS = ("layer_loop", "mlp_product")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A TNL (or baseline) language model.

    The first block mirrors ``TransnormerConfig``; ``linear_use_lrpe_list=None`` means
    the published choice, LRPE on layer 0 only; ``hidden_dim=None`` and
    ``glu_dim=-1`` mean ``decoder_embed_dim``; ``linear_act_fun="swish"`` is stored as
    ``"silu"`` (the same function). Every field is range-checked on construction
    (``config_checks``): one ``ValueError`` lists every problem.
    """
    vocab_size: int = described(384, "token ids the model embeds and predicts (>= the "
                                     "tokenizer's ids)")
    decoder_embed_dim: int = described(256, "model width")
    decoder_layers: int = described(4, "layers")
    decoder_attention_heads: int = described(4, "attention heads per layer (each of width "
                                                "decoder_embed_dim / heads)")
    hidden_dim: int | None = described(None, "published config's name of the width; null: "
                                             "decoder_embed_dim")
    glu_dim: int = described(704, "hidden width of each layer's gated linear unit (-1: "
                                  "decoder_embed_dim)")
    linear_use_lrpe_list: tuple[int, ...] | None = described(
        None, "per layer, 1 for linearized relative positional encoding (LRPE); null: layer 0 "
              "only, as published")
    linear_act_fun: str = described("silu", "activation of queries and keys")
    norm_type: str = described("simplermsnorm", "normalization of each layer")
    no_scale_embedding: bool = described(False, "true: do not scale the token embeddings by "
                                                "sqrt(decoder_embed_dim)")
    bias: bool = described(False, "biases in the projections")
    init_std: float = described(0.02, "standard deviation of the initial weights")
    pad_token_id: int | None = described(256, "padding id (its embedding is zero); null: none")
    bos_token_id: int | None = described(257, "id put before a prompt; null: none")
    eos_token_id: int | None = described(258, "id that ends a document and stops generation; "
                                              "null: none")
    # Ours.
    architecture: str = described("tnl", "tnl (lightning attention), softmax (TNL's backbone "
                                          "with softmax attention), hybrid (a softmax layer in "
                                          "every softmax_every) or llama (a LLaMA-style "
                                          "baseline)")
    softmax_every: int = described(8, "hybrid: layers per group, one of them softmax attention")
    softmax_offset: int = described(-1, "hybrid: the softmax layer's place in each group of "
                                        "softmax_every (-1: the last, 0: the first)")
    rope_theta: float = described(10000.0, "rotary position base of the softmax layers")
    softmax_rope: bool = described(True, "RoPE in the softmax layers; false: none (NoPE), "
                                         "position from the lightning layers before them")
    softmax_logn_length: int | None = described(
        None, "scale each softmax query at position p (from 0, in its document) by "
              "max(1, log(p + 1) / log(L)), L this value (the training rows), so that the "
              "attention need not flatten past L (logn attention); null: off")
    softmax_qk_norm: bool | None = described(
        None, "RMS-normalise the softmax layers' queries and keys (with a gain); null: the "
              "architecture's own (llama yes; softmax and hybrid no, TNL's backbone)")
    tie_word_embeddings: bool = described(True, "the output projection is the embedding "
                                                "matrix")
    use_decay: bool = described(True, "per-head exponential decay in lightning attention")
    decay_learnable: bool = described(False, "the decays are trained parameters, not fixed")
    attention_backend: str | None = described(
        None, "lightning attention's implementation: pallas (GPU kernels), interpret (their "
              "CPU interpreter, for tests) or xla; null: pallas on GPU, xla elsewhere")
    chunk_size: int | None = described(None, "tokens per block of lightning attention; null: "
                                             "the op's choice")
    dtype: str = described("float32", "compute dtype of activations")
    param_dtype: str = described("float32", "dtype of the stored weights")
    remat: str = described("none", "what the backward recomputes instead of storing "
                                   "(tnl_jax/model/remat.py)")
    scan_unroll: int = described(1, "layers per iteration of each layer stack's scan: 1 a "
                                    "loop over the layers; a stack's layer count or more "
                                    "inlines every layer (same results)")
    projection_dtype: str | None = described(
        None, "fp8: the layers' projections in fp8 with delayed scaling (tnl_jax/model/fp8.py; "
              "XLA's autotuning makes an H100 compile it in ~4 min: keep it with "
              "JAX_COMPILATION_CACHE_DIR); null: in dtype")
    norm_kernel: str = described(
        "xla", "how SRMSNorm runs (pre-norms, final norm, the token mixer's output norm "
               "with its gate): xla, or pallas (fused kernels, pallas_kernels/norms: 2 "
               "passes forward, 3 backward; no faster a step on an H100 at tnl-385m; a "
               "power-of-two decoder_embed_dim, one device, not llama; interpreted off GPU)")

    @staticmethod
    def field_problems(fields: dict[str, Any]) -> list[str]:
        """Every problem of these field values, each ``key=value: expected ...``."""
        return config_checks.problems(fields)

    def __post_init__(self) -> None:
        found = config_checks.problems(vars(self))
        if found:
            raise ValueError("ModelConfig: " + "; ".join(found))
        if self.linear_use_lrpe_list is not None:
            object.__setattr__(self, "linear_use_lrpe_list",
                               tuple(int(x) for x in self.linear_use_lrpe_list))
        if self.linear_act_fun == "swish":  # The published code's other name of silu.
            object.__setattr__(self, "linear_act_fun", "silu")

    @property
    def head_dim(self) -> int:
        return self.decoder_embed_dim // self.decoder_attention_heads

    @property
    def mlp_dim(self) -> int:
        return self.decoder_embed_dim if self.glu_dim == -1 else self.glu_dim

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    @property
    def llama_style(self) -> bool:
        """The LLaMA-style baseline: RMSNorm with a gain (pre-norms and the final norm),
        a SwiGLU MLP and RMS-normalised queries and keys, around RoPE softmax attention;
        ``softmax`` is TNL's backbone (SRMSNorm, SGLU) with a softmax token mixer."""
        return self.architecture == "llama"

    @property
    def qk_norm(self) -> bool:
        """Whether the softmax layers normalise queries and keys (``softmax_qk_norm``, or
        the architecture's own: the LLaMA-style baseline's)."""
        return self.llama_style if self.softmax_qk_norm is None else self.softmax_qk_norm

    def layer_kinds(self) -> list[str]:
        """Per layer: ``'lrpe'`` (linear attention with LRPE), ``'linear'`` or
        ``'softmax'``. Hybrid: layer ``l`` is softmax when ``l % softmax_every ==
        softmax_offset % softmax_every`` (the default offset -1, with 8: seven lightning
        layers, then one softmax layer; offset 0 puts the softmax layer first). ``llama``:
        every layer softmax (with ``llama_style``'s norms, MLP and QK norm)."""
        n = self.decoder_layers
        lrpe = self.linear_use_lrpe_list
        if lrpe is None:
            lrpe = (1,) + (0,) * (n - 1)
        elif not lrpe:
            lrpe = (0,) * n
        kinds = []
        for layer in range(n):
            every = self.softmax_every
            softmax = (self.architecture in ("softmax", "llama") or
                       (self.architecture == "hybrid" and
                        layer % every == self.softmax_offset % every))
            kinds.append("softmax" if softmax else ("lrpe" if lrpe[layer] else "linear"))
        return kinds

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> "ModelConfig":
        """Builds a config; an unknown key raises ``ValueError`` naming the nearest
        valid one. ``ignore`` lists keys to skip (e.g. Hugging Face bookkeeping)."""
        if not isinstance(values, dict):
            raise ValueError(f"a model config must be a mapping of keys (like "
                             f"'vocab_size: 64000'), got a {type(values).__name__}: "
                             f"{str(values)[:60]!r}")
        valid = cls.field_names()
        for key in values:
            if key not in valid and key not in ignore:
                raise unknown_key_error(key, valid, "model config")
        return cls(**{k: v for k, v in values.items() if k in valid})

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> "ModelConfig":
        """``from_dict`` of a config this library saved (a run directory, a converted
        checkpoint): keys of earlier versions in ``RETIRED_KEYS`` are dropped."""
        return cls.from_dict(values, ignore=RETIRED_KEYS)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["linear_use_lrpe_list"] is not None:
            out["linear_use_lrpe_list"] = list(out["linear_use_lrpe_list"])
        return out

    def replace(self, **changes: Any) -> "ModelConfig":
        return self.from_dict({**self.to_dict(), **changes})


def load_model_config(preset: str | Path) -> ModelConfig:
    """The ``model:`` mapping of a preset, by name (``"tnl-1b"``) or YAML path (other
    top-level keys belong to training and are left alone); every problem of the file
    is a ``ValueError`` naming it."""
    path, document = presets.read(preset)
    if "model" not in document:
        raise ValueError(f"config file {str(path)!r}: no top-level 'model:' mapping")
    try:
        return ModelConfig.from_dict(document["model"] or {})
    except ValueError as error:
        raise ValueError(f"config file {str(path)!r}: {error}") from None
