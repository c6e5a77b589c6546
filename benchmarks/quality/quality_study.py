"""The quality study: TNL, TNL with learned decays, two hybrids and two softmax
baselines at one width, depth and parameter count, trained on the same bytes; the
protocol is docs/QUALITY.md, the phases ``quality_runs``'s docstring.

    python -m benchmarks.quality.quality_study --phases sweep,mqar --budget-seconds 540
    python -m benchmarks.quality.quality_study --phases main,ext --budget-seconds 540
    python -m benchmarks.quality.quality_study --report          # every table and plot
    python -m benchmarks.quality.quality_study --smoke           # CPU, every phase, tiny

Each run is a ``train.py`` run directory under ``--root``: rerunning with the same
arguments resumes unfinished runs from their checkpoints and skips finished ones (a
``quality.json`` beside them), so the study spreads over device calls and sessions.
A run whose architecture's finished runs say it would not end inside the budget left
is not started (``expected_seconds``): a run cut by the budget is lost when its
checkpoint stays on a device machine. ``main`` and ``ext`` runs use the learning rate
the sweep chose per architecture, so they start only for architectures whose sweep is
complete. At ``--budget-seconds`` the
running run is asked to stop (SIGTERM: it saves and exits) and no new run starts. A
run that fails (say a non-finite loss) is reported and the study goes on. Compiled
programs are cached under ``ROOT/.jax-cache``: the seeds and rates of an architecture
compile once.

A device call returns a limited number of files: bring the results back as one
archive without the checkpoints,
``tar czf $OUT/quality.tgz --exclude=checkpoints --exclude=.jax-cache -C ROOT .``.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

if "--smoke" in sys.argv:  # Tiny programs: LLVM -O0 compiles them a third faster (as the tests).
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} " \
                              "--xla_backend_optimization_level=0"
import jax  # noqa: E402

from benchmarks.common.bench_args import comma_list, positive_float, positive_int  # noqa: E402
from benchmarks.quality import quality_report, quality_results  # noqa: E402
from benchmarks.quality import quality_runs as runs  # noqa: E402
from benchmarks.quality.quality_runs import PHASES, Run, Scale  # noqa: E402
from tnl_jax.checkpoints import run_dir as run_layout  # noqa: E402
from tnl_jax.training.loop import main as train  # noqa: E402

SMOKE = Scale(width=32, layers=2, heads=2, glu_dim=64, archs=("tnl", "llama"),
              batch_tokens=4 * 256, rows=256, lrs=(3e-3,), sweep_tokens=4 * 4 * 256,
              tokens=4 * 4 * 256, seeds=(0,), ext_rows=512, ext_tokens=2 * 4 * 256,
              pk_tokens=2 * 4 * 256, pk_seeds=(0,),
              warmup_steps=2, dtype="float32", evals=2, eval_fraction=0.03,
              mqar_archs=("tnl", "hybrid"), mqar_width=64, mqar_rows=127, mqar_batch=4,
              mqar_steps=4, mqar_lrs=(3e-3,), windows=(256, 512), passkey_lengths=(512,),
              eval_batch_tokens=1024, passkey_rows=2, mqar_eval_rows=4)


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

    def left(self) -> float | None:
        """Seconds of the budget left (None: no budget)."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())

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


def held_out_batches(scale: Scale) -> int:
    """Batches of ``batch_tokens`` that hold the whole held-out set once (at least): the
    training-time evaluation then reads every held-out document at every point."""
    cfg = runs.train_cfg(Run("main", scale.archs[0], 1e-3), scale, scale.glu_dim, Path("/tmp"))
    tokens = sum(len(d.tokens) for d in quality_results.held_out_docs(cfg))
    return max(1, math.ceil(tokens / scale.batch_tokens))


# Compile, curve points and the final evaluation, beyond the training steps (the
# 2026-12-06 H100 runs: 94 s for a main run, 60 s for an extension, 65 s for a sweep run).
OVERHEAD_S = {"sweep": 70, "main": 110, "ext": 80, "pk": 80}


def expected_seconds(run: Run, scale: Scale, root: Path, steps_done: int = 0) -> float | None:
    """A guess of what is left of ``run``: its remaining tokens at the median tokens/s
    of its architecture's finished runs of the same phase (an extension without one:
    at its other extensions' rate, their rows being as long, else at half the 2K rate;
    softmax's 16K rows ran at 0.62x its 2K rate), plus ``OVERHEAD_S``. None without a
    finished run to go by, or for MQAR: it starts."""
    if run.task != "lm":
        return None
    done = [r for r in quality_report.load(root) if r.get("arch") == run.arch
            and r.get("task") == "lm" and r.get("tokens_per_s") and "error" not in r]
    same = [r["tokens_per_s"] for r in done if r["phase"] == run.phase]
    long_rows = [r["tokens_per_s"] for r in done if r["phase"] in runs.EXTENSIONS]
    short = [r["tokens_per_s"] for r in done if r["phase"] not in runs.EXTENSIONS]
    if same:
        rate = statistics.median(same)
    elif long_rows and run.phase in runs.EXTENSIONS:
        rate = statistics.median(long_rows)
    elif short:
        rate = statistics.median(short) * (0.5 if run.phase in runs.EXTENSIONS else 1.0)
    else:
        return None
    steps = scale.steps(scale.phase_tokens(run.phase))
    left = max(0, steps - steps_done) * scale.batch_tokens
    return left / rate + OVERHEAD_S[run.phase]


def finished(cfg) -> bool:
    steps = run_layout.complete_steps(cfg.run_dir)
    return bool(steps) and steps[0] >= cfg.steps


def do_run(run: Run, scale: Scale, args, deadline: Deadline, eval_batches: int) -> str:
    """Train (or resume) one run, then evaluate it; what happened, in a word."""
    done = quality_results.read(args.root / run.name)
    if done and done.get("last_step") == done.get("steps") and "error" not in done:
        return "done before"  # A failed run (say out of memory) is tried again.
    source = args.root / runs.ext_source(run).name
    if (run.phase in runs.EXTENSIONS and not run_layout.complete_steps(args.root / run.name)
            and not run_layout.complete_steps(source)):
        return (f"skipped: {source.name} has no checkpoint here (a device call brings no "
                f"checkpoint back: run its main run and this extension in one call)")
    need = expected_seconds(run, scale, args.root, max(
        run_layout.complete_steps(args.root / run.name) or [0]))
    left = deadline.left()
    if need is not None and left is not None and need > left:
        return (f"not started: about {need:.0f} s needed, {left:.0f} s of the budget left "
                f"(a run cut by the budget is lost with its checkpoint)")
    glu = runs.matched_glu(scale, run.arch)[0] if run.task == "lm" else scale.glu_dim
    cfg = runs.train_cfg(run, scale, glu, args.root, args.set, eval_batches)
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
    quality_results.write(Path(cfg.run_dir), quality_results.evaluate(run, cfg, scale))
    return "evaluated"


def phase_runs(phase: str, scale: Scale, root: Path) -> list[Run]:
    if phase == "sweep":  # The grid, then one extension per architecture at a time.
        extend = [Run("sweep", arch, quality_report.sweep_choice(scale, root, arch)[1])
                  for arch in scale.archs]
        grid = runs.sweep_runs(scale)
        return grid + [r for r in extend if r.lr is not None and r not in grid]
    if phase == "mqar":
        return runs.mqar_runs(scale)
    chosen = quality_report.chosen_lrs(scale, root)
    missing = [a for a in scale.archs if a not in chosen]
    if missing:
        print(f"{phase}: no complete sweep yet for {', '.join(missing)}: left out")
    if phase.startswith("main+"):
        return runs.main_and_ext_runs(scale, chosen, tuple(phase.split("+")[1:]))
    if phase in runs.EXTENSIONS:
        return runs.ext_runs(scale, chosen, phase)
    return runs.main_runs(scale, chosen)


def study_phases(phases: list[str]) -> list[str]:
    """The phases in order; ``main`` and the extensions asked (``ext``, ``pk``) together
    become ``main+ext+pk`` (each extension right after its source run, on the same
    machine)."""
    extensions = [p for p in phases if p in runs.EXTENSIONS]
    if "main" in phases and extensions:
        phases = [p for p in phases if p not in runs.EXTENSIONS]
        phases[phases.index("main")] = "+".join(["main", *extensions])
    return phases


def resolve_kept(only: str, scale: Scale, root: Path) -> str:
    """``--only`` with each ``lrkept`` replaced by the rate the sweep kept for the part's
    architecture (``main-hybrid8-qk-lrkept-s2``), so one device call can run a sweep and
    then the seed that follows from it."""
    parts = []
    for part in filter(None, only.split(",")):
        if "-lrkept" in part:
            head = part.split("-lrkept")[0]
            phase, _, rest = head.partition("-")
            arch = rest if phase in PHASES else head  # "main-hybrid8-qk" or "hybrid8-qk"
            lr = quality_report.sweep_choice(scale, root, arch)[0] if arch in runs.ARCHS else None
            if lr is None:
                nearest = [a for a in difflib.get_close_matches(arch, runs.ARCHS, 1) if a != arch]
                hint = f"; nearest: {nearest[0]}" if nearest else ""
                raise SystemExit(f"--only {part}: no kept rate for architecture {arch!r} "
                                 f"(expected one of {', '.join(runs.ARCHS)} with a complete "
                                 f"sweep under --root{hint})")
            part = part.replace("-lrkept", f"-lr{lr:g}")
        parts.append(part)
    return ",".join(parts)


def study(scale: Scale, args) -> None:
    deadline = Deadline(args.budget_seconds)
    args.root.mkdir(parents=True, exist_ok=True)
    args.only = resolve_kept(args.only, scale, args.root)
    jax.config.update("jax_compilation_cache_dir", str(args.root / ".jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    eval_batches = held_out_batches(scale)
    print(f"held-out set: {eval_batches} batches of {scale.batch_tokens} tokens per curve point")
    for arch, size in runs.plan(scale).items():
        print(f"{arch:12s} glu_dim {size['glu_dim']:5d}  {size['params'] / 1e6:8.3f}M "
              f"parameters ({size['difference']:+.2%} against TNL)", flush=True)
    for phase in study_phases(args.phases):
        for run in phase_runs(phase, scale, args.root):
            if args.only and not any(part in run.name for part in args.only.split(",")):
                continue
            if deadline.passed():
                print(f"budget spent: {run.name} and later runs left for the next call")
                return
            start = time.monotonic()
            status = do_run(run, scale, args, deadline, eval_batches)
            print(f"== {run.name}: {status} ({time.monotonic() - start:.0f} s)", flush=True)


def scale_from(args) -> Scale:
    if args.smoke:
        return SMOKE
    changes = {"archs": tuple(args.archs.split(",")) if args.archs else None,
               "lrs": tuple(args.lrs) or None, "seeds": tuple(args.seeds) or None,
               "tokens": args.tokens, "sweep_tokens": args.sweep_tokens,
               "ext_tokens": args.ext_tokens, "pk_tokens": args.pk_tokens,
               "mqar_steps": args.mqar_steps,
               "mqar_lrs": tuple(args.mqar_lrs) or None}
    return dataclasses.replace(Scale(), **{k: v for k, v in changes.items() if v is not None})


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=None,
                   help="run directories (default benchmarks/results/quality, smoke: /tmp)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"of {', '.join(PHASES)}")
    p.add_argument("--archs", default="", help=f"of {', '.join(runs.ARCHS)} (default all)")
    p.add_argument("--lrs", default=[], type=comma_list(float),
                   help="the sweep's learning rates (default 1e-3,2e-3,4e-3)")
    p.add_argument("--seeds", default=[], type=comma_list(int), help="main seeds (default 0,1,2)")
    p.add_argument("--tokens", type=positive_float, default=None,
                   help="main tokens per run (100e6)")
    p.add_argument("--sweep-tokens", type=positive_float, default=None, help="(25e6)")
    p.add_argument("--ext-tokens", type=positive_float, default=None, help="16K extension (25e6)")
    p.add_argument("--pk-tokens", type=positive_float, default=None,
                   help="passkey fine-tune (100e6)")
    p.add_argument("--mqar-steps", type=positive_int, default=None, help="(3000)")
    p.add_argument("--mqar-lrs", default=[], type=comma_list(float), help="(3e-4,1e-3,3e-3)")
    p.add_argument("--budget-seconds", type=positive_float, default=None)
    p.add_argument("--only", default="",
                   help="comma-separated parts of run names to run; lrkept in a part is the "
                        "rate its architecture's sweep kept (main-tnl-lrkept-s2)")
    p.add_argument("--set", action="append", default=[],
                   help="extra key=value for every run (e.g. model.remat=op_io)")
    p.add_argument("--report", action="store_true", help="only the tables and plots")
    p.add_argument("--smoke", action="store_true", help="tiny CPU study, every phase")
    args = p.parse_args(argv)
    args.phases = args.phases.split(",")
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        p.error(f"--phases: unknown {unknown}, expected of {PHASES}")
    if args.root is None:
        args.root = Path("/tmp/quality-smoke" if args.smoke else "benchmarks/results/quality")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    scale = scale_from(args)
    if not args.report:
        study(scale, args)
    quality_report.write(args.root, scale)


if __name__ == "__main__":
    main()
