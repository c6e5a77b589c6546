"""Two processes with one GPU each, joined over NCCL by the README's multi-host recipe
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), against one process with
both GPUs: equal losses, one checkpoint, exact resume, and a two-GPU -> one-GPU resume.

    NCCL_NVLS_ENABLE=0 python -m benchmarks.scaling.two_process --out $OUT

On a machine with two GPUs, each run is ``train.py`` over mesh.context=2 (``--steps``
steps, a checkpoint every ``--steps // 2``): the sequence split across the processes,
so that both load the same rows, the rows of one process (with mesh.data=2 each
process loads rows of its own, and the global batch is not one process's); the
gradient is still reduced over both GPUs, through NCCL:
1. ``one process``: CUDA_VISIBLE_DEVICES=0,1, one process (the reference);
2. ``two processes``: CUDA_VISIBLE_DEVICES=0 and =1, one process each; the same losses
   (to ``--rtol``), the same steps checkpointed, once;
3. ``killed and rerun``: the two processes killed (SIGKILL) after the middle
   checkpoint, then started again: every loss exactly equal to run 2's;
4. ``resumed on one GPU``: run 1's directory cut back to its middle checkpoint and
   resumed by one process on one GPU (mesh.context=1): the later losses equal run 1's to
   ``--rtol`` (the reduction runs in another order);
5. ``two processes' checkpoint, one process``: run 3's directory resumed by one
   process is refused at once with ``ProcessCountChanged`` (each of the two saved the
   position of its own rows, ``process_<i>-of-2``, which one process cannot take over);
   the error names ``JAX_NUM_PROCESSES`` and ``init_from``.
Prints a table and writes ``two_process.json`` under ``--out``; exit status 1 if a
check fails. Exactness on a GPU assumes deterministic kernels: if a rerun differs,
run again with ``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` to tell XLA's atomics
(the embedding gradient's scatter-add) from a resume that is not exact.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ("--config tnl-385m model.decoder_layers=4 seq_len=2048 batch_size=8 eval_every=0 "
         "sample_tokens=0 log_every=1 warmup=2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run_dir: Path, gpus: list[str], args, extra: list[str] = ()) -> list[subprocess.Popen]:
    """``train.py`` over ``gpus``: one process for a group like ``["0,1"]``, one per
    entry for ``["0", "1"]`` (joined by the JAX_* variables)."""
    command = [sys.executable, str(ROOT / "train.py"), *args.model.split(), "mesh.data=1",
               "mesh.context=2",
               f"steps={args.steps}", f"checkpoint_every={args.steps // 2}",
               f"run_dir={run_dir}", *extra]
    env = {**os.environ}
    if len(gpus) > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
                   JAX_NUM_PROCESSES=str(len(gpus)))
    log = (run_dir.parent / f"{run_dir.name}.log").open("a")
    return [subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env={**env, **devices_env(visible, args.cpu),
                                  **({"JAX_PROCESS_ID": str(i)} if len(gpus) > 1 else {})})
            for i, visible in enumerate(gpus)]


def devices_env(visible: str, cpu: bool) -> dict[str, str]:
    """The GPUs a process sees; with ``--cpu``, as many fake CPU devices (a smoke test
    of this script without GPUs)."""
    if cpu:
        return {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(len(visible.split(",")))}
    return {"CUDA_VISIBLE_DEVICES": visible}


def wait(processes: list[subprocess.Popen], run_dir: Path, timeout: float) -> None:
    for p in processes:
        if p.wait(timeout=timeout) != 0:
            raise RuntimeError(f"{run_dir.name}: exit {p.returncode}; see {run_dir}.log")


def losses(run_dir: Path) -> dict[int, float]:
    """The last loss logged for each step."""
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def logged_step(run_dir: Path) -> int:
    return max(losses(run_dir), default=0) if (run_dir / "metrics.jsonl").exists() else 0


def checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def killed_and_rerun(run_dir: Path, args) -> None:
    """The two processes killed once the step after the middle checkpoint is logged."""
    processes = start(run_dir, ["0", "1"], args)
    deadline = time.time() + args.timeout
    while logged_step(run_dir) <= args.steps // 2:
        if time.time() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"{run_dir.name}: the step after the middle checkpoint "
                               f"never came; see {run_dir}.log")
        time.sleep(0.2)
    for p in processes:
        p.send_signal(signal.SIGKILL)
        p.wait()
    wait(start(run_dir, ["0", "1"], args), run_dir, args.timeout)


def resume_on_one_gpu(source: Path, run_dir: Path, middle: int, args) -> Path | str:
    """``source`` copied, cut back to its checkpoint at ``middle`` and resumed by one
    process on one GPU; the run directory, or the error's last line."""
    shutil.copytree(source, run_dir)
    for step in checkpoints(run_dir):
        if step > middle:
            shutil.rmtree(run_dir / "checkpoints" / str(step))
    try:
        wait(start(run_dir, ["0"], args, ["mesh.context=1"]), run_dir, args.timeout)
    except RuntimeError:
        lines = (run_dir.parent / f"{run_dir.name}.log").read_text().splitlines()
        stops = ("Error", "error", "ProcessCountChanged")  # train.py's stop: `name: Type: ...`
        return next((l for l in reversed(lines) if any(s in l for s in stops)), lines[-1])
    return run_dir


def compare(name: str, got: dict, reference: dict, steps, rtol: float) -> dict:
    worst = max(abs(got[s] - reference[s]) / abs(reference[s]) for s in steps)
    return {"check": name, "steps": list(steps), "max_rel_diff": worst,
            "ok": worst <= rtol and all(s in got for s in steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--model", default=MODEL, help="train.py's config and overrides")
    parser.add_argument("--cpu", action="store_true", help="fake CPU devices, no GPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    work = Path(args.out) / "two_process_runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    one, two, rerun = work / "one-process", work / "two-processes", work / "killed-rerun"
    wait(start(one, ["0,1"], args), one, args.timeout)
    wait(start(two, ["0", "1"], args), two, args.timeout)
    killed_and_rerun(rerun, args)
    middle = args.steps // 2
    resumed = resume_on_one_gpu(one, work / "resumed-one-gpu", middle, args)
    across = resume_on_one_gpu(rerun, work / "two-processes-resumed-by-one", middle, args)
    all_steps = range(1, args.steps + 1)
    rows = [compare("two processes = one process", losses(two), losses(one), all_steps,
                    args.rtol),
            {"check": "one checkpoint set, as one process saves", "ok":
             checkpoints(two) == checkpoints(one), "two": checkpoints(two),
             "one": checkpoints(one)},
            compare("killed and rerun = uninterrupted (exact)", losses(rerun), losses(two),
                    all_steps, 0.0),
            compare("2 GPUs -> 1 GPU resume = uninterrupted", losses(resumed), losses(one),
                    range(middle + 1, args.steps + 1), args.rtol)
            if isinstance(resumed, Path) else
            {"check": "2 GPUs -> 1 GPU resume", "ok": False, "error": resumed}]
    rows.append({"check": "two processes' checkpoint refused by one process, clearly",
                 "ok": isinstance(across, str) and "ProcessCountChanged" in across,
                 "result": "resumed" if isinstance(across, Path) else across})
    (Path(args.out) / "two_process.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}: "
              f"{ {k: v for k, v in r.items() if k not in ('check', 'ok')} }")
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
