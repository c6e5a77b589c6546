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
from tnl_jax.config_help import (allowed_by_checks, described, field_at, help_of, help_table,
                                 replaced)
from tnl_jax.config_keys import unknown_key_error
from tnl_jax.model import config_checks as model_checks
from tnl_jax.model.config import ModelConfig
from tnl_jax.training import start
from tnl_jax.training.config_checks import problems, raise_problems


@dataclasses.dataclass
class MeshConfig:
    """Device mesh sizes (axes of ``tnl_jax.partitioning.MESH_AXES``); -1 takes the
    devices the other axes leave. ``context`` splits the sequence (context parallelism)."""
    data: int = described(-1, "devices holding whole copies of the model, each its own rows "
                              "(data parallelism); -1: the devices the other axes leave")
    fsdp: int = described(1, "devices each holding a slice of every weight and of the rows "
                             "(fully sharded data parallelism)")
    context: int = described(1, "devices splitting each sequence (context parallelism)")
    tensor: int = described(1, "devices splitting each matrix product (tensor parallelism)")


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; `model` follows the published config.json names.
    Each field's help is what `tnl-train --help` prints (`describe`)."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    # Run length and bookkeeping.
    steps: int = described(1000, "optimizer steps the run trains to (a rerun resumes up to it)")
    run_dir: str = described("runs/tnl-tiny", "directory of the run's checkpoints, metrics, "
                                               "loss plot and tokenizer; rerun to resume")
    checkpoint_every: int = described(200, "steps between checkpoints (the last step is "
                                           "always saved)")
    keep_checkpoints: int = described(3, "newest checkpoints kept in run_dir")
    log_every: int = described(1, "steps between lines of metrics.jsonl, TensorBoard and "
                                  "the progress line")
    tensorboard: bool | str = described(
        "auto", "TensorBoard event files in run_dir/tensorboard (the tensorboard extra): "
                "auto when it is installed, true/on always, false/off never")
    eval_every: int = described(100, "steps between held-out evaluations (0: none)")
    eval_batches: int = described(4, "held-out batches per evaluation")
    seed: int = described(0, "seed of the initial weights, data order and the sample")
    # Batch: global size in sequences, each `seq_len` tokens.
    batch_size: int = described(16, "sequences per optimizer step, over all devices")
    seq_len: int = described(256, "tokens per sequence")
    grad_accum: int = described(1, "parts each batch is split into, their gradients summed "
                                   "(the same step in less memory)")
    # The logits (tokens x vocab, float32) are made a chunk at a time and recomputed in
    # the backward (training/losses.py).
    loss_chunk_tokens: int = described(
        -1, "tokens per chunk of the loss on each device: 0 all at once; -1 4096-token "
            "chunks when a device's logits would pass 1 GiB, else all at once")
    loss_kernel: str = described(
        "auto", "how the loss makes its logits: auto (the fastest measured: "
                "grads_in_forward), chunked (loss_chunk_tokens), grads_in_forward (the chunks, "
                "their gradient made in the forward: one head matmul fewer), fused "
                "(Pallas kernels, GPU, one device: the logits never written), "
                "fused_xla_grads (their forward, the backward in XLA, chunked), "
                "fused_interpret (the kernels interpreted, tests)")
    grad_reduce_dtype: str = described(
        "float32", "dtype the gradients are reduced in across devices: float32, or bfloat16 "
                   "(half the bytes; weight matrices' gradients taken against their bf16 "
                   "copies, summed over grad_accum parts in float32)")
    data: str = described("stdlib", "training text: 'stdlib' (your Python's library), 'mqar' "
                                    "(recall task), or a glob of .txt/.py/... text, .npy "
                                    "token streams or .array_record files")
    eval_data: str | None = described(None, "held-out files (a glob, used whole); null: "
                                            "eval_fraction of data's documents")
    tokenizer: str = described("bytes", "'bytes', or a tokenizer.model (SentencePiece) or "
                                        "tokenizer.json file or its directory")
    eval_fraction: float = described(0.02, "share of data's documents held out for evaluation")
    eval_min_bytes: int = described(0, "only text files of at least this many bytes are held "
                                       "out")
    shuffle_window: int = described(256, "packed rows shuffled together, so one long file "
                                         "does not fill a batch")
    passkey_rows: float = described(0.0, "share of training rows that are passkey examples "
                                         "(numbers hidden in data's own training text, asked "
                                         "for at the end, 128 tokens to a row long, the answers "
                                         "in the loss; tokenizer=bytes), to teach retrieval")
    # AdamW with linear warmup then cosine decay to `lr * min_lr_ratio`.
    lr: float = described(3e-3, "peak learning rate of AdamW")
    min_lr_ratio: float = described(0.1, "final learning rate as a fraction of lr (cosine "
                                         "decay after warmup)")
    warmup: int = described(50, "steps of linear warmup from 0 to lr")
    weight_decay: float = described(0.1, "AdamW weight decay (projection matrices only)")
    beta1: float = described(0.9, "AdamW's first-moment decay")
    beta2: float = described(0.95, "AdamW's second-moment decay")
    grad_clip: float = described(1.0, "largest global gradient norm (0: no clipping)")
    init_from: str | None = described(
        None, "start from the weights of a training run (its newest checkpoint), a converted "
              "or a Hugging Face directory; its model config unless --config has a model:")
    # The sample printed at the end.
    sample_prompt: str = described("def ", "prompt of the sample printed at the end")
    sample_tokens: int = described(200, "tokens of the sample printed at the end (0: none)")


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
    if annotation is str:  # A number is the text written (run_dir: 123); null and
        # true/false are not (they would be the folders 'None' and 'True').
        if value is None or isinstance(value, (bool, dict, list)):
            shown = "null" if value is None else repr(value)
            raise ValueError(f"{key}: expected a string, got {shown}")
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
    field_problems = getattr(type(obj), "field_problems", None)  # A group that checks itself.
    found = field_problems({**vars(obj), **changes}) if field_problems and prefix else []
    if found:  # Named by their dotted keys (model.dtype=...), as the other keys are.
        raise ValueError("; ".join(prefix + problem for problem in found))
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
    """The body of `--help`: one line per key with its value in `cfg`, its description
    (the field's help) and what its range check allows."""
    flat = _flatten(to_dict(cfg))
    return help_table((key, flat[key], help_of(field_at(TrainConfig, key)),
                       allowed_by_checks(key, _problems_if(cfg, key)))
                      for key in all_keys_of(TrainConfig) if key in flat)


def _problems_if(cfg: TrainConfig, key: str):
    """``value -> every problem of cfg with key set to value``: the model's checks for a
    ``model.`` key (a ModelConfig checks itself when built), the training config's else."""
    if key.startswith("model."):
        fields = vars(cfg.model)
        return lambda value: model_checks.problems({**fields, key.split(".", 1)[1]: value})
    return lambda value: problems(replaced(cfg, key, value))
