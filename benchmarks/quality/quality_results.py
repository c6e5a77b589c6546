"""One run's results (``quality.json`` in its directory): size, cost, throughput, the
held-out curve from its ``metrics.jsonl`` (every point the whole held-out set), and
the metrics of ``tnl_jax.evaluation`` on its final weights:

- language runs: every held-out document scored at each of ``WINDOWS`` (per-document
  sums by position bucket, so the report can pair architectures document by document
  and split validation from test); passkey accuracy for main (seed 0) and ext runs;
- MQAR runs: recall in distribution and past the training lengths.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import jax

from benchmarks.common.results_io import read_json
from benchmarks.quality.quality_runs import EXTENSIONS, LONG_FILE_BYTES, Run, Scale
from tnl_jax.evaluation import bootstrap, documents, passkey, recall, run_eval
from tnl_jax.evaluation.positions import bucket_names
from tnl_jax.model.counting import count_flops_per_token, count_params
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.training.config import TrainConfig
from tnl_jax.training.metrics import read_metrics

RESULT_FILE = "quality.json"
BUCKETS = bucket_names()  # Position buckets of the tables: 0-512 ... 16384+.


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
    return {"run": run.name, "phase": run.phase, "arch": run.arch, "task": run.task,
            "lr": run.lr, "seed": run.seed, "seq_len": cfg.seq_len, "warmup": cfg.warmup,
            "device": jax.devices()[0].device_kind,
            "params": count_params(cfg.model), "glu_dim": cfg.model.glu_dim,
            "flops_per_token": flops, "steps": cfg.steps,
            "tokens": cfg.steps * tokens_per_step, "last_step": last.get("step", 0),
            "tokens_per_s": _median(records, "tokens_per_s"), "mfu": _median(records, "mfu"),
            "final_train_loss": last.get("loss"),
            "curve": curve(records, tokens_per_step, flops)}


def held_out_docs(cfg: TrainConfig) -> list[documents.Document]:
    """The run's held-out documents (its own rule: long stdlib files, hashed)."""
    return documents.held_out_documents(cfg.data, get_tokenizer(cfg.tokenizer, cfg.model),
                                        cfg.eval_fraction, LONG_FILE_BYTES)


def passkey_filler(docs: list[documents.Document]) -> bytes:
    """The held-out documents' bytes end to end (BOS dropped): the haystack, never
    trained on."""
    return b"".join(bytes(d.tokens[1:].astype("uint8")) for d in docs)


def language_metrics(run: Run, cfg: TrainConfig, scale: Scale, score) -> dict:
    """Documents at every window (a sweep run: its training rows only, the validation
    loss) and, for main seed 0 and the extensions (ext, pk), passkey accuracy."""
    docs = held_out_docs(cfg)
    windows = (cfg.seq_len,) if run.phase == "sweep" else scale.windows
    out = {"windows": [documents.score_windows(score, docs, w, scale.eval_batch_tokens)
                       .to_dict() for w in windows]}
    if run.phase in EXTENSIONS or (run.phase == "main" and run.seed == 0):
        bos = get_tokenizer(cfg.tokenizer, cfg.model).bos_id
        out["passkey"] = passkey.accuracy(score, passkey_filler(docs), scale.passkey_lengths,
                                          scale.passkey_rows, bos)
    return out


def current_passkey(result: dict) -> list[dict]:
    """The run's passkey cells asked with today's question (``passkey.QUESTION``); cells
    of an earlier question are not comparable and are left out."""
    return [p for p in result.get("passkey", []) if p.get("question") == passkey.QUESTION]


def evaluate(run: Run, cfg: TrainConfig, scale: Scale) -> dict:
    """The run's results, its final weights evaluated."""
    result = describe(run, cfg)
    score, _ = run_eval.load_scorer(cfg)
    if run.task == "mqar":
        result["mqar"] = recall.evaluate(score, cfg.seq_len, cfg.model.vocab_size,
                                         scale.mqar_eval_rows)
    else:
        result.update(language_metrics(run, cfg, scale, score))
    return result


def _half(scores: documents.WindowScores, validation: bool) -> documents.WindowScores:
    """The documents of one half (``documents.is_validation``)."""
    rows = [i for i, k in enumerate(scores.keys) if documents.is_validation(k) == validation]
    return documents.WindowScores(scores.window, [scores.keys[i] for i in rows],
                                  scores.loss[rows], scores.count[rows], scores.edges)


def window(result: dict, size: int, validation: bool = False) -> documents.WindowScores | None:
    """The run's scores at window ``size`` on one half, or None."""
    for d in result.get("windows", []):
        if d["window"] == size:
            return _half(documents.WindowScores.from_dict(d), validation)
    return None


def bpb(scores: documents.WindowScores | None) -> float:
    return math.nan if scores is None else bootstrap.bits_per_byte(scores.loss, scores.count)


def write(run_dir: Path, result: dict) -> None:
    (run_dir / RESULT_FILE).write_text(json.dumps(result) + "\n")


def read(run_dir: Path) -> dict | None:
    """The run's results (``quality.json``, or gzipped as archived), or None."""
    for path in (run_dir / RESULT_FILE, run_dir / f"{RESULT_FILE}.gz"):
        if path.exists():
            return read_json(path)
    return None
