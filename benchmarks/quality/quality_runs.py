"""The named runs of the quality study and the training config of each.

Every run is a plain ``train.py`` run (tnl-tiny's data and tokenizer keys with
``key=value`` overrides), so a run directory resumes like any other. The study has
four phases, each a list of runs:

- ``sweep``: every architecture at each learning rate of ``Scale.lrs`` (seed 0, 2K
  rows, ``sweep_tokens``); the rate kept for an architecture is the one with the
  lowest bits per byte on the **validation** half of the held-out documents;
- ``main``: every architecture at its kept rate, each seed of ``Scale.seeds``, 2K
  rows, ``tokens``; the reported numbers (the **test** half);
- ``ext``: each main run of seed 0 trained on for ``ext_tokens`` at 16K rows (from its
  weights, a fresh optimizer with the same warmup): the long-context rows, the same
  extension for every architecture;
- ``pk``: an extension at 16K rows for ``pk_tokens``, of the main run of each seed of
  ``pk_seeds`` (2 first: it rode with the seed-2 main runs; then 0, the second seed
  that checks a met figure; a main run's checkpoint stays on the device that trained
  it), with ``pk_rows`` of its rows passkey examples made from the training files
  (``tnl_jax/data/passkey.py``): the passkey fine-tune, since models of this size
  trained on text alone do not retrieve the passkey at all;
- ``mqar``: Zoology's recall task on small models (``Scale.mqar_*``), each
  architecture at each rate of ``mqar_lrs``.

All architectures of a phase share width, depth, heads, tokens, batch, optimizer,
schedule (warmup fixed in steps) and seed (which fixes the data order too); only the
architecture keys and, to match parameter counts, ``glu_dim`` differ (``matched_glu``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from tnl_jax.model.config import ModelConfig
from tnl_jax.model.counting import count_params
from tnl_jax.training import config as train_config

# Architecture name -> model overrides; LABELS says what each is in a table.
ARCHS = {
    "tnl": {"architecture": "tnl"},
    "tnl-learned": {"architecture": "tnl", "decay_learnable": True},
    "hybrid8": {"architecture": "hybrid", "softmax_every": 8},
    "hybrid4": {"architecture": "hybrid", "softmax_every": 4},
    # The hybrids with LLaMA's query and key norms in their softmax layers: on the CPU
    # they made the two-layer hybrid learn the passkey rows, on the GPU the 1-in-8
    # hybrid's passkey and 8K-32K rows (docs/QUALITY.md).
    "hybrid8-qk": {"architecture": "hybrid", "softmax_every": 8, "softmax_qk_norm": True},
    "hybrid4-qk": {"architecture": "hybrid", "softmax_every": 4, "softmax_qk_norm": True},
    # Without RoPE in its softmax layers (NoPE, as Jamba's attention layers): the
    # hybrids' 8K-32K rows lose 11-32% against their 2K loss where TNL's do not, and a
    # softmax layer without RoPE meets no unseen rotation at longer rows.
    "hybrid4-qk-nope": {"architecture": "hybrid", "softmax_every": 4, "softmax_qk_norm": True,
                        "softmax_rope": False},
    "softmax": {"architecture": "softmax"},
    "llama": {"architecture": "llama"},
}
LABELS = {
    "tnl": "TNL (fixed decays)", "tnl-learned": "TNL, learned decays",
    "hybrid8": "hybrid, softmax every 8th layer", "hybrid4": "hybrid, softmax every 4th layer",
    "hybrid8-qk": "hybrid, softmax every 8th layer, QK norm",
    "hybrid4-qk": "hybrid, softmax every 4th layer, QK norm",
    "hybrid4-qk-nope": "hybrid, softmax every 4th layer, QK norm, no RoPE",
    "softmax": "softmax, TNL backbone (SRMSNorm, SGLU)",
    "llama": "softmax, LLaMA-style (RMSNorm+gain, SwiGLU, QK norm)",
}
MQAR_ARCHS = {  # Two layers: the hybrid is one lightning layer, then one softmax layer.
    "tnl": ARCHS["tnl"], "tnl-learned": ARCHS["tnl-learned"],
    "hybrid": {"architecture": "hybrid", "softmax_every": 2},
    "softmax": ARCHS["softmax"], "llama": ARCHS["llama"],
}
LONG_FILE_BYTES = 16384  # Held out: stdlib files of at least 16 KB (long documents).
PHASES = ("sweep", "main", "ext", "pk", "mqar")
EXTENSIONS = ("ext", "pk")  # Phases that start from a main run (Scale.extension_seeds'),
# at ext_rows.


@dataclasses.dataclass(frozen=True)
class Scale:
    """The study's size: the models, tokens, batches and schedules of every phase."""
    width: int = 512
    layers: int = 8
    heads: int = 8
    glu_dim: int = 1408  # TNL's MLP width (2.75 x width); the others are matched.
    archs: tuple[str, ...] = tuple(ARCHS)
    batch_tokens: int = 1 << 17  # Tokens per step at every row length.
    rows: int = 2048
    lrs: tuple[float, ...] = (1e-3, 2e-3, 4e-3)
    sweep_tokens: float = 25e6
    tokens: float = 100e6
    seeds: tuple[int, ...] = (0, 1, 2)
    ext_rows: int = 16384
    ext_tokens: float = 25e6
    # The passkey fine-tune: 100M tokens, 3/4 of the rows passkey examples, about 146,000
    # examples (25M at 1/2, 8,000 examples, taught no model: docs/QUALITY.md).
    pk_tokens: float = 100e6
    pk_rows: float = 0.75  # Share of a pk run's rows that are passkey examples.
    pk_seeds: tuple[int, ...] = (2, 0)  # The main runs pk runs extend, in order.
    warmup_steps: int = 100  # Fixed in steps, the same for every run of a phase.
    dtype: str = "bfloat16"
    evals: int = 10  # Held-out evaluations per run (the curves), each of the whole set.
    eval_fraction: float = 0.1  # Of the long files: the held-out set.
    mqar_archs: tuple[str, ...] = tuple(MQAR_ARCHS)
    mqar_width: int = 256
    mqar_layers: int = 2
    mqar_rows: int = 512
    mqar_batch: int = 64
    mqar_steps: int = 3000
    mqar_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    # MQAR's phase change comes at a step that varies with the seed and the scale (the
    # TNL-backbone softmax learned it at width 256 and not at width 128; the LLaMA-style
    # model the other way round): seeds per rate before a model is said not to learn it.
    mqar_seeds: tuple[int, ...] = (0, 1, 2)
    # The evaluation (quality_results): context windows (512: the short side of the
    # context gain), passkey lengths, tokens per evaluation batch, rows per point.
    windows: tuple[int, ...] = (512, 2048, 8192, 16384, 32768, 65536)
    passkey_lengths: tuple[int, ...] = (2048, 4096, 8192, 16384, 32768)
    eval_batch_tokens: int = 1 << 16
    passkey_rows: int = 8
    mqar_eval_rows: int = 256

    def steps(self, tokens: float) -> int:
        return max(1, round(tokens / self.batch_tokens))

    def extension_seeds(self, phase: str) -> tuple[int, ...]:
        """The seeds of the main runs an extension of ``phase`` starts from."""
        return self.pk_seeds if phase == "pk" else (0,)

    def phase_tokens(self, phase: str) -> float:
        """Training tokens of a run of ``phase`` (an LM phase)."""
        return {"sweep": self.sweep_tokens, "main": self.tokens, "ext": self.ext_tokens,
                "pk": self.pk_tokens}[phase]


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: an architecture in a phase, at a learning rate and seed."""
    phase: str
    arch: str
    lr: float
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.phase}-{self.arch}-lr{self.lr:g}-s{self.seed}"

    @property
    def task(self) -> str:
        return "mqar" if self.phase == "mqar" else "lm"


def sweep_runs(scale: Scale) -> list[Run]:
    return [Run("sweep", arch, lr) for lr in scale.lrs for arch in scale.archs]


def main_runs(scale: Scale, chosen: dict[str, float]) -> list[Run]:
    """Seeds first, so a cut budget leaves whole comparisons; only architectures whose
    sweep finished (``chosen``)."""
    return [Run("main", arch, chosen[arch], seed) for seed in scale.seeds
            for arch in scale.archs if arch in chosen]


def ext_runs(scale: Scale, chosen: dict[str, float], phase: str = "ext") -> list[Run]:
    """The extensions of ``phase`` (of ``EXTENSIONS``), one per architecture and seed of
    ``Scale.extension_seeds``, seed by seed."""
    return [Run(phase, arch, chosen[arch], seed) for seed in scale.extension_seeds(phase)
            for arch in scale.archs if arch in chosen]


def main_and_ext_runs(scale: Scale, chosen: dict[str, float],
                      extensions: tuple[str, ...] = ("ext",)) -> list[Run]:
    """Main runs, each followed at once by its extensions (``ext`` after seed 0, ``pk``
    after each of ``pk_seeds``): an extension starts from that run's checkpoint, which
    stays on the machine that trained it (checkpoints do not come back from a device call)."""
    ordered = []
    for run in main_runs(scale, chosen):
        ordered.append(run)
        ordered += [Run(phase, run.arch, run.lr, run.seed) for phase in extensions
                    if run.seed in scale.extension_seeds(phase)]
    return ordered


def ext_source(run: Run) -> Run:
    """The main run an extension starts from: its own seed's."""
    return Run("main", run.arch, run.lr, run.seed)


def mqar_runs(scale: Scale) -> list[Run]:
    """Seeds first, as for the main runs."""
    return [Run("mqar", arch, lr, seed) for seed in scale.mqar_seeds for lr in scale.mqar_lrs
            for arch in scale.mqar_archs]


def model_overrides(scale: Scale, run: Run, glu_dim: int) -> dict:
    if run.task == "mqar":
        width = scale.mqar_width
        return {"decoder_embed_dim": width, "decoder_layers": scale.mqar_layers,
                "decoder_attention_heads": width // 64, "glu_dim": round(2.75 * width / 8) * 8,
                "vocab_size": 8192, "dtype": scale.dtype, **MQAR_ARCHS[run.arch]}
    return {"decoder_embed_dim": scale.width, "decoder_layers": scale.layers,
            "decoder_attention_heads": scale.heads, "glu_dim": glu_dim,
            "dtype": scale.dtype, **ARCHS[run.arch]}


def _params(scale: Scale, arch: str, glu_dim: int) -> int:
    overrides = model_overrides(scale, Run("main", arch, 0.0), glu_dim)
    return count_params(ModelConfig().replace(**overrides))


def matched_glu(scale: Scale, arch: str) -> tuple[int, int, int]:
    """(glu_dim, parameters, TNL's parameters): the MLP width, a multiple of 8, that
    brings ``arch`` closest to TNL's count (the count is linear in ``glu_dim``);
    TNL's gated token mixer holds one ``width x width`` matrix more per layer."""
    target = _params(scale, "tnl", scale.glu_dim)
    base = _params(scale, arch, scale.glu_dim)
    slope = (_params(scale, arch, scale.glu_dim + 8) - base) / 8
    glu = scale.glu_dim + 8 * round((target - base) / slope / 8)
    return glu, _params(scale, arch, glu), target


def plan(scale: Scale) -> dict[str, dict]:
    """Per architecture: what it is, its MLP width and parameter count, matched to TNL's."""
    out = {}
    for arch in scale.archs:
        glu, params, target = matched_glu(scale, arch)
        out[arch] = {"glu_dim": glu, "params": params, "tnl_params": target,
                     "difference": params / target - 1, "label": LABELS[arch]}
    return out


def _schedule(scale: Scale, run: Run) -> dict:
    """Steps, rows, batch and warmup of the run's phase."""
    if run.task == "mqar":
        return {"steps": scale.mqar_steps, "seq_len": scale.mqar_rows,
                "batch_size": scale.mqar_batch, "warmup": max(1, scale.mqar_steps // 20)}
    rows = scale.ext_rows if run.phase in EXTENSIONS else scale.rows
    steps = scale.steps(scale.phase_tokens(run.phase))
    return {"steps": steps, "seq_len": rows, "batch_size": max(1, scale.batch_tokens // rows),
            "warmup": min(scale.warmup_steps, max(1, steps // 2))}


def overrides(run: Run, scale: Scale, glu_dim: int, root: Path,
              eval_batches: int = 1) -> list[str]:
    """The ``key=value`` list of ``run`` (what ``train.py`` would be given);
    ``eval_batches``: how many batches hold the whole held-out set once."""
    schedule = _schedule(scale, run)
    values = {
        "run_dir": str(root / run.name), "seed": run.seed, "lr": run.lr, **schedule,
        "eval_every": max(1, schedule["steps"] // (2 if run.phase == "sweep" else scale.evals)),
        "eval_batches": eval_batches, "keep_checkpoints": 1,
        "checkpoint_every": schedule["steps"] if run.phase == "sweep" else
        max(1, schedule["steps"] // 4),
        "log_every": 10, "sample_tokens": 0, "data": "stdlib" if run.task == "lm" else "mqar",
        "eval_fraction": scale.eval_fraction,
        "eval_min_bytes": LONG_FILE_BYTES if run.task == "lm" else 0,
        "loss_kernel": "chunked",  # The study's first runs' loss (auto's is faster, same sums).
        **{f"model.{k}": v for k, v in model_overrides(scale, run, glu_dim).items()},
    }
    if run.phase in EXTENSIONS:
        values["init_from"] = str(root / ext_source(run).name)
    if run.phase == "pk":
        values["passkey_rows"] = scale.pk_rows
    return [f"{key}={value}" for key, value in values.items()]


def train_cfg(run: Run, scale: Scale, glu_dim: int, root: Path, extra: list[str] = (),
              eval_batches: int = 1) -> train_config.TrainConfig:
    """The run's training config: tnl-tiny with ``overrides`` (then ``extra``)."""
    return train_config.load(None, [*overrides(run, scale, glu_dim, root, eval_batches),
                                    *extra])
