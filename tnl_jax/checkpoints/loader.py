"""One loader for every directory this package writes or reads:

* a training ``run_dir`` (``checkpoints/``): the newest checkpoint's parameters, the
  saved model config, the tokenizer the run used;
* a converted directory (``model_config.json``, ``tnl-convert``'s output);
* a Hugging Face TNL directory (``config.json``).

``load_model`` is for inference, ``load_params`` for training's ``init_from``,
``load_model_config`` and ``tokenizer_spec`` for both. A run whose newest checkpoint
lost files is read from its newest intact one, with a warning (``run_dir``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnl_jax.checkpoints import converted, hf, hf_config, run_dir
from tnl_jax.checkpoints.kinds import FOUND, checkpoint_kind, directory_kind
from tnl_jax.checkpoints.saved_shapes import ParamsMismatch
from tnl_jax.model.config import ModelConfig
from tnl_jax.model.config_checks import needs_x64
from tnl_jax.model.language_model import LanguageModel, create_model, model_with_params
from tnl_jax.tokenizers import TOKENIZER_FILES, BytesTokenizer

__all__ = ["directory_kind", "load_model", "load_model_config", "load_params", "read_params",
           "tokenizer_spec"]


def load_model_config(directory: str | Path) -> ModelConfig:
    """The config of the model stored in ``directory``."""
    kind = checkpoint_kind(directory)
    if kind == "run":
        return ModelConfig.from_saved(run_dir.read_config(directory)["model"])
    if kind == "converted":
        return converted.load_config(directory)
    return hf_config.load_config(directory)


def _fit(pure: dict, abstract: dict) -> dict:
    """``pure``'s arrays in the shapes, dtypes and shardings of ``abstract``."""
    def fit(path, array, want):
        if tuple(array.shape) != tuple(want.shape):
            raise ParamsMismatch(f"parameter {jax.tree_util.keystr(path)} has shape "
                             f"{tuple(array.shape)}, expected {tuple(want.shape)}")
        array = jnp.asarray(np.asarray(array, np.float32), want.dtype)
        return array if want.sharding is None else jax.device_put(array, want.sharding)

    return jax.tree_util.tree_map_with_path(fit, pure, abstract)


def read_params(directory: str | Path, abstract: nnx.State) -> dict:
    """The parameters stored in ``directory`` as a pure dict, as ``abstract`` (an
    ``nnx.State`` of ``jax.ShapeDtypeStruct``) describes them: shapes, dtypes,
    shardings. ``ParamsMismatch`` when they do not have its names and shapes."""
    kind = checkpoint_kind(directory)
    if kind == "run":
        return run_dir.read_params(directory, abstract)
    if kind == "converted":
        return converted.read_params(directory, nnx.to_pure_dict(abstract))
    cfg = load_model_config(directory)
    tensors = hf.read_hf_tensors(directory)
    return _fit(hf.params_from_hf(tensors, cfg, jnp.float32), nnx.to_pure_dict(abstract))


def _abstract(params: nnx.State, dtype: jnp.dtype | None = None) -> nnx.State:
    """``params`` as ``jax.ShapeDtypeStruct`` (with their shardings, if any)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, dtype or x.dtype, sharding=getattr(x, "sharding", None)), params)


def load_model(directory: str | Path, dtype: jnp.dtype = jnp.bfloat16,
               **overrides: Any) -> LanguageModel:
    """The model stored in ``directory``, weights and compute in ``dtype``; ``overrides``
    set other config fields (e.g. ``attention_backend='xla'``)."""
    for problem in needs_x64("dtype", dtype):
        raise ValueError(problem)
    name = jnp.dtype(dtype).name
    cfg = load_model_config(directory).replace(dtype=name, param_dtype=name, **overrides)
    params = nnx.state(nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0))), nnx.Param)
    return model_with_params(cfg, read_params(directory, _abstract(params, jnp.dtype(dtype))))


def load_params(directory: str | Path, like: nnx.State) -> nnx.State:
    """The parameters stored in ``directory`` in the shapes, dtypes and shardings of
    ``like`` (an ``nnx.State`` of ``nnx.Param``, e.g. a fresh model's)."""
    try:
        pure = read_params(directory, _abstract(like))
    except ParamsMismatch as error:
        raise ValueError(f"{directory}: its parameters do not match the model config "
                         f"({load_model_config(directory)}): {error}") from error
    state = jax.tree.map(lambda x: x, like)
    nnx.replace_by_pure_dict(state, pure)
    return state


def tokenizer_spec(directory: str | Path) -> str:
    """The tokenizer that goes with ``directory``: its ``tokenizer.model`` /
    ``tokenizer.json``, else a run's configured tokenizer. A converted or Hugging Face
    directory without a tokenizer file is a ``FileNotFoundError`` (never a guess)."""
    for name in TOKENIZER_FILES:
        if (Path(directory) / name).exists():
            return str(Path(directory) / name)
    kind = checkpoint_kind(directory)
    if kind == "run":
        return run_dir.read_config(directory).get("tokenizer", "bytes")
    raise FileNotFoundError(
        f"{directory}: found {FOUND[kind]} without its tokenizer ({' or '.join(TOKENIZER_FILES)}) "
        f"for the model's {load_model_config(directory).vocab_size} ids; give the tokenizer the "
        f"model was trained with (--tokenizer PATH; for a published checkpoint its "
        f"tokenizer.model), or --tokenizer bytes ({BytesTokenizer.vocab_size} ids) for a model "
        "trained on bytes")
