"""A training run's held-out bits per byte at several row lengths: how its loss holds
past the rows it trained on (the quality study's length extrapolation, for any run).

    python -m benchmarks.quality.window_eval RUN_DIR --windows 256,1024,4096
    python -m benchmarks.quality.window_eval RUN_DIR --windows 256,4096 \
        --set model.softmax_logn_length=256   # the same weights, logn queries

The run's newest checkpoint scores the same held-out documents (its own split: the
files training never read, of at least ``--min-bytes``) at each window; every target
is scored once per window, so the windows differ only in how much context each
target sees (``tnl_jax.evaluation.documents``). Prints one table; ``--out`` writes it
as JSON too.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.quality.quality_runs import LONG_FILE_BYTES
from tnl_jax.checkpoints import run_dir as run_layout
from tnl_jax.evaluation import documents, run_eval
from tnl_jax.model.config import ModelConfig
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.training import config as train_config
from tnl_jax.training import resume

BATCH_TOKENS = 1 << 15  # Tokens per scoring batch.


def saved_train_config(run: str | Path) -> train_config.TrainConfig:
    """The config the run's newest checkpoint was saved with (without the records of
    its files, and without keys earlier versions saved that no longer exist), at
    ``run``: a run copied elsewhere is read where it is now."""
    saved = {k: v for k, v in run_layout.read_config(run).items()
             if k not in resume.RECORDS.values()}
    saved["model"] = ModelConfig.from_saved(saved["model"]).to_dict()
    values = {**resume.flat(saved), "run_dir": str(run)}
    return train_config.apply(train_config.TrainConfig(), values)


def evaluate(run: str | Path, windows: list[int], min_bytes: int = LONG_FILE_BYTES,
             max_docs: int | None = None, overrides: list[str] = ()) -> list[dict]:
    """Per window: ``{"window", "tokens", "bits_per_byte"}`` over the same targets;
    ``overrides`` (``KEY=VALUE``) change the saved config, not the weights."""
    cfg = train_config.apply(saved_train_config(run),
                             dict(train_config.parse_override(t) for t in overrides))
    score, _ = run_eval.load_scorer(cfg)
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.model)
    docs = documents.held_out_documents(cfg.data, tokenizer, cfg.eval_fraction, min_bytes)
    docs = docs[:max_docs]
    if not docs:
        raise ValueError(f"{run}: no held-out document of at least {min_bytes} bytes "
                         f"(expected a smaller --min-bytes)")
    rows = []
    for window in windows:
        summary = documents.summary(documents.score_windows(score, docs, window, BATCH_TOKENS))
        rows.append({"window": window, "tokens": summary["tokens"],
                     "bits_per_byte": summary["bits_per_byte"]})
    return rows


def table(rows: list[dict]) -> str:
    first = rows[0]["bits_per_byte"]
    lines = [f"| window | bits/byte | vs {rows[0]['window']} |", "|---|---|---|"]
    lines += [f"| {r['window']} | {r['bits_per_byte']:.4f} | "
              f"{r['bits_per_byte'] / first - 1:+.2%} |" for r in rows]
    return "\n".join(lines)


def windows_arg(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--windows {text!r}: expected comma-separated "
                                         "positive token counts, e.g. 256,1024,4096")
    return values


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a training run's directory")
    p.add_argument("--windows", type=windows_arg, required=True,
                   help="row lengths in tokens, comma-separated; the first is the baseline")
    p.add_argument("--min-bytes", type=int, default=LONG_FILE_BYTES,
                   help="held-out documents of at least this many bytes (long files)")
    p.add_argument("--max-docs", type=int, default=None, help="the first N documents only")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting changed for the evaluation, the weights kept (e.g. "
                        "model.softmax_logn_length=2048); repeatable")
    args = p.parse_args(argv)
    rows = evaluate(args.run, args.windows, args.min_bytes, args.max_docs, args.set)
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
