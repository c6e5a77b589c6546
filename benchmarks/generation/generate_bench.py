"""Generation speed against the memory floor: prefill tokens/s, and decode ms/token at
several batch sizes and contexts, for TNL and the softmax baseline of the same width
and depth, each beside its floor (``decode_floor.py``: the bytes one step must move
over the copy bandwidth measured here; beside it the device's data-sheet bandwidth from
tnl_jax's one table of device peaks, ``metrics.DEVICE_PEAKS``).

GPU (tnl-1b, random bf16 weights; ``--anchor llama`` first runs Hugging Face's Llama of
the same shape in its own process, ``llama_anchor_torch.py``, and merges its rows):

    python -m benchmarks.generation.generate_bench --anchor llama --out $OUT

A study too long for one device call runs in parts, each printing its rows as JSON
lines, merged by the last: ``--archs tnl > tnl.jsonl``, then ``--archs softmax
--rows-from tnl.jsonl llama.jsonl --out $OUT``.

CPU smoke test: ``python -m benchmarks.generation.generate_bench --small``. Remake the table and
plot of a saved run: ``--from-json generate_bench.json --out DIR``.

Decode is timed directly: ``decode_loop`` runs ``--steps`` greedy steps in one jitted
loop (``decode_step`` of the model's decode layout, ``decode_layout.py``, and
``sample_token``, as ``generate``'s loop), from
zero caches of ``context + steps`` slots (the shapes a prefill returns). A step's cost
depends on the cache's size, not on what it holds, so no ``batch × context`` prefill is needed
(256 × 32K would take minutes). At batch 1 and the first context the table also gives
``generate``'s own per-token time by difference, ``(t(prefill + N tokens) − t(prefill + 1)) / (N − 1)``:
the check that the loop measures what users get. Each time is the median of
``--repeats`` calls after a warm-up (compile) call.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common.bench_args import colon_fields
from benchmarks.common.profiling import format_table, kernel_times
from benchmarks.common.results_io import read_json, read_text
from benchmarks.common.timing import (copy_bandwidth_tbps, is_out_of_memory, json_lines_of,
                                      module_command)
from benchmarks.generation.decode_floor import decode_bytes, spec_tbps, state_bytes
from tnl_jax import ModelConfig, create_model, generate, load_model_config
from tnl_jax.generation import compiler_options, sample_token
from tnl_jax.model.decode_layout import decode_layout, per_layer_caches

GIB = 2**30


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(cfg: ModelConfig, dtype: str):
    cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    return nnx.jit(lambda: create_model(cfg, nnx.Rngs(0)))()


def decode_loop(graphdef, state, caches, token, *, steps: int, cache_size: int):
    """``steps`` greedy decode steps taking slots ``cache_size - steps ...``; returns
    ``(caches, last token)``. ``graphdef, state``: a model in the decode layout, or a
    stacked one (with caches to match), as ``decode_runner`` made them."""
    context = cache_size - steps
    slots = jnp.arange(cache_size)[None]

    def body(i, carry):
        token, caches, state = carry  # The weights ride in the carry, as in generate.
        model = nnx.merge(graphdef, state)
        kv_valid = jnp.broadcast_to(slots <= context + i, (token.shape[0], cache_size))
        positions = jnp.full(token.shape, context + i, jnp.int32)
        logits, caches = model.decode_step(token, positions, caches, context + i, kv_valid)
        return sample_token(logits, None, 0, None, None), caches, state

    token, caches, _ = jax.lax.fori_loop(0, steps, body, (token, caches, state))
    return caches, token


@functools.cache
def jitted_decode_loop(batch: int):
    """``decode_loop`` compiled as ``generate`` compiles its loop for ``batch`` rows
    (``tnl_jax.generation.compiler_options``)."""
    return jax.jit(decode_loop, static_argnames=("graphdef", "steps", "cache_size"),
                   donate_argnames=("caches",), compiler_options=compiler_options(batch) or None)


def failure(error: Exception) -> str:
    """An out-of-memory error as a short row entry; anything else as its text."""
    text = str(error)
    return "out of memory" if is_out_of_memory(text) else f"{type(error).__name__}: {text[:300]}"


def decode_runner(model, batch: int, context: int, steps: int, stacked: bool = False):
    """A call of ``decode_loop`` at ``batch`` rows and ``context`` (caches zero-filled),
    from the decode layout as ``generate`` decodes (``decode_layout.py``), or from the
    stacked layers with ``stacked``."""
    cache_size = context + steps
    ids = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
    _, shapes = nnx.eval_shape(lambda model, ids: model.prefill(
        ids, jnp.ones_like(ids), jnp.zeros_like(ids), cache_size), model, ids)
    caches = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    if not stacked:
        model, caches = nnx.jit(decode_layout)(model), per_layer_caches(caches)
    graphdef, state = nnx.split(model)
    held = [caches, jnp.full((batch,), 3, jnp.int32)]

    def run():  # The loop donates its caches: each call takes the last one's.
        held[0], held[1] = jitted_decode_loop(batch)(graphdef, state, held[0], held[1],
                                                     steps=steps, cache_size=cache_size)
        return held[1]

    return run


def decode_ms(model, batch: int, context: int, steps: int, repeats: int) -> float:
    """Per-token time of ``decode_loop`` at ``batch`` rows and ``context``."""
    return timed(decode_runner(model, batch, context, steps), repeats) / steps * 1e3


def print_decode_profile(model, batch: int, context: int, steps: int, out: str | None) -> None:
    """Where one decode loop's device time goes, kernel by kernel (``profiling.py``)."""
    times = kernel_times(decode_runner(model, batch, context, steps), repeats=2)
    text = (f"decode profile: {model.cfg.architecture}, batch {batch}, context {context}, "
            f"{steps} steps per call (divide by it for one token)\n" + format_table(times, 40))
    print(text, flush=True)
    if out:
        with open(os.path.join(out, f"decode_profile_b{batch}_c{context}.md"), "w") as f:
            f.write(text + "\n")


def generate_ms(model, context: int, steps: int, repeats: int) -> float:
    """``generate``'s per-token time at batch 1, by the difference method."""
    ids = np.random.default_rng(0).integers(3, model.cfg.vocab_size, (1, context), np.int32)
    run = lambda new: generate(model, ids, new, temperature=0)
    return (timed(lambda: run(steps), repeats) - timed(lambda: run(1), repeats)) / (steps - 1) * 1e3


def jax_rows(name: str, model, args) -> list[dict]:
    """Prefill rows (batch 1) and decode rows of one model; a setting that does not fit
    (caches over 90% of the device's memory) or fails is a row that says why."""
    cfg, rows = model.cfg, []
    rng = np.random.default_rng(0)
    for length in args.prefill:
        ids = rng.integers(3, cfg.vocab_size, (1, length), np.int32)
        row = {"model": name, "phase": "prefill", "batch": 1, "context": length}
        try:
            seconds = timed(lambda: generate(model, ids, 1, temperature=0), args.repeats)
            rows.append({**row, "ms": seconds * 1e3, "tokens_per_s": length / seconds})
        except Exception as error:
            rows.append({**row, "error": failure(error)})
        print(json.dumps(rows[-1]), flush=True)
    memory = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    for context in args.contexts:
        for batch in args.batches:
            row = {"model": name, "phase": "decode", "batch": batch, "context": context,
                   "bytes_per_step": decode_bytes(cfg, batch, context)}
            need = state_bytes(cfg, batch, context + args.steps)
            if memory and need > 0.9 * memory:
                row["error"] = f"out of memory (caches need {need / GIB:.0f} GiB)"
            else:
                try:
                    row["ms_per_token"] = decode_ms(model, batch, context, args.steps, args.repeats)
                    if batch == 1 and context == args.contexts[0]:
                        row["generate_ms_per_token"] = generate_ms(model, context, args.steps,
                                                                   args.repeats)
                except Exception as error:
                    row["error"] = failure(error)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    return rows


def anchor_rows(cfg: ModelConfig, args) -> list[dict]:
    """Hugging Face Llama of ``cfg``'s shape, in its own process (run before JAX takes
    the GPU)."""
    if importlib.util.find_spec("torch") is None:
        print("--anchor llama: torch is not importable here, no anchor rows", flush=True)
        return []
    shape = ["--hidden", cfg.decoder_embed_dim, "--layers", cfg.decoder_layers,
             "--heads", cfg.decoder_attention_heads, "--mlp", cfg.mlp_dim,
             "--vocab", cfg.vocab_size, "--steps", args.steps,
             "--prefill", *args.prefill, "--batches", *args.batches, "--contexts", *args.contexts]
    if not cfg.tie_word_embeddings:
        shape.append("--untied")
    return json_lines_of(module_command("benchmarks.generation.llama_anchor_torch", *map(str, shape)),
                         "llama anchor")


SMALL = dict(vocab_size=384, decoder_embed_dim=64, decoder_layers=2, decoder_attention_heads=2,
             glu_dim=128, pad_token_id=0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tnl-1b", help="preset name or YAML file")
    parser.add_argument("--archs", nargs="+", default=["tnl", "softmax"])
    parser.add_argument("--anchor", choices=["llama"], help="also run HF Llama (torch)")
    parser.add_argument("--rows-from", nargs="+", default=[], help="merge the JSON rows "
                        "earlier runs printed (llama_anchor_torch.py's, or this script's "
                        "for other --archs): a study spread over several calls")
    parser.add_argument("--small", action="store_true", help="tiny model and lengths (CPU smoke test)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prefill", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 32768])
    parser.add_argument("--steps", type=int, default=128, help="decode steps timed per call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    parser.add_argument("--from-json", help="only remake the table and plot of a saved run")
    parser.add_argument("--profile", type=colon_fields("arch:batch:context", ints=(1, 2)),
                        help="ARCH:BATCH:CONTEXT: also print that decode setting's kernels "
                        "and their device time")
    args = parser.parse_args()
    if args.small:  # Prefill lengths = contexts: generate() compiles once per length.
        args.prefill, args.batches, args.contexts = [64, 512], [1, 4], [64, 512]
        args.steps, args.repeats = 8, 2
        # As the tests do: LLVM -O0 cuts compile time (read when JAX starts its backend).
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    return args


def write(rows: list[dict], copy_tbps: float, out: str | None, title: str,
          device_kind: str) -> None:
    from benchmarks.generation.generate_report import add_floors, plot, table
    spec = spec_tbps(device_kind)
    text = table(add_floors(rows, copy_tbps, spec), copy_tbps, spec)
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "generate_bench.json"), "w") as f:
            json.dump({"copy_TBps": copy_tbps, "title": title, "device_kind": device_kind,
                       "rows": rows}, f, indent=1)
        with open(os.path.join(out, "generate_bench.md"), "w") as f:
            f.write(text + "\n")
        plot(rows, os.path.join(out, "generate_bench.png"), title)


def main() -> None:
    args = parse_args()
    if args.from_json:
        saved = read_json(args.from_json)  # Floors again: rows may be merged ones.
        # Files written before device_kind was kept name the device in the title.
        kind = saved.get("device_kind") or saved["title"].rsplit(" one ", 1)[-1]
        write(saved["rows"], saved["copy_TBps"], args.out, saved["title"], kind)
        return
    cfg = load_model_config(args.config)
    if args.small:
        cfg = cfg.replace(**SMALL)
    rows = anchor_rows(cfg, args) if args.anchor else []  # Before JAX takes the GPU.
    for path in args.rows_from:
        rows += [row for row in map(json.loads, filter(lambda l: l.startswith('{"model"'),
                                                        read_text(path).splitlines()))]
    copies = [r.pop("TBps") for r in rows if r["model"] == "torch_copy"]
    rows = [r for r in rows if r["model"] != "torch_copy"]
    device = jax.devices()[0].device_kind
    print(f"{device}, jax {jax.__version__}: {args.config} d {cfg.decoder_embed_dim}, "
          f"L {cfg.decoder_layers}, {args.dtype}", flush=True)
    # The floor uses the best copy rate measured in either framework.
    copy_tbps = max([copy_bandwidth_tbps(16 * 2**20 if args.small else GIB)] + copies)
    for arch in args.archs:
        model = build(cfg.replace(architecture=arch), args.dtype)
        rows += jax_rows(f"tnl-jax {arch}", model, args)
        if args.profile and args.profile[0] == arch:
            _, batch, context = args.profile
            print_decode_profile(model, batch, context, args.steps, args.out)
        del model
    title = f"{args.config}{' (--small)' if args.small else ''}, {args.dtype}, one {device}"
    write(rows, copy_tbps, args.out, title, device)


if __name__ == "__main__":
    main()
