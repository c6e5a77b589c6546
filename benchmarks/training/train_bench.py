"""The training step of TNL, softmax and hybrid models of one width at several row
lengths, tokens per step fixed: tokens/s, MFU, memory — the paper's Table 1, measured.

    python -m benchmarks.training.train_bench --preset tnl-385m --archs tnl,softmax,hybrid \\
        --rows 2048,8192,32768,131072 --tokens 131072 --remat op_io --out $OUT

Each setting builds the trainer (``tnl_jax.training.loop.Trainer``) on one device,
compiles its step, runs ``--warmup`` steps, then times ``--steps`` steps on one
synthetic batch (random tokens, one document per row). Memory is the compiled step's
own (arguments + temporaries + outputs not aliased to arguments: what it needs to
run), and the device's peak since the process started. ``--extra`` adds settings
by ``preset:arch:rows:remat[:tokens]``, e.g. ``tnl-1b:tnl:8192:none:32768``.
``--set`` gives every setting training-config overrides (``key=value``, comma-separated),
e.g. ``--set model.scan_unroll=24,loss_kernel=fused``.
``--profile arch:rows`` also prints where one step's device time goes
(``profiling.kernel_times``) and by the functions of ours that made each kernel
(``hlo_sources``). ``--anchor fla`` first trains FLA's RetNet and Transformer
at the TNL and softmax settings' shapes in their own process (``training/fla_rows.py``)
and adds a table of ours beside theirs, e.g. (about 8 minutes on an H100)

    python -m benchmarks.training.train_bench --preset tnl-385m --archs tnl,softmax \\
        --rows 2048,8192,32768 --tokens 32768 --remat projections --anchor fla --out $OUT
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import gzip
import json
import os
import shlex
import time

import jax
import numpy as np

from benchmarks.common.bench_args import colon_fields, comma_list, positive_int
from benchmarks.common.hlo_sources import format_parts, instruction_sources, times_by_part
from benchmarks.common.profiling import format_table, kernel_times
from benchmarks.common.results_io import read_json
from benchmarks.common.timing import is_out_of_memory
from benchmarks.training import fla_rows
from tnl_jax.model.counting import count_flops_per_token, count_params
from tnl_jax.training import config as train_config
from tnl_jax.training import metrics, sharding
from tnl_jax.training.loop import Trainer

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Setting:
    preset: str
    arch: str
    rows: int         # tokens per row
    remat: str
    tokens: int       # tokens per step
    overrides: tuple[str, ...] = ()  # more training-config key=value

    @property
    def name(self) -> str:
        length = f"{self.rows // 1024}K" if self.rows % 1024 == 0 else str(self.rows)
        return " ".join([f"{self.preset} {self.arch} {self.tokens // self.rows} x {length} "
                         f"remat {self.remat}", *self.overrides])


def synthetic_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab, (batch, seq + 1), dtype=np.int32)
    return {"input_ids": tokens[:, :-1], "targets": tokens[:, 1:],
            "segment_ids": np.ones((batch, seq), np.int32),
            "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
            "loss_mask": np.ones((batch, seq), np.float32)}


def program_bytes(compiled) -> int:
    """What the compiled step needs on the device: arguments, temporaries, and outputs
    that do not reuse an argument's buffer."""
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes
            - m.alias_size_in_bytes)


def build(s: Setting):
    cfg = train_config.load(s.preset, [
        f"model.architecture={s.arch}", f"model.remat={s.remat}", "model.dtype=bfloat16",
        f"seq_len={s.rows}", f"batch_size={s.tokens // s.rows}", "warmup=2", "steps=1000",
        *s.overrides])
    mesh = sharding.make_mesh(1, 1, 1, 1)
    trainer = Trainer(cfg, mesh)
    batch = sharding.global_batch(
        synthetic_batch(cfg.batch_size, cfg.seq_len, cfg.model.vocab_size), mesh)
    with jax.set_mesh(mesh):
        compiled = trainer.jitted_train_step.lower(trainer.initial_state, batch).compile()
    return cfg, trainer, batch, compiled


def measure(s: Setting, warmup: int, steps: int, profile: bool) -> dict:
    row = {"setting": s.name, **dataclasses.asdict(s), "device": jax.devices()[0].device_kind}
    try:
        cfg, trainer, batch, compiled = build(s)
        state = trainer.initial_state
        for _ in range(warmup):
            state, stats = compiled(state, batch)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, stats = compiled(state, batch)
        jax.block_until_ready(state)
        seconds = (time.perf_counter() - start) / steps
    except Exception as error:  # Out of memory at compile or run time: a row that says so.
        text = str(error)
        return {**row, "error": "out of memory" if is_out_of_memory(text) else text[:300]}
    flops = count_flops_per_token(cfg.model, s.rows)
    rate = s.tokens / seconds
    row.update(params_m=count_params(cfg.model) / 1e6, step_s=seconds, tokens_per_s=rate,
               mfu=metrics.mfu(rate, flops, 1), gflop_per_token=flops / 1e9,
               program_gib=program_bytes(compiled) / GIB,
               peak_gib=(metrics.peak_memory_bytes() or 0) / GIB, loss=float(stats["loss"]))
    if profile:
        held = [state]  # The step donates its state: each call takes the last one's.

        def one_step():
            held[0], step_stats = compiled(held[0], batch)
            return step_stats

        times = kernel_times(one_step, repeats=2)
        state = held[0]
        row["profile"] = times
        hlo = compiled.as_text()
        if os.environ.get("OUT"):  # To name the kernels again later (hlo_sources).
            with gzip.open(os.path.join(os.environ["OUT"], f"hlo_{s.arch}_{s.rows}.txt.gz"),
                           "wt") as f:
                f.write(hlo)
        parts = times_by_part(times, instruction_sources(hlo))
        row["profile_parts"] = [[p.part, p.phase, ms] for p, ms in parts.items()]
        print(format_parts(parts), flush=True)
        print(format_table(times, top=30), flush=True)
    return row


def parse_settings(args) -> list[Setting]:
    settings = [Setting(args.preset, arch, rows, args.remat, max(args.tokens, rows),
                        tuple(args.set))
                for arch in args.archs.split(",") if arch
                for rows in args.rows]
    for preset, arch, rows, remat, *tokens in args.extra:
        settings.append(Setting(preset, arch, rows, remat, tokens[0] if tokens else args.tokens,
                                tuple(args.set)))
    return settings


def table(rows: list[dict]) -> str:
    key = lambda r, arch: (r["preset"], arch, r["rows"], r["tokens"], r["remat"])
    by_key = {key(r, r["arch"]): r for r in rows if "tokens_per_s" in r}
    lines = ["| setting | tokens/s | × softmax | MFU | GFLOP/token | program GiB | "
             "× softmax mem |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | {r['error'][:60]} | | | | | |")
            continue
        ref = by_key.get(key(r, "softmax"))
        speed = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}" if ref else "-"
        mem = f"{r['program_gib'] / ref['program_gib']:.2f}" if ref else "-"
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['setting']} | {r['tokens_per_s'] / 1e3:.1f}K | {speed} | {mfu} | "
                     f"{r['gflop_per_token']:.2f} | {r['program_gib']:.1f} | {mem} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for arch in dict.fromkeys(r["arch"] for r in rows):
        points = sorted((r["rows"], r["tokens_per_s"]) for r in rows  # The main sweep only.
                        if r["arch"] == arch and "tokens_per_s" in r and r["preset"] == rows[0]["preset"]
                        and (r["remat"], r["tokens"]) == (rows[0]["remat"], rows[0]["tokens"]))
        if points:
            ax.plot([p[0] for p in points], [p[1] / 1e3 for p in points], "o-", label=arch)
    ax.set(xscale="log", xlabel="tokens per row", ylabel="training tokens/s (thousands)",
           title=f"{rows[0]['preset']}, one {rows[0]['device']}, "
                 f"{rows[0]['tokens'] // 1024}K tokens per step")
    ax.set_xticks(sorted({r["rows"] for r in rows}), [f"{r // 1024}K" for r in
                                                       sorted({r["rows"] for r in rows})])
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tnl-385m")
    parser.add_argument("--archs", default="tnl,softmax,hybrid")
    parser.add_argument("--rows", default="2048,8192,32768,131072",
                        type=comma_list(positive_int))
    parser.add_argument("--tokens", type=int, default=131072, help="tokens per step")
    parser.add_argument("--remat", default="op_io")
    parser.add_argument("--extra", default="", help="preset:arch:rows:remat[:tokens],...",
                        type=comma_list(colon_fields("preset:arch:rows:remat:tokens",
                                                     ints=(2, 4), optional=1)))
    parser.add_argument("--set", default="", type=comma_list(str),
                        help="training-config key=value overrides for every setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--profile", default=None, help="arch:rows of the setting to profile",
                        type=colon_fields("arch:rows", ints=(1,)))
    parser.add_argument("--out", default=os.environ.get("OUT"))
    parser.add_argument("--from-json", help="only remake the table and plot of a saved run")
    parser.add_argument("--anchor-json", help="with --from-json: a saved run's FLA rows "
                        "(train_bench_fla.json), for the peer table")
    parser.add_argument("--anchor", choices=["fla"], help="also train FLA's RetNet, Transformer")
    parser.add_argument("--anchor-args", default="",
                        help="more fla_anchor_torch.py arguments, e.g. '--no-compile'")
    args = parser.parse_args()
    if args.anchor_json and not args.from_json:
        parser.error(f"--anchor-json {args.anchor_json}: only with --from-json (the saved "
                     "run of ours to set beside it)")
    for flag, path in (("--from-json", args.from_json), ("--anchor-json", args.anchor_json)):
        if path and not os.path.isfile(path):
            parser.error(f"{flag} {path}: no such file (expected a saved train_bench json)")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    if args.from_json:
        rows = read_json(args.from_json)
        print(table(rows))
        if args.out:
            plot(rows, os.path.join(args.out, "train_bench.png"))
        if args.anchor_json:
            fla_rows.write_peer_table(rows, read_json(args.anchor_json), args.out)
        return
    anchors = fla_rows.anchor_rows(  # Before JAX takes the GPU.
        parse_settings(args), max(args.warmup, 3), args.steps,
        shlex.split(args.anchor_args)) if args.anchor else []
    fla_rows.write_anchor_rows(anchors, args.out)
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    rows = []
    for s in parse_settings(args):
        profile = args.profile == (s.arch, s.rows)
        rows.append(measure(s, args.warmup, args.steps, profile))
        gc.collect()  # The setting's trainer and state, before the next one's.
        print({k: v for k, v in rows[-1].items() if k != "profile"}, flush=True)
    text = table(rows)
    if args.out:
        with open(os.path.join(args.out, "train_bench.json"), "w") as f:
            json.dump(rows, f, indent=1)
        with open(os.path.join(args.out, "train_bench.md"), "w") as f:
            f.write(text + "\n")
        plot(rows, os.path.join(args.out, "train_bench.png"))
    print(text)
    if anchors:
        fla_rows.write_peer_table(rows, anchors, args.out)


if __name__ == "__main__":
    main()
