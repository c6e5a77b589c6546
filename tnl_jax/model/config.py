"""The model configuration: field names follow the published TransNormerLLM
``config.json`` (so a Hugging Face config loads as is), plus the fields this codebase
adds (backend, dtypes, architecture, remat, ``projection_dtype``: ``"fp8"`` runs the
layers' projections in fp8 with delayed scaling, ``model/fp8.py``). The preset files (``tnl_jax/presets``)
keep these fields under a top-level ``model:`` mapping."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from tnl_jax import presets
from tnl_jax.config_keys import unknown_key_error
from tnl_jax.model import config_checks


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A TNL (or baseline) language model.

    The first block mirrors ``TransnormerConfig``; ``linear_use_lrpe_list=None`` means
    the published choice, LRPE on layer 0 only; ``hidden_dim=None`` and
    ``glu_dim=-1`` mean ``decoder_embed_dim``; ``linear_act_fun="swish"`` is stored as
    ``"silu"`` (the same function). Every field is range-checked on construction
    (``config_checks``): one ``ValueError`` lists every problem.
    """
    vocab_size: int = 384
    decoder_embed_dim: int = 256
    decoder_layers: int = 4
    decoder_attention_heads: int = 4
    hidden_dim: int | None = None
    glu_dim: int = 704
    linear_use_lrpe_list: tuple[int, ...] | None = None
    linear_act_fun: str = "silu"
    norm_type: str = "simplermsnorm"
    no_scale_embedding: bool = False
    bias: bool = False
    init_std: float = 0.02
    pad_token_id: int | None = 256
    bos_token_id: int | None = 257
    eos_token_id: int | None = 258
    # Ours.
    architecture: str = "tnl"
    softmax_every: int = 8
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    use_decay: bool = True
    decay_learnable: bool = False
    attention_backend: str | None = None
    chunk_size: int | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    projection_dtype: str | None = None

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

    def layer_kinds(self) -> list[str]:
        """Per layer: ``'lrpe'`` (linear attention with LRPE), ``'linear'`` or
        ``'softmax'``. Hybrid: layer ``l`` is softmax when ``(l + 1) % softmax_every
        == 0`` (with 8: seven lightning layers, then one softmax layer)."""
        n = self.decoder_layers
        lrpe = self.linear_use_lrpe_list
        if lrpe is None:
            lrpe = (1,) + (0,) * (n - 1)
        elif not lrpe:
            lrpe = (0,) * n
        kinds = []
        for layer in range(n):
            softmax = (self.architecture == "softmax" or
                       (self.architecture == "hybrid" and (layer + 1) % self.softmax_every == 0))
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
