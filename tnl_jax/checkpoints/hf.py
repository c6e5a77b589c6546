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
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnl_jax.checkpoints.hf_config import config_to_hf, load_config
from tnl_jax.checkpoints.json_files import read_mapping
from tnl_jax.model.config import ModelConfig
from tnl_jax.model.language_model import LanguageModel, layer_runs, model_with_params

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


def _check_shape(key: str, array, shape: tuple[int, ...]) -> None:
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"checkpoint tensor {key!r} has shape {tuple(array.shape)}, "
                         f"the config expects {tuple(shape)}")


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
            raise ValueError(f"checkpoint has no tensor {key!r} (expected shape {shape})")
        _check_shape(key, tensors[key], shape)
        used.add(key)
        return np.asarray(tensors[key])

    cast = lambda a: jnp.asarray(np.asarray(a, np.float32), dtype)
    embedding = take("model.embed_tokens.weight", (vocab, d))
    pure: dict[str, Any] = {"embed_tokens": cast(embedding), "stacks": {}}
    if cfg.tie_word_embeddings:
        if "lm_head.weight" in tensors:
            head = take("lm_head.weight", (vocab, d))
            if not np.array_equal(np.asarray(head, np.float32), np.asarray(embedding, np.float32)):
                raise ValueError("lm_head.weight differs from model.embed_tokens.weight but the "
                                 "config ties them; set tie_word_embeddings: false")
    else:
        pure["lm_head"] = cast(take("lm_head.weight", (vocab, d)).T)
    for index, (kind, start, stop) in enumerate(layer_runs(cfg.layer_kinds())):
        layers: dict[str, Any] = {}
        for suffix, path, to_ours, _, shape in _layer_entries(cfg, kind):
            per_layer = [to_ours(np.asarray(take(f"model.layers.{l}.{suffix}", shape), np.float32))
                         for l in range(start, stop)]
            parent = layers
            for part in path[:-1]:
                parent = parent.setdefault(part, {})
            parent[path[-1]] = jnp.asarray(np.stack(per_layer), dtype)
        pure["stacks"][index] = {"layers": layers}
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise ValueError(f"checkpoint has tensors this config does not use: {unexpected[:5]}"
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
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"{path.name} is a PyTorch file: reading it needs torch (CPU is "
                          "enough): pip install torch --index-url "
                          "https://download.pytorch.org/whl/cpu") from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}


def _safetensors_load(path: Path) -> dict[str, Any]:
    from safetensors.flax import load_file
    return dict(load_file(str(path)))


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
    name = jnp.dtype(dtype).name
    cfg = load_config(path, **{"dtype": name, "param_dtype": name, **overrides})
    pure = params_from_hf(read_hf_tensors(path), cfg, jnp.dtype(dtype))
    return model_with_params(cfg, pure)


def save_hf(model: LanguageModel, directory: str | Path) -> None:
    """Writes ``config.json`` and ``model.safetensors`` (float32) in the published layout."""
    from safetensors.numpy import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.cfg), indent=2))
    save_file(params_to_hf(model), str(directory / "model.safetensors"))
