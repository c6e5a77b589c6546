"""Published TransNormerLLM checkpoints (Hugging Face layout) in and out.

A directory holds ``config.json`` and the weights as ``model.safetensors``,
``pytorch_model.bin`` (needs torch), or either sharded with an ``*.index.json``.
Keys and PyTorch layouts (``[out, in]``, transposed here to ``[in, out]``)::

    model.embed_tokens.weight                          [V, d]
    model.layers.{l}.token_mixer.qkvu_proj.weight      [4d, d]  -> (d, 4, d)
    model.layers.{l}.token_mixer.out_proj.weight       [d, d]
    model.layers.{l}.token_mixer.lrpe.theta            [H, 1, e]  (LRPE layers)
    model.layers.{l}.channel_mixer.l1.weight / l2      [glu, d]
    model.layers.{l}.channel_mixer.l3.weight           [d, glu]
    lm_head.weight                                     [V, d]   (tied: equal to the embedding)

The decay rates are not stored: they follow from the config (``tnl_jax.model.decay``).
``config.json`` is read and written by ``hf_config``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnl_jax.checkpoints.hf_config import config_to_hf, load_config
from tnl_jax.checkpoints.json_files import read_mapping
from tnl_jax.checkpoints.kinds import checkpoint_kind
from tnl_jax.checkpoints.saved_shapes import ParamsMismatch
from tnl_jax.model.config import ModelConfig
from tnl_jax.model.config_checks import needs_x64
from tnl_jax.model.language_model import LanguageModel, layer_runs, model_with_params

DOWNLOAD_AGAIN = ("the file is damaged or incomplete (an interrupted download?): download it "
                  "again (huggingface_hub.snapshot_download or `hf download`)")


def _layer_entries(cfg: ModelConfig, kind: str):
    """``(hf_suffix, path in our layer, to_ours, to_hf, hf_shape)`` of one layer."""
    d, glu, heads, e = cfg.decoder_embed_dim, cfg.mlp_dim, cfg.decoder_attention_heads, cfg.head_dim
    transpose = lambda w: w.T
    entries = [
        ("token_mixer.qkvu_proj.weight", ("token_mixer", "qkvu_proj"),
         lambda w: w.T.reshape(d, 4, d), lambda p: p.reshape(d, 4 * d).T, (4 * d, d)),
        ("token_mixer.out_proj.weight", ("token_mixer", "out_proj"), transpose, transpose, (d, d)),
        ("channel_mixer.l1.weight", ("channel_mixer", "l1"), transpose, transpose, (glu, d)),
        ("channel_mixer.l2.weight", ("channel_mixer", "l2"), transpose, transpose, (glu, d)),
        ("channel_mixer.l3.weight", ("channel_mixer", "l3"), transpose, transpose, (d, glu)),
    ]
    if kind == "lrpe":
        entries.append(("token_mixer.lrpe.theta", ("token_mixer", "lrpe", "theta"),
                        lambda w: w, lambda p: p, (heads, 1, e)))
    return entries


def _checked(key: str, array: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` as float32 NumPy, refused (naming ``key``) unless it has ``shape``, a
    floating-point dtype and only finite values."""
    if tuple(array.shape) != tuple(shape):
        raise ParamsMismatch(f"checkpoint tensor {key!r} has shape {tuple(array.shape)}, "
                             f"the config expects {tuple(shape)}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(f"checkpoint tensor {key!r} is {np.dtype(array.dtype).name}: expected "
                         "floating-point weights (float32, bfloat16 or float16); this file was "
                         "not written as a TNL checkpoint")
    values = np.asarray(array, np.float32)
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ValueError(f"checkpoint tensor {key!r} holds {bad:,} non-finite values (NaN or inf) "
                         f"of {values.size:,}: these weights cannot be used (a diverged or "
                         "damaged checkpoint); take another checkpoint")
    return values


def _get(tree: dict, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _set(tree: dict, path: tuple, value: Any) -> None:
    _get(tree, path[:-1])[path[-1]] = value


def params_from_hf(tensors: dict[str, Any], cfg: ModelConfig, dtype: jnp.dtype) -> dict:
    """Our pure parameter dict (``nnx.to_pure_dict`` layout) from HF tensors; every
    key is checked (missing, unexpected, shape)."""
    if cfg.architecture != "tnl":
        raise ValueError(f"Hugging Face checkpoints are TNL, not {cfg.architecture!r}")
    d, vocab = cfg.decoder_embed_dim, cfg.vocab_size
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in tensors:
            raise ParamsMismatch(f"checkpoint has no tensor {key!r} (expected shape {shape})")
        used.add(key)
        return _checked(key, tensors[key], shape)

    cast = lambda a: jnp.asarray(a, dtype)
    embedding = take("model.embed_tokens.weight", (vocab, d))
    pure: dict[str, Any] = {"embed_tokens": cast(embedding), "stacks": {}}
    if cfg.tie_word_embeddings:
        if "lm_head.weight" in tensors:
            head = take("lm_head.weight", (vocab, d))
            if not np.array_equal(head, embedding):
                raise ParamsMismatch("lm_head.weight differs from model.embed_tokens.weight but the "
                                 "config ties them; set tie_word_embeddings: false")
    else:
        pure["lm_head"] = cast(take("lm_head.weight", (vocab, d)).T)
    for index, (kind, start, stop) in enumerate(layer_runs(cfg.layer_kinds())):
        layers: dict[str, Any] = {}
        for suffix, path, to_ours, _, shape in _layer_entries(cfg, kind):
            per_layer = [to_ours(take(f"model.layers.{l}.{suffix}", shape))
                         for l in range(start, stop)]
            parent = layers
            for part in path[:-1]:
                parent = parent.setdefault(part, {})
            parent[path[-1]] = jnp.asarray(np.stack(per_layer), dtype)
        pure["stacks"][index] = {"layers": layers}
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise ParamsMismatch(f"checkpoint has tensors this config does not use: {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    return pure


def params_to_hf(model: LanguageModel) -> dict[str, np.ndarray]:
    """The HF tensors (float32 NumPy, PyTorch layout) of a TNL model."""
    cfg = model.cfg
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    f32 = lambda a: np.asarray(jnp.asarray(a, jnp.float32))
    embedding = f32(pure["embed_tokens"])
    out = {"model.embed_tokens.weight": embedding,
           "lm_head.weight": embedding if cfg.tie_word_embeddings else
           np.ascontiguousarray(f32(pure["lm_head"]).T)}
    for index, (kind, start, stop) in enumerate(layer_runs(cfg.layer_kinds())):
        layers = pure["stacks"][index]["layers"]
        for suffix, path, _, to_hf, _ in _layer_entries(cfg, kind):
            stacked = f32(_get(layers, path))
            for l in range(start, stop):
                out[f"model.layers.{l}.{suffix}"] = np.ascontiguousarray(to_hf(stacked[l - start]))
    return out


def _torch_load(path: Path) -> dict[str, np.ndarray]:
    """A PyTorch pickle of tensors (floating ones as float32: NumPy has no bfloat16)."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"{path}: a PyTorch .bin file; reading it needs torch, which tnl-jax does not "
            "install: pip install torch --index-url https://download.pytorch.org/whl/cpu (CPU "
            "is enough), or convert the checkpoint to safetensors where torch is installed "
            "(tnl-convert --from DIR --to hf --out NEW_DIR writes model.safetensors)") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # Any unreadable pickle: say which file and what to do.
        raise ValueError(f"{path}: not a readable PyTorch file ({type(error).__name__}: "
                         f"{error}); {DOWNLOAD_AGAIN}") from None
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


def _safetensors_load(path: Path) -> dict[str, Any]:
    from safetensors.flax import load_file
    try:
        return dict(load_file(str(path)))
    except Exception as error:  # safetensors' own errors name neither file nor remedy.
        raise ValueError(f"{path}: not a readable safetensors file ({type(error).__name__}: "
                         f"{error}); {DOWNLOAD_AGAIN}") from None


def read_hf_tensors(directory: str | Path) -> dict[str, Any]:
    """All tensors of a HF checkpoint directory, single-file or sharded."""
    directory = Path(directory)
    readers: dict[str, Callable[[Path], dict]] = {
        "model.safetensors": _safetensors_load, "pytorch_model.bin": _torch_load}
    for name, reader in readers.items():
        index = directory / f"{name}.index.json"
        if index.exists():
            weight_map = read_mapping(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index}: no 'weight_map' mapping of tensor names to files")
            shards = sorted(set(weight_map.values()))
            tensors: dict[str, Any] = {}
            for shard in shards:
                if not (directory / shard).is_file():
                    raise FileNotFoundError(f"{index} lists the shard {shard}, which is not in "
                                            f"{directory}: download the missing files")
                tensors.update(reader(directory / shard))
            return tensors
        if (directory / name).exists():
            return reader(directory / name)
    raise FileNotFoundError(f"{directory}: no model.safetensors, pytorch_model.bin or their "
                            "*.index.json")


def load_hf(path: str | Path, dtype: jnp.dtype = jnp.bfloat16, **overrides: Any) -> LanguageModel:
    """A TNL model from a Hugging Face directory, weights and compute in ``dtype``.

    ``overrides`` set our own config fields (e.g. ``attention_backend='xla'``).
    """
    checkpoint_kind(path, "load_hf", ("hf",),
                    "; tnl_jax.load_model reads a training run or a converted directory")
    for problem in needs_x64("dtype", dtype):
        raise ValueError(problem)
    name = jnp.dtype(dtype).name
    cfg = load_config(path, **{"dtype": name, "param_dtype": name, **overrides})
    pure = params_from_hf(read_hf_tensors(path), cfg, jnp.dtype(dtype))
    return model_with_params(cfg, pure)


def save_hf(model: LanguageModel, directory: str | Path) -> None:
    """Writes ``config.json`` and ``model.safetensors`` (float32) in the published
    layout, both with the permissions of any new file (``0o666`` less the umask)."""
    from safetensors.numpy import save_file
    directory = Path(directory)
    hf_config = config_to_hf(model.cfg)  # Refuses a model the layout cannot hold, first.
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    weights = directory / "model.safetensors"
    save_file(params_to_hf(model), str(weights))
    weights.chmod(0o666 & ~current_umask())  # safetensors writes a private (0600) file.


def current_umask() -> int:
    """The process's umask (read by setting it, then setting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask
