"""Bad checkpoint files and directories: weights of the wrong dtype or not finite,
damaged or missing files, a directory of the wrong kind, a conversion onto an existing
destination. Each names the tensor, file or argument and what to do; nothing compiles.

The rows build small directories from the published test checkpoint (96 ids, d 64)."""
import functools
import json
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from tests.bad_inputs.case import BadInput
from tests.paths import PUBLISHED
from tnl_jax import ModelConfig, load_hf
from tnl_jax.checkpoints import export, kinds, loader
from tnl_jax.checkpoints.hf_config import config_to_hf
from tnl_jax.checkpoints.run_dir import UnreadableCheckpoints
from tnl_jax.model.language_model import create_model

L1 = "model.layers.1.channel_mixer.l1.weight"


@functools.cache
def published_tensors() -> dict[str, np.ndarray]:
    return load_file(str(PUBLISHED / "model.safetensors"))


def hf_dir(root: Path, **changed: np.ndarray) -> Path:
    """The published test checkpoint in ``root/hf`` with ``changed`` tensors."""
    directory = root / "hf"
    directory.mkdir()
    shutil.copyfile(PUBLISHED / "config.json", directory / "config.json")
    save_file({**published_tensors(), **changed}, str(directory / "model.safetensors"))
    return directory


def in_a_tmp_dir(call):
    """``call(tmp: Path)`` in a fresh temporary directory."""
    def run():
        with tempfile.TemporaryDirectory() as tmp:
            call(Path(tmp))
    return run


def changed_weight(make):
    """Loads the published checkpoint with ``L1`` replaced by ``make(its values)``."""
    return in_a_tmp_dir(lambda tmp: load_hf(hf_dir(tmp, **{L1: make(published_tensors()[L1])})))


def with_nan(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values[3, 5] = np.nan
    return values


def init_from_nan(tmp: Path):
    directory = hf_dir(tmp, **{L1: with_nan(published_tensors()[L1])})
    like = nnx.state(nnx.eval_shape(lambda: create_model(loader.load_model_config(directory),
                                                         nnx.Rngs(0))), nnx.Param)
    loader.load_params(directory, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), like))


def damaged_safetensors(keep_bytes: int):
    def call(tmp: Path):
        directory = hf_dir(tmp)
        weights = directory / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:keep_bytes])
        load_hf(directory)
    return in_a_tmp_dir(call)


def sharded(tmp: Path, kind: str) -> Path:
    """The published checkpoint's index as published, with ``kind`` (``bin``) shards of
    placeholder bytes or (``missing``) the second safetensors shard absent."""
    directory = tmp / "hf"
    directory.mkdir()
    shutil.copyfile(PUBLISHED / "config.json", directory / "config.json")
    stem, suffix = ("pytorch_model", "bin") if kind == "bin" else ("model", "safetensors")
    names = sorted(published_tensors())
    shards = {name: f"{stem}-0000{1 + i % 2}-of-00002.{suffix}" for i, name in enumerate(names)}
    index = {"metadata": {"total_size": 0}, "weight_map": shards}
    (directory / f"{'pytorch_model.bin' if kind == 'bin' else 'model.safetensors'}.index.json"
     ).write_text(json.dumps(index))
    if kind == "bin":
        for shard in set(shards.values()):
            (directory / shard).write_bytes(b"a torch pickle")
    else:
        save_file({n: published_tensors()[n] for n in names if shards[n].startswith(f"{stem}-00001")},
                  str(directory / f"{stem}-00001-of-00002.{suffix}"))
    return directory


def torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def converted_dir(tmp: Path) -> Path:
    export.export(hf_dir(tmp), tmp / "converted")
    return tmp / "converted"


def damaged_converted(tmp: Path):
    directory = converted_dir(tmp)
    shutil.rmtree(directory / "params" / "ocdbt.process_0")
    loader.load_model(directory)


def convert_onto(tmp: Path, target: str, overwrite: bool):
    """``export`` of the published checkpoint to ``tmp/<target>``: a run directory, a
    converted one, a file, a path through a file, or the source itself."""
    source = hf_dir(tmp)
    out = {"run": tmp / "run", "converted": tmp / "converted", "file": tmp / "file",
           "through": tmp / "file" / "out", "source": source}[target]
    if target == "run":
        (out / "checkpoints" / "4").mkdir(parents=True)
    elif target == "converted":
        (out / "model_config.json").parent.mkdir()
        (out / "model_config.json").write_text("{}")
    elif target in ("file", "through"):
        (tmp / "file").write_text("x")
    export.export(source, out, overwrite=overwrite)


def run_without_intact_checkpoint(tmp: Path):
    for step in (2, 4):
        (tmp / "run" / "checkpoints" / str(step) / "state").mkdir(parents=True)
    loader.load_model(tmp / "run")


TORCH_SAYS = ("pytorch_model-00001-of-00002.bin", "not a readable PyTorch file") \
    if torch_installed() else ("pytorch_model-00001-of-00002.bin", "needs torch",
                               "pip install torch", "convert the checkpoint to safetensors")

CASES = [
    BadInput("checkpoint: an int32 weight", changed_weight(lambda w: np.ones(w.shape, np.int32)),
             ValueError, (L1, "is int32", "expected floating-point weights")),
    BadInput("checkpoint: a bool weight", changed_weight(lambda w: w > 0), ValueError,
             (L1, "is bool", "expected floating-point")),
    BadInput("checkpoint: a NaN in a weight", changed_weight(with_nan), ValueError,
             (L1, "holds 1 non-finite values (NaN or inf) of 6,144", "take another checkpoint")),
    BadInput("checkpoint: an all-inf weight", changed_weight(lambda w: np.full_like(w, np.inf)),
             ValueError, (L1, "holds 6,144 non-finite values")),
    BadInput("checkpoint: init_from a directory with a NaN weight",
             in_a_tmp_dir(init_from_nan), ValueError, (L1, "non-finite values")),
    BadInput("checkpoint: a 20-byte model.safetensors", damaged_safetensors(20), ValueError,
             ("hf/model.safetensors: not a readable safetensors file", "download it again")),
    BadInput("checkpoint: a truncated model.safetensors", damaged_safetensors(100_000),
             ValueError, ("hf/model.safetensors: not a readable safetensors file",
                          "interrupted download")),
    BadInput("checkpoint: sharded .bin as published", in_a_tmp_dir(
        lambda tmp: load_hf(sharded(tmp, "bin"))),
             ImportError if not torch_installed() else ValueError, TORCH_SAYS),
    BadInput("checkpoint: a shard the index lists is missing", in_a_tmp_dir(
        lambda tmp: load_hf(sharded(tmp, "missing"))), FileNotFoundError,
             ("model.safetensors.index.json lists the shard model-00002-of-00002.safetensors",
              "download the missing files")),
    BadInput("checkpoint: a converted directory without its tokenizer", in_a_tmp_dir(
        lambda tmp: loader.tokenizer_spec(converted_dir(tmp))), FileNotFoundError,
             ("found a converted directory", "without its tokenizer", "the model's 96 ids",
              "--tokenizer bytes (259 ids)")),
    BadInput("checkpoint: a converted directory whose parameters lost their tensors",
             in_a_tmp_dir(damaged_converted), ValueError,
             ("converted/params: the converted parameters cannot be read",
              "convert its source again")),
    BadInput("checkpoint: a run whose every checkpoint lost files",
             in_a_tmp_dir(run_without_intact_checkpoint), UnreadableCheckpoints,
             ("run: no checkpoint in", "step 4: cannot be restored", "step 2: cannot be")),
    BadInput("checkpoint: load_hf of a training run", in_a_tmp_dir(
        lambda tmp: (tmp / "checkpoints").mkdir() or load_hf(tmp)), kinds.WrongDirectoryKind,
             ("load_hf", "found a training run directory (checkpoints/), expected a Hugging "
              "Face directory with config.json", "tnl_jax.load_model reads")),
    BadInput("checkpoint: load an empty directory", in_a_tmp_dir(loader.load_model),
             kinds.WrongDirectoryKind, ("found an empty directory", "expected a training run "
                                        "directory with checkpoints/ or a converted")),
    BadInput("checkpoint: load a path that does not exist",
             lambda: loader.load_model("no/such/run"), FileNotFoundError,
             ("no/such/run: found no such file or directory",)),
    BadInput("convert: onto an existing converted directory",
             in_a_tmp_dir(lambda tmp: convert_onto(tmp, "converted", False)), FileExistsError,
             ("--out", "found a converted directory", "nothing was written", "--overwrite")),
    BadInput("convert: --overwrite onto a training run",
             in_a_tmp_dir(lambda tmp: convert_onto(tmp, "run", True)), FileExistsError,
             ("found a training run directory", "never a training run")),
    BadInput("convert: --out is a file",
             in_a_tmp_dir(lambda tmp: convert_onto(tmp, "file", False)),
             kinds.WrongDirectoryKind, ("--out", "found a file, not a directory")),
    BadInput("convert: --out through a file",
             in_a_tmp_dir(lambda tmp: convert_onto(tmp, "through", False)),
             kinds.WrongDirectoryKind, ("--out", "/file/out: passes through", "/file', which is "
                                        "not a directory", "expected a new or empty directory")),
    BadInput("convert: --out is the source",
             in_a_tmp_dir(lambda tmp: convert_onto(tmp, "source", True)), ValueError,
             ("--out", "is, holds or lies inside the source")),
    BadInput("convert: a Hugging Face source that is a run",
             in_a_tmp_dir(lambda tmp: (tmp / "run" / "checkpoints").mkdir(parents=True)
                          or export.export(tmp / "run", tmp / "out", expected=("hf",),
                                           argument="--hf")),
             kinds.WrongDirectoryKind, ("--hf", "found a training run directory (checkpoints/)",
                                        "expected a Hugging Face directory with config.json")),
    BadInput("convert: to hf a model without decay", lambda: config_to_hf(
        ModelConfig(use_decay=False)), ValueError,
             ("model.use_decay=False", "the Hugging Face layout cannot hold this model")),
    BadInput("run: run_dir is a Hugging Face directory",
             lambda: kinds.refuse_as_run_dir(PUBLISHED), kinds.WrongDirectoryKind,
             ("run_dir=", "found a Hugging Face directory (config.json)",
              f"init_from={PUBLISHED}")),
    BadInput("checkpoint: load_model(dtype=float64) without 64-bit jax",
             lambda: loader.load_model(PUBLISHED, dtype=np.float64), ValueError,
             ("dtype='float64' needs 64-bit jax", "JAX_ENABLE_X64=1",
              "expected float32, bfloat16 or float16")),
    BadInput("checkpoint: load_hf(dtype='float64') without 64-bit jax",
             lambda: load_hf(PUBLISHED, dtype="float64"), ValueError,
             ("dtype='float64' needs 64-bit jax", "else the weights would be float32")),
    BadInput("run: run_dir is a converted directory",
             in_a_tmp_dir(lambda tmp: kinds.refuse_as_run_dir(converted_dir(tmp))),
             kinds.WrongDirectoryKind, ("found a converted directory", "Choose another run_dir")),
]
