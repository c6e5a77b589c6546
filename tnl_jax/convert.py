"""Convert a Hugging Face TNL checkpoint to an Orbax checkpoint of our parameters.

    python -m tnl_jax.convert --hf DIR --out OUT

Layout of ``OUT``:

* ``OUT/model_config.json``: ``ModelConfig.to_dict()`` of the converted model
  (``param_dtype`` float32, ``dtype`` float32; override at load);
* ``OUT/params/``: an Orbax ``StandardCheckpointer`` checkpoint of
  ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``, float32, the tree of
  ``create_model(cfg)``: ``embed_tokens (V, d)``, ``stacks/{i}/layers/...`` with a
  leading layers axis per stack, ``lm_head (d, V)`` when untied.

Training restores it with ``load_params(OUT, like)`` (``like``: the run's
``nnx.State`` of ``nnx.Param``, whose shapes, dtypes and shardings are kept);
inference with ``load_model(OUT)``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from tnl_jax.config import ModelConfig
from tnl_jax.hf import load_hf, model_from_pure
from tnl_jax.model import LanguageModel, create_model

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def convert(hf_dir: str | Path, out_dir: str | Path) -> ModelConfig:
    """Writes ``out_dir`` (see the module docstring); returns the model's config."""
    out_dir = Path(out_dir).absolute()
    model = load_hf(hf_dir, dtype=jnp.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out_dir / PARAMS_DIR, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return model.cfg


def load_config(directory: str | Path) -> ModelConfig:
    return ModelConfig.from_dict(json.loads((Path(directory) / CONFIG_FILE).read_text()))


def _restore(directory: str | Path, abstract: dict) -> dict:
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(Path(directory).absolute() / PARAMS_DIR, abstract)


def load_params(directory: str | Path, like: nnx.State) -> nnx.State:
    """The converted parameters in the shapes, dtypes and shardings of ``like``; a
    config that does not match raises with the differing shapes."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        nnx.to_pure_dict(like))
    stored = load_config(directory)
    try:
        restored = _restore(directory, abstract)
    except ValueError as err:
        raise ValueError(f"{directory} holds a model of another shape ({stored}): {err}") from err
    state = jax.tree.map(lambda x: x, like)
    nnx.replace_by_pure_dict(state, restored)
    return state


def load_model(directory: str | Path, dtype: jnp.dtype = jnp.bfloat16, **overrides) -> LanguageModel:
    """The converted model with weights and compute in ``dtype``."""
    name = jnp.dtype(dtype).name
    cfg = load_config(directory).replace(dtype=name, param_dtype=name, **overrides)
    shapes = nnx.state(nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0))), nnx.Param)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.dtype(dtype)),
                            nnx.to_pure_dict(shapes))
    return model_from_pure(cfg, _restore(directory, abstract))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hf", required=True, help="Hugging Face TNL directory")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    cfg = convert(args.hf, args.out)
    print(f"wrote {args.out}: {cfg.decoder_layers} layers, d {cfg.decoder_embed_dim}, "
          f"vocab {cfg.vocab_size}")


if __name__ == "__main__":
    main()
