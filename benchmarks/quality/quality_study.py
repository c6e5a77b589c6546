"""Long-context quality study (issue 21): TNL, softmax, hybrid and TNL with learned
decays at one width, depth and parameter count, trained on the same bytes.

    python -m benchmarks.quality.quality_study --budget-seconds 540          # train, evaluate
    python -m benchmarks.quality.quality_study --report                      # table and plots
    python -m benchmarks.quality.quality_study --smoke                       # CPU, < 90 s

A device call returns a limited number of files: bring the results back as one archive
without the checkpoints, ``tar czf $OUT/quality.tgz --exclude=checkpoints -C ROOT .``.
The 2026-12-01 study (benchmarks/RESULTS.md) ran ``--tokens 25e6 --seeds 0``.

Each run is a ``train.py`` run directory under ``--root``: rerunning with the same
arguments resumes unfinished runs from their checkpoints and skips finished ones (a
``quality.json`` beside them), so the study spreads over device calls. At
``--budget-seconds`` the running run is asked to stop (SIGTERM: it saves and exits)
and no new run starts. A run that fails (say a non-finite loss) is reported and the
study goes on.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

if "--smoke" in sys.argv:  # Tiny programs: LLVM -O0 compiles them a third faster (as the tests).
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} " \
                              "--xla_backend_optimization_level=0"
from benchmarks.quality import quality_report  # noqa: E402
from benchmarks.quality import quality_results  # noqa: E402
from benchmarks.quality.quality_runs import ARCHS, Run, Scale, matched_glu, runs, train_cfg  # noqa: E402
from tnl_jax.checkpoints import run_dir as run_layout  # noqa: E402
from tnl_jax.training.loop import main as train  # noqa: E402

SMOKE = Scale(width=32, layers=2, heads=2, glu_dim=64, tokens=6 * 4 * 256, batch_tokens=4 * 256,
              rows=(256,), seeds=(0,), archs=("tnl", "softmax"), lr=3e-3, dtype="float32",
              evals=2, eval_batches=1, mqar_tokens=2 * 4 * 128, mqar_len=128)


class Deadline:
    """Stops the study at ``budget`` seconds: SIGTERM to this process every few seconds
    while a run trains (its loop saves and exits on the first it sees)."""

    def __init__(self, budget: float | None):
        self.end = None if budget is None else time.monotonic() + budget
        self.training = threading.Event()
        signal.signal(signal.SIGTERM, self._external)
        self.stopped = False
        if self.end is not None:
            threading.Thread(target=self._watch, daemon=True).start()

    def _external(self, signum, frame) -> None:
        self.stopped = True

    def passed(self) -> bool:
        return self.stopped or (self.end is not None and time.monotonic() >= self.end)

    def _watch(self) -> None:
        while True:
            time.sleep(2)
            if self.passed() and self.training.is_set():
                os.kill(os.getpid(), signal.SIGTERM)

    def run(self, fn, *args):
        """``fn(*args)`` marked as training; the study's own SIGTERM handler after."""
        self.training.set()
        try:
            return fn(*args)
        finally:
            self.training.clear()
            signal.signal(signal.SIGTERM, self._external)


def plan(scale: Scale) -> dict[str, dict]:
    """Per architecture: its MLP width and parameter count, matched to TNL's."""
    out = {}
    for arch in scale.archs:
        glu, params, target = matched_glu(scale, arch)
        out[arch] = {"glu_dim": glu, "params": params, "tnl_params": target,
                     "difference": params / target - 1}
    return out


def finished(cfg) -> bool:
    steps = run_layout.complete_steps(cfg.run_dir)
    return bool(steps) and steps[0] >= cfg.steps


def do_run(run: Run, scale: Scale, glu: int, args, deadline: Deadline) -> str:
    """Train (or resume) one run, then evaluate it; what happened, in a word."""
    cfg = train_cfg(run, scale, glu, args.root, args.set)
    done = quality_results.read(Path(cfg.run_dir))
    if done and done.get("last_step") == cfg.steps and "error" not in done:
        return "done before"
    if not finished(cfg):
        try:
            deadline.run(train, cfg)
        except Exception as error:  # A failed run is a result: say so and go on.
            traceback.print_exc()
            result = {**quality_results.describe(run, cfg), "error": repr(error)}
            quality_results.write(Path(cfg.run_dir), result)
            return "failed"
        if not finished(cfg):
            return "stopped (budget)"
    result = quality_results.evaluate(run, cfg, args.eval_batches, args.mqar_rows)
    quality_results.write(Path(cfg.run_dir), result)
    return "evaluated"


def study(scale: Scale, args) -> None:
    deadline = Deadline(args.budget_seconds)
    sizes = plan(scale)
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "plan.json").write_text(json.dumps(
        {"scale": dataclasses.asdict(scale), "archs": sizes}, indent=1) + "\n")
    for arch, size in sizes.items():
        print(f"{arch:12s} glu_dim {size['glu_dim']:5d}  {size['params'] / 1e6:8.3f}M "
              f"parameters ({size['difference']:+.2%} against TNL)", flush=True)
    for run in runs(scale):
        if args.only and not any(part in run.name for part in args.only.split(",")):
            continue
        if deadline.passed():
            print(f"budget spent: {run.name} and later runs left for the next call")
            break
        start = time.monotonic()
        status = do_run(run, scale, sizes[run.arch]["glu_dim"], args, deadline)
        print(f"== {run.name}: {status} ({time.monotonic() - start:.0f} s)", flush=True)


def scale_from(args) -> Scale:
    if args.smoke:
        return SMOKE
    return Scale(width=args.width, layers=args.layers, heads=args.heads or args.width // 64,
                 glu_dim=args.glu_dim or round(2.75 * args.width / 8) * 8,
                 tokens=args.tokens, batch_tokens=args.batch_tokens,
                 rows=tuple(int(r) for r in args.rows.split(",")),
                 seeds=tuple(int(s) for s in args.seeds.split(",")),
                 archs=tuple(args.archs.split(",")), lr=args.lr, dtype=args.dtype,
                 evals=args.evals, mqar_tokens=args.mqar_tokens, mqar_len=args.mqar_len)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=None,
                   help="run directories (default benchmarks/results/quality, smoke: /tmp)")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=0, help="default width / 64")
    p.add_argument("--glu-dim", type=int, default=0, help="TNL's; default 2.75 x width")
    p.add_argument("--tokens", type=float, default=300e6, help="training tokens per run")
    p.add_argument("--batch-tokens", type=int, default=1 << 17, help="tokens per step")
    p.add_argument("--rows", default="2048,16384", help="row lengths (tokens)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--archs", default=",".join(ARCHS), help=f"of {', '.join(ARCHS)}")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--evals", type=int, default=20, help="held-out points per loss curve")
    p.add_argument("--eval-batches", type=int, default=4, help="final held-out batches")
    p.add_argument("--mqar-tokens", type=float, default=20e6, help="0: no MQAR runs")
    p.add_argument("--mqar-len", type=int, default=2048)
    p.add_argument("--mqar-rows", type=int, default=64, help="examples per recall point")
    p.add_argument("--budget-seconds", type=float, default=None)
    p.add_argument("--only", default="", help="comma-separated parts of run names to run")
    p.add_argument("--set", action="append", default=[],
                   help="extra key=value for every run (e.g. model.remat=op_io)")
    p.add_argument("--report", action="store_true", help="only the table and plots")
    p.add_argument("--smoke", action="store_true", help="tiny CPU study, end to end")
    args = p.parse_args(argv)
    if args.root is None:
        args.root = Path("/tmp/quality-smoke" if args.smoke else "benchmarks/results/quality")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if not args.report:
        study(scale_from(args), args)
    quality_report.write(args.root)


if __name__ == "__main__":
    main()
