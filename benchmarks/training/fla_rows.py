"""``train_bench --anchor fla``: FLA's RetNet and Transformer (``fla_anchor_torch.py``)
at the shape, row lengths and tokens per step of train_bench's TNL and softmax
settings, run in their own process before JAX takes the GPU; their rows' MFU by our
FLOP count of the matching architecture (``fla_shapes.FLOP_ARCH``), and one table of
ours and theirs with the ratios at equal shape (TNL / RetNet, softmax / Transformer).
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections import defaultdict

from benchmarks.common.timing import json_lines_of, module_command
from benchmarks.training.fla_shapes import ANCHOR_OF_ARCH, FLOP_ARCH, Shape
from tnl_jax.model.config import ModelConfig
from tnl_jax.model.counting import count_flops_per_token
from tnl_jax.training import config as train_config
from tnl_jax.training import metrics

SCRIPT = "benchmarks.training.fla_anchor_torch"


def shape_of(cfg: ModelConfig) -> Shape:
    """A model config's width, depth, heads, MLP width, vocabulary and head tying."""
    return Shape(cfg.decoder_embed_dim, cfg.decoder_layers, cfg.decoder_attention_heads,
                 cfg.mlp_dim, cfg.vocab_size, cfg.tie_word_embeddings)


def anchor_commands(settings, warmup: int, steps: int, extra: list[str] = ()) -> dict:
    """``{(preset, tokens): command}``: one anchor process per preset and tokens per step,
    for the FLA models and row lengths matching ``settings``' TNL and softmax archs."""
    wanted = defaultdict(lambda: ({}, {}))  # ordered sets: models, row lengths
    for s in settings:
        if s.arch in ANCHOR_OF_ARCH:
            models, rows = wanted[(s.preset, s.tokens)]
            models[ANCHOR_OF_ARCH[s.arch]] = None
            rows[s.rows] = None
    commands = {}
    for (preset, tokens), (models, rows) in wanted.items():
        shape = shape_of(train_config.load(preset, []).model)
        commands[(preset, tokens)] = module_command(
            SCRIPT, *shape.as_args(), "--models", *models, "--rows", *map(str, rows),
            "--tokens", str(tokens), "--warmup", str(warmup), "--steps", str(steps), *extra)
    return commands


def flops_per_token(preset: str, model: str, rows: int) -> float:
    """Our training FLOPs per token of the architecture matching FLA's ``model``."""
    cfg = train_config.load(preset, [f"model.architecture={FLOP_ARCH[model]}"]).model
    return count_flops_per_token(cfg, rows)


def with_mfu(row: dict, preset: str) -> dict:
    """An anchor row tagged with its preset, its FLOPs per token and MFU against the
    peak of the device the row names (so a saved row's MFU can be made again on any
    machine; none for a device not in ``metrics.DEVICE_PEAKS``)."""
    row = {**row, "preset": preset, "arch": f"fla {row['model']}"}
    if "tokens_per_s" in row:
        flops = flops_per_token(preset, row["model"], row["rows"])
        row.update(gflop_per_token=flops / 1e9, mfu=metrics.mfu(
            row["tokens_per_s"], flops, 1, device_kind=row.get("device", "")))
    return row


def anchor_rows(settings, warmup: int, steps: int, extra: list[str] = ()) -> list[dict]:
    """The FLA rows for ``settings``. Asked for and not importable (torch or FLA), the
    anchor is an error, not a table without its anchor rows (device_setup.sh installs
    FLA's wheels from ``.whl/``)."""
    missing = [m for m in ("torch", "fla") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"--anchor fla: {', '.join(missing)} not importable here; install "
                         "FLA 0.6.0 (benchmarks/common/device_setup.sh does, from .whl/)")
    found = []
    for (preset, tokens), command in anchor_commands(settings, warmup, steps, extra).items():
        found += [(preset, row) for row in json_lines_of(command, f"fla anchor {preset}")]
    return [with_mfu(row, preset) for preset, row in found]


def _cells(row: dict | None) -> str:
    if row is None:
        return "- | - | -"
    if "error" in row:
        return f"{row['error'][:40]} | | "
    mfu = "-" if row.get("mfu") is None else f"{100 * row['mfu']:.1f}%"
    memory = row.get("peak_gib", row.get("program_gib", 0.0))
    return f"{row['tokens_per_s'] / 1e3:.1f}K | {mfu} | {memory:.1f}"


def peer_table(ours: list[dict], anchors: list[dict]) -> str:
    """Ours (TNL, softmax) beside FLA's matching model at each preset, rows and tokens
    per step: tokens/s, MFU, memory (ours: the compiled program; FLA's: torch's peak
    allocation) and ours / FLA's tokens/s."""
    theirs = {(r["preset"], r["model"], r["rows"], r["tokens"]): r for r in anchors}
    lines = ["| preset | rows | ours | tokens/s | MFU | GiB | FLA | tokens/s | MFU | GiB | "
             "ours / FLA |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ours:
        if r["arch"] not in ANCHOR_OF_ARCH:
            continue
        fla = theirs.get((r["preset"], ANCHOR_OF_ARCH[r["arch"]], r["rows"], r["tokens"]))
        ratio = (f"{r['tokens_per_s'] / fla['tokens_per_s']:.2f}"
                 if fla and "tokens_per_s" in r and "tokens_per_s" in fla else "-")
        length = f"{r['tokens'] // r['rows']} x {r['rows'] // 1024}K"
        lines.append(f"| {r['preset']} | {length} | {r['arch']} ({r['remat']}) | {_cells(r)} | "
                     f"{ANCHOR_OF_ARCH[r['arch']]} | {_cells(fla)} | {ratio} |")
    return "\n".join(lines)


def ran_with_lines(anchors: list[dict]) -> str:
    """What each anchor row ran with (compile, fused modules, dtype, attention)."""
    return "\n".join(
        f"- fla {r['model']} {r['batch']} x {r['rows']}: "
        + ", ".join(f"{k} {v}" for k, v in r.get("ran_with", {}).items() if k != "fla_config")
        for r in anchors)


def write_anchor_rows(anchors: list[dict], out: str | None) -> None:
    """The anchor rows as ``train_bench_fla.json``, written as soon as they are made:
    a run cut before ours finish keeps them, and ``train_bench --from-json ...
    --anchor-json`` makes the peer table from both files later."""
    if out and anchors:
        with open(os.path.join(out, "train_bench_fla.json"), "w") as f:
            json.dump(anchors, f, indent=1)


def write_peer_table(ours: list[dict], anchors: list[dict], out: str | None) -> None:
    """Prints the peer table and what each anchor ran with; with ``out``, also writes
    them (``train_bench_fla.md``) and the anchor rows (``train_bench_fla.json``)."""
    text = peer_table(ours, anchors) + "\n\nFLA rows ran with:\n" + ran_with_lines(anchors)
    print(text, flush=True)
    if out:
        with open(os.path.join(out, "train_bench_fla.md"), "w") as f:
            f.write(text + "\n")
        write_anchor_rows(anchors, out)
