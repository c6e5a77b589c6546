"""The converted format: a Hugging Face TNL checkpoint as an Orbax checkpoint of our
parameters, which training starts from (``init_from=OUT``) and generation reads.

    tnl-convert --from DIR --to converted --out OUT     (tnl_jax/checkpoints/export.py)

Layout of ``OUT``:

* ``OUT/model_config.json``: ``ModelConfig.to_dict()`` of the converted model
  (``param_dtype`` float32, ``dtype`` float32; override at load);
* ``OUT/params/``: an Orbax ``StandardCheckpointer`` checkpoint of
  ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``, float32, the tree of
  ``create_model(cfg)``: ``embed_tokens (V, d)``, ``stacks/{i}/layers/...`` with a
  leading layers axis per stack, ``lm_head (d, V)`` when untied;
* ``OUT/tokenizer.model`` / ``OUT/tokenizer.json``: the source's, when it has one.

``tnl_jax.checkpoints.loader`` reads it (and the other kinds of directory):
``load_params(OUT, like)`` for training (``like``: the run's ``nnx.State`` of
``nnx.Param``, whose shapes, dtypes and shardings are kept), ``load_model(OUT)``
for inference.
"""
from __future__ import annotations

import json
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

from tnl_jax.checkpoints import saved_shapes
from tnl_jax.checkpoints.json_files import read_mapping
from tnl_jax.checkpoints.run_dir import brief
from tnl_jax.model.config import ModelConfig
from tnl_jax.model.language_model import LanguageModel

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def write(model: LanguageModel, out_dir: str | Path) -> None:
    """Writes ``model``'s config and parameters (as they are: load it in float32 for the
    float32 files the module docstring describes) into the new or empty ``out_dir``."""
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out_dir / PARAMS_DIR, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def load_config(directory: str | Path) -> ModelConfig:
    """The saved ``ModelConfig``; every error names the file."""
    path = Path(directory) / CONFIG_FILE
    values = read_mapping(path)
    try:
        return ModelConfig.from_saved(values)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def read_params(directory: str | Path, abstract: dict) -> dict:
    """The stored parameters in the shapes, dtypes and shardings of ``abstract`` (a pure
    dict of ``jax.ShapeDtypeStruct``); other names or shapes raise
    ``saved_shapes.ParamsMismatch``, files that cannot be read a ``ValueError`` naming
    the directory."""
    params = Path(directory).absolute() / PARAMS_DIR
    try:
        saved_shapes.check(params, abstract)
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(params, abstract)
    except saved_shapes.ParamsMismatch:
        raise
    except Exception as error:  # Orbax's and tensorstore's errors name neither remedy.
        raise ValueError(f"{params}: the converted parameters cannot be read ({brief(error)}); "
                         "the directory is damaged or incomplete: convert its source again "
                         "(tnl-convert ... --to converted --overwrite)") from None
