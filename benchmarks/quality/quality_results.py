"""One run's results (``quality.json`` in its directory): size, cost, throughput, the
loss curve from its ``metrics.jsonl``, and the metrics of ``tnl_jax.evaluation``."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.quality.quality_runs import Run
from tnl_jax.evaluation import recall, run_eval
from tnl_jax.evaluation.positions import bucket_names
from tnl_jax.model.counting import count_flops_per_token, count_params
from tnl_jax.training.config import TrainConfig
from tnl_jax.training.metrics import read_metrics

RESULT_FILE = "quality.json"
MQAR_PAIRS = (4, 8, 16, 32, 64)
# The position buckets of the table and plots: the open bucket past 16K is empty at these
# row lengths.
BUCKETS = bucket_names()[:-1]


def curve(records: list[dict], tokens_per_step: int, flops_per_token: float) -> list[dict]:
    """Held-out loss at each evaluation, against tokens and training FLOPs."""
    return [{"step": r["step"], "tokens": r["step"] * tokens_per_step,
             "flops": r["step"] * tokens_per_step * flops_per_token,
             "loss": r["loss"], "eval_loss": r["eval_loss"]}
            for r in records if "eval_loss" in r]


def _median(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return statistics.median(values) if values else None


def describe(run: Run, cfg: TrainConfig) -> dict[str, Any]:
    """What the run is, what it costs and how fast it trained (medians over steps)."""
    records = read_metrics(Path(cfg.run_dir) / "metrics.jsonl")
    tokens_per_step = cfg.batch_size * cfg.seq_len
    flops = count_flops_per_token(cfg.model, cfg.seq_len)
    last = records[-1] if records else {}
    return {"run": run.name, "arch": run.arch, "task": run.task, "seq_len": run.seq_len,
            "seed": run.seed, "params": count_params(cfg.model), "glu_dim": cfg.model.glu_dim,
            "flops_per_token": flops, "steps": cfg.steps,
            "tokens": cfg.steps * tokens_per_step, "last_step": last.get("step", 0),
            "tokens_per_s": _median(records, "tokens_per_s"), "mfu": _median(records, "mfu"),
            "final_train_loss": last.get("loss"),
            "curve": curve(records, tokens_per_step, flops)}


def evaluate(run: Run, cfg: TrainConfig, eval_batches: int, mqar_rows: int) -> dict:
    """The run's results, its final weights evaluated (held-out set or MQAR grid)."""
    result = describe(run, cfg)
    score, mesh = run_eval.load_scorer(cfg)
    if run.task == "mqar":
        lengths = sorted({cfg.seq_len >> k for k in range(4)} - {0})  # Up to the rows'.
        result["mqar"] = recall.recall_grid(score, list(MQAR_PAIRS), lengths, mqar_rows)
    else:
        result["held_out"] = run_eval.held_out(cfg, score, mesh, eval_batches)
    return result


def write(run_dir: Path, result: dict) -> None:
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=1) + "\n")


def read(run_dir: Path) -> dict | None:
    path = run_dir / RESULT_FILE
    return json.loads(path.read_text()) if path.exists() else None
