"""Training configuration: one dataclass, YAML presets, `key=value` overrides.

A preset file holds the top-level training keys plus a `model:` mapping of
`ModelConfig` fields. Overrides use dotted keys for nested values
(`model.decoder_layers=2`, `mesh.fsdp=2`); values are parsed as YAML and then
checked against the dataclass field's type, so a typo or a wrong type fails
before any compilation, naming the nearest valid key.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tnl_jax import presets
from tnl_jax.config_keys import unknown_key_error
from tnl_jax.model.config import ModelConfig
from tnl_jax.training import start
from tnl_jax.training.config_checks import problems, raise_problems


@dataclasses.dataclass
class MeshConfig:
    """Device mesh sizes (axes of ``tnl_jax.partitioning.MESH_AXES``); -1 takes the
    devices the other axes leave. ``context`` splits the sequence (context parallelism)."""
    data: int = -1
    fsdp: int = 1
    context: int = 1
    tensor: int = 1


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; `model` follows the published config.json names."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    # Run length and bookkeeping.
    steps: int = 1000
    run_dir: str = "runs/tnl-tiny"
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 1
    eval_every: int = 100
    eval_batches: int = 4
    seed: int = 0
    # Batch: global size in sequences, each `seq_len` tokens.
    batch_size: int = 16
    seq_len: int = 256
    grad_accum: int = 1
    # Tokens per chunk of the loss on each device (training/losses.py): the logits
    # (tokens x vocab, float32) are made a chunk at a time and recomputed in the
    # backward. 0: all at once; -1: 4096-token chunks when a device's logits would
    # pass 1 GiB, else all at once.
    loss_chunk_tokens: int = -1
    # Data: "stdlib", "mqar", or a glob of .txt/.py/... text, .npy token streams, .array_record.
    data: str = "stdlib"
    eval_data: str | None = None
    tokenizer: str = "bytes"
    eval_fraction: float = 0.02
    eval_min_bytes: int = 0  # Only text files of at least this many bytes are held out.
    shuffle_window: int = 256  # Packed rows shuffled together, so one long file does not fill a batch.
    # AdamW with linear warmup then cosine decay to `lr * min_lr_ratio`.
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # Start from the weights of a directory: a training run (its newest checkpoint), a
    # converted (tnl-convert) or a Hugging Face one. Its model config is the run's unless
    # --config names a preset or file with a `model:` mapping.
    init_from: str | None = None
    # The sample printed at the end.
    sample_prompt: str = "def "
    sample_tokens: int = 200


def check(cfg: TrainConfig, what: str = "training config") -> None:
    """A ``ValueError`` naming every key of ``cfg`` out of its range, its value and what
    is allowed (``config_checks``); ``what`` says where the config came from."""
    raise_problems(problems(cfg), what)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Returns `value` as the annotated type, or raises ValueError naming `key`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ValueError(f"{key}: {value!r} is not one of {typing.get_args(annotation)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [coerce(v, item_type, key) for v in value]
        return origin(items)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:  # YAML 1.1 reads "3e-4" as a string.
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(annotation):
        raise ValueError(f"{key}: is a group; set its fields as {key}.<field>=value")
    return value


def _with_values(obj: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """A new dataclass like `obj` with `values` (nested dicts) set, type-checked.

    Built in one go, so a dataclass that validates itself sees the final combination
    (e.g. `decoder_embed_dim` and `decoder_attention_heads` changed together).
    """
    types_ = _field_types(type(obj))
    changes = {}
    for key, value in values.items():
        if key not in types_:
            valid = [prefix + k for k in all_keys_of(type(obj))]
            inner = next(iter(_flatten(value)), None) if isinstance(value, dict) else None
            raise unknown_key_error(prefix + key + (f".{inner}" if inner else ""), valid)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if value is None:  # An empty group in YAML (`model:`): nothing to change.
                continue
            if not isinstance(value, dict):
                raise ValueError(f"'{prefix + key}' is a group; set {prefix + key}.<field>=value")
            changes[key] = _with_values(current, value, prefix + key + ".")
        elif isinstance(value, dict) and types_[key] is not Any:
            inner = next(iter(value), "")
            raise ValueError(f"'{prefix + key}' is a value, not a group (it has no key "
                             f"'{prefix}{key}.{inner}'); set it as {prefix + key}=<value>")
        else:
            changes[key] = coerce(value, types_[key], prefix + key)
    return dataclasses.replace(obj, **changes)


def all_keys_of(cls: type) -> list[str]:
    """Every settable dotted key of a config dataclass."""
    keys = []
    for name, annotation in _field_types(cls).items():
        if dataclasses.is_dataclass(annotation):
            keys += [f"{name}.{k}" for k in all_keys_of(annotation)]
        else:
            keys.append(name)
    return keys


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def apply(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """Sets nested or dotted `values` on `cfg`, checking every key and type."""
    nested: dict[str, Any] = {}
    for dotted, value in _flatten(values).items():
        *groups, leaf = dotted.split(".")
        node = nested
        for group in groups:
            node = node.setdefault(group, {})
            if not isinstance(node, dict):
                raise ValueError(f"'{dotted}': '{group}' is not a group")
        node[leaf] = value
    return _with_values(cfg, nested)


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (`2`, `true`, `null`, `[1, 0]`, `abc`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected key=value, got '{text}'")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or error
        raise ValueError(f"{key.strip()}={raw}: the value is not valid YAML ({problem}); "
                         f"quote it as a string or fix it") from None


def load(preset: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """The config of a preset (a name like `tnl-1b` or a YAML path; default: tnl-tiny)
    with `key=value` overrides applied.

    With `init_from`, the model config is the one stored in that directory (then
    `model.*` overrides), unless `preset` is given and has a `model:` mapping. Every
    key is range-checked (`config_checks.check`); a problem in the file names it.
    """
    path, data = presets.read(preset)
    values = dict(parse_override(o) for o in overrides)
    init_from = values.get("init_from", data.get("init_from"))
    init_from = os.path.expanduser(init_from) if isinstance(init_from, str) else init_from
    if init_from and (preset is None or "model" not in data):
        from tnl_jax.checkpoints.loader import load_model_config  # Only then: --help stays instant.
        data = {**data, "model": load_model_config(init_from).to_dict()}
    try:
        from_file = apply(TrainConfig(), data)
    except ValueError as error:
        raise ValueError(f"config file {str(path)!r}: {error}") from None
    cfg = apply(from_file, values)
    cfg = dataclasses.replace(cfg, run_dir=os.path.expanduser(cfg.run_dir), init_from=(
        os.path.expanduser(cfg.init_from) if cfg.init_from else cfg.init_from))
    check(cfg, f"training config ({path.name}{' and overrides' if overrides else ''})")
    # The vocabulary is the one named: by an override, a --config file or init_from's
    # model; else a text tokenizer's own (start.fit_vocabulary).
    named = (preset is not None or init_from) and "vocab_size" in (data.get("model") or {})
    named = named or "model.vocab_size" in _flatten(values)
    return start.fit_vocabulary(cfg, bool(named))


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A JSON/YAML-able nested dict (tuples as lists)."""
    return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(cfg)))


def describe(cfg: TrainConfig) -> str:
    """One line per key with its value in `cfg`: the body of `--help`."""
    flat = _flatten(to_dict(cfg))
    width = max(len(k) for k in flat)
    return "\n".join(f"  {k:<{width}}  {flat[k]!r}" for k in all_keys_of(TrainConfig) if k in flat)
