"""Kernel benchmark: ours (pallas, xla) against cuDNN flash attention in this process
and the PyTorch anchors (FLA, lightning_attn, torch SDPA) in a separate process, side
by side in one run. bf16, a fixed number of tokens per batch (B·T), median of >= 20.

Reports forward and forward+backward time, the ratio to FLA, peak memory and the
memory floor (bytes that must move / measured copy bandwidth). Writes JSON beside the
table when ``--out`` is given.

    python -m benchmarks.kernel.kernel_bench --seqs 2048,8192,32768,131072 --dims 128x128
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp

from benchmarks.common.timing import (GiB, copy_bandwidth_tbps, fwd_bwd, json_lines_of,
                                      module_command, timed_ms)
from pallas_kernels import lightning_attention


def ours(backend: str, heads: int, learned_decay: bool = False):
    """``(op(q, k, v, *learned), learned)``: fixed decays (TNL's), or with
    ``learned_decay`` the decays a learned parameter, which the backward differentiates."""
    decay = jnp.arange(1, heads + 1, dtype=jnp.float32) / heads

    def op(q, k, v, decay=decay):
        return lightning_attention(q, k, v, decay, backend=backend)
    return op, (decay,) if learned_decay else ()


def cudnn(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def peak_gib(fn, *args) -> float:
    """Arguments + outputs + XLA temporaries of the compiled program."""
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / GiB


def la2_row(row: dict, q, k, v, heads: int) -> dict:
    """The original LA-2 forward through jax_triton, on ``(B, H, T, d)`` copies of the
    inputs (its layout; the transposes are not timed), checked against ours."""
    try:
        from benchmarks.kernel.la2_jax_triton import la2_forward
    except ImportError as e:
        return {**row, "error": f"not importable: {e}"}
    decay = jnp.arange(1, heads + 1, dtype=jnp.float32) / heads
    qt, kt, vt = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
    try:
        row["fwd_ms"] = timed_ms(jax.jit(lambda q, k, v: la2_forward(q, k, v, decay)), qt, kt, vt)
        theirs = jnp.swapaxes(la2_forward(qt, kt, vt, decay), 1, 2).astype(jnp.float32)
        mine = jax.jit(ours("pallas", heads))(q, k, v).astype(jnp.float32)
        row["rel_err_vs_ours"] = float(jnp.linalg.norm(theirs - mine) / jnp.linalg.norm(mine))
    except Exception as e:  # record and go on
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return row


def jax_rows(args) -> list[dict]:
    rows = []
    for dims in args.dims.split(","):
        dk, dv = map(int, dims.split("x"))
        for seq in map(int, args.seqs.split(",")):
            batch = max(1, args.tokens // seq)
            key = jax.random.key(seq + dk)
            kq, kk, kv, ko = jax.random.split(key, 4)
            q = (jax.random.normal(kq, (batch, seq, args.heads, dk)) * dk ** -0.5).astype(jnp.bfloat16)
            k = (jax.random.normal(kk, (batch, seq, args.heads, dk)) * dk ** -0.5).astype(jnp.bfloat16)
            v = jax.random.normal(kv, (batch, seq, args.heads, dv)).astype(jnp.bfloat16)
            do = jax.random.normal(ko, v.shape).astype(jnp.bfloat16)
            impls = {"ours_pallas": ours("pallas", args.heads), "ours_xla": ours("xla", args.heads),
                     "ours_pallas_learned_decay": ours("pallas", args.heads, learned_decay=True)}
            if dk == dv and seq <= args.cudnn_max_seq:
                impls["cudnn_flash"] = (cudnn, ())
            if "la2_jax_triton" in args.impls.split(","):
                rows.append(la2_row({"impl": "la2_jax_triton", "dk": dk, "dv": dv, "T": seq,
                                     "B": batch}, q, k, v, args.heads))
                print(json.dumps(rows[-1]), flush=True)
            for name, (op, learned) in impls.items():
                if name not in args.impls.split(",") and not name.startswith("cudnn"):
                    continue
                row = {"impl": name, "dk": dk, "dv": dv, "T": seq, "B": batch}
                try:
                    row["fwd_ms"] = timed_ms(jax.jit(op), q, k, v)
                    row["fwdbwd_ms"] = timed_ms(jax.jit(fwd_bwd(op, learned)), q, k, v, do)
                    row["peak_GiB"] = peak_gib(fwd_bwd(op, learned), q, k, v, do)
                except Exception as e:  # record and go on
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(json.dumps(row), flush=True)
                rows.append(row)
            del q, k, v, do
    return rows


def torch_rows(args) -> list[dict]:
    cmd = module_command("benchmarks.common.torch_anchors",
                         "--seqs", args.seqs, "--tokens", str(args.tokens), "--heads", str(args.heads),
                         "--dims", args.dims, "--anchors", args.anchors)
    return json_lines_of(cmd, "torch anchors")


def floor_ms(row: dict, copy_tbps: float, with_backward: bool) -> float:
    """fwd: q, k, v read + o written; fwd+bwd adds q, k, v, do read + dq, dk, dv written."""
    tokens = row["B"] * row["T"] * row.get("heads", 16)
    per_token = 2 * (2 * row["dk"] + 2 * row["dv"])  # bf16: q, k, v, o
    if with_backward:
        per_token += 2 * (2 * row["dk"] + row["dv"] + row["dv"]) + 2 * (2 * row["dk"] + row["dv"])
    return tokens * per_token / (copy_tbps * 1e12) * 1e3


IMPL_ORDER = ("ours_pallas", "ours_pallas_learned_decay", "fla_chunk_simple_gla", "lightning_attn", "la2_jax_triton", "cudnn_flash",
              "torch_sdpa", "ours_xla")


def results_table(rows: list[dict], copy_tbps: float, heads: int) -> str:
    """Markdown table: times, ratios to FLA, fwd+bwd over the memory floor, peak memory."""
    lines = ["| dk/dv | B × T | impl | fwd ms | fwd+bwd ms | × FLA fwd | × FLA f+b | f+b / floor | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    fla = {(r["dk"], r["dv"], r["T"]): r for r in rows if r["impl"] == "fla_chunk_simple_gla"}
    for r in sorted(rows, key=lambda r: (r["dk"], r["dv"], r["T"], IMPL_ORDER.index(r["impl"])
                                         if r["impl"] in IMPL_ORDER else 99)):
        if "fwd_ms" not in r:
            lines.append(f"| {r['dk']}/{r['dv']} | {r['B']} × {r['T']} | {r['impl']} | "
                         f"{r.get('error', '')[:80]} | | | | | |")
            continue
        ref = fla.get((r["dk"], r["dv"], r["T"]), {})
        ratio = lambda k: f"{r[k] / ref[k]:.2f}" if k in ref and ref[k] == ref[k] and k in r else "–"
        floor = floor_ms({**r, "heads": heads}, copy_tbps, True)
        both = r.get("fwdbwd_ms", float("nan"))
        lines.append(f"| {r['dk']}/{r['dv']} | {r['B']} × {r['T']} | {r['impl']} | {r['fwd_ms']:.3f} | "
                     f"{both:.3f} | {ratio('fwd_ms')} | {ratio('fwdbwd_ms')} | {both / floor:.2f} | "
                     f"{r.get('peak_GiB', float('nan')):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", default="2048,8192,32768,131072")
    parser.add_argument("--tokens", type=int, default=131072)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dims", default="128x128")
    parser.add_argument("--impls", default="ours_pallas,ours_xla")
    parser.add_argument("--cudnn-max-seq", type=int, default=32768)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--anchors", default="fla_chunk_simple_gla,lightning_attn,torch_sdpa",
                        help="PyTorch anchors to time")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    # PyTorch first: once JAX touches the GPU it holds most of its memory (preallocation).
    rows = [] if args.no_torch else torch_rows(args)
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    copy_tbps = copy_bandwidth_tbps()
    rows = jax_rows(args) + rows
    # The floor uses the best copy rate measured in either framework.
    copy_tbps = max([copy_tbps] + [r["TBps"] for r in rows if r.get("impl") == "torch_copy"])
    rows = [r for r in rows if r.get("impl") != "torch_copy"]
    text = f"copy bandwidth {copy_tbps:.2f} TB/s, H {args.heads}, bf16\n" + results_table(
        rows, copy_tbps, args.heads)
    if args.out:
        with open(os.path.join(args.out, "kernel_bench.json"), "w") as f:
            json.dump({"copy_TBps": copy_tbps, "heads": args.heads, "device": jax.devices()[0].device_kind,
                       "jax": jax.__version__, "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "kernel_bench.md"), "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
