"""The named runs of the quality study (issue 21) and the training config of each.

Every run is a plain ``train.py`` run: the same preset (tnl-tiny's data and tokenizer
keys) with ``key=value`` overrides, so a run directory resumes like any other. All
architectures share width, depth, heads, tokens, batch, optimizer, schedule and seed
(the seed fixes the data order too); only ``architecture``, ``decay_learnable`` and,
to match parameter counts, ``glu_dim`` differ (``matched_glu``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from tnl_jax.model.config import ModelConfig
from tnl_jax.model.counting import count_params
from tnl_jax.training import config as train_config

# Architecture name -> model overrides.
ARCHS = {
    "tnl": {"architecture": "tnl"},  # Fixed decays, as published.
    "softmax": {"architecture": "softmax"},  # RoPE.
    "hybrid": {"architecture": "hybrid", "softmax_every": 8},  # One softmax layer in eight.
    "tnl-learned": {"architecture": "tnl", "decay_learnable": True},
}
LONG_FILE_BYTES = 16384  # Held out: stdlib files of at least 16 KB (long documents).


@dataclasses.dataclass(frozen=True)
class Scale:
    """The study's size: the model, tokens and batch shared by every run."""
    width: int = 512
    layers: int = 8
    heads: int = 8
    glu_dim: int = 1408  # TNL's MLP width (2.75 x width, as tnl-tiny); others are matched.
    tokens: float = 300e6
    batch_tokens: int = 1 << 17  # Tokens per step at every row length.
    rows: tuple[int, ...] = (2048, 16384)
    seeds: tuple[int, ...] = (0, 1, 2)
    archs: tuple[str, ...] = tuple(ARCHS)
    lr: float = 2e-3
    warmup_fraction: float = 0.02
    dtype: str = "bfloat16"
    evals: int = 20  # Held-out evaluations per run (the loss curves).
    eval_batches: int = 2  # Batches per curve point.
    eval_fraction: float = 0.1  # Of the long files: the held-out set.
    mqar_tokens: float = 20e6  # 0: no MQAR runs.
    mqar_len: int = 2048

    def steps(self, tokens: float) -> int:
        return max(1, round(tokens / self.batch_tokens))


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: an architecture on a task at a row length with a seed."""
    arch: str
    seq_len: int
    seed: int
    task: str = "lm"  # "lm" (stdlib bytes) or "mqar".

    @property
    def name(self) -> str:
        prefix = "mqar-" if self.task == "mqar" else ""
        return f"{prefix}{self.arch}-r{self.seq_len}-s{self.seed}"


def runs(scale: Scale) -> list[Run]:
    """Every run of the study: shorter rows first, so that a cut budget leaves whole
    comparisons (all architectures of one setting) rather than one long run."""
    found = [Run(a, rows, seed) for rows in sorted(scale.rows) for seed in scale.seeds
             for a in scale.archs]
    if scale.mqar_tokens:
        found += [Run(a, scale.mqar_len, seed, "mqar") for seed in scale.seeds[:1]
                  for a in scale.archs]
    return found


def model_overrides(scale: Scale, arch: str, glu_dim: int) -> dict:
    return {"decoder_embed_dim": scale.width, "decoder_layers": scale.layers,
            "decoder_attention_heads": scale.heads, "glu_dim": glu_dim,
            "dtype": scale.dtype, **ARCHS[arch]}


def _params(scale: Scale, arch: str, glu_dim: int) -> int:
    return count_params(ModelConfig().replace(**model_overrides(scale, arch, glu_dim)))


def matched_glu(scale: Scale, arch: str) -> tuple[int, int, int]:
    """(glu_dim, parameters, TNL's parameters): the MLP width, a multiple of 8, that
    brings ``arch`` closest to TNL's count (the count is linear in ``glu_dim``);
    TNL's gated token mixer holds one ``width x width`` matrix more per layer."""
    target = _params(scale, "tnl", scale.glu_dim)
    base = _params(scale, arch, scale.glu_dim)
    slope = (_params(scale, arch, scale.glu_dim + 8) - base) / 8
    glu = scale.glu_dim + 8 * round((target - base) / slope / 8)
    return glu, _params(scale, arch, glu), target


def overrides(run: Run, scale: Scale, glu_dim: int, root: Path) -> list[str]:
    """The ``key=value`` list of ``run`` (what ``train.py`` would be given)."""
    tokens = scale.mqar_tokens if run.task == "mqar" else scale.tokens
    steps = scale.steps(tokens)
    values = {
        "run_dir": str(root / run.name), "seed": run.seed, "steps": steps,
        "seq_len": run.seq_len, "batch_size": max(1, scale.batch_tokens // run.seq_len),
        "lr": scale.lr, "warmup": max(1, round(scale.warmup_fraction * steps)),
        "eval_every": max(1, steps // scale.evals), "eval_batches": scale.eval_batches,
        "checkpoint_every": max(1, steps // 10), "keep_checkpoints": 1, "log_every": 1,
        "sample_tokens": 0, "data": "stdlib" if run.task == "lm" else "mqar",
        "eval_fraction": scale.eval_fraction,
        "eval_min_bytes": LONG_FILE_BYTES if run.task == "lm" else 0,
        **{f"model.{k}": v for k, v in model_overrides(scale, run.arch, glu_dim).items()},
    }
    return [f"{key}={value}" for key, value in values.items()]


def train_cfg(run: Run, scale: Scale, glu_dim: int, root: Path,
              extra: list[str] = ()) -> train_config.TrainConfig:
    """The run's training config: tnl-tiny with ``overrides`` (then ``extra``)."""
    return train_config.load(None, [*overrides(run, scale, glu_dim, root), *extra])
