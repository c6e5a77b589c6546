"""PyTorch anchors, timed in their own process beside ours (kernel_bench.py runs it):
FLA's ``chunk_simple_gla``, the original ``lightning_attn`` Triton kernels and torch
SDPA (flash), bf16, fixed tokens per batch, median of ``triton.testing.do_bench``.
Prints one JSON object per line: ``{"impl", "dk", "dv", "T", "B", "fwd_ms", "fwdbwd_ms",
"peak_GiB"}`` or ``{"impl", ..., "error"}``.
"""
from __future__ import annotations

import argparse
import json

import torch
from triton.testing import do_bench


def bench(fn) -> float:
    return do_bench(fn, warmup=50, rep=300, return_mode="median")


def copy_tbps() -> float:
    """Read + write rate of a 1 GiB bf16 copy, in TB/s: the floor's denominator."""
    x = torch.randn(2**30 // 2, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    return 2 * x.nbytes / (bench(lambda: y.copy_(x)) * 1e-3) / 1e12


def anchors(heads: int):
    gamma = torch.arange(1, heads + 1, device="cuda", dtype=torch.float32) / heads
    found = {}
    try:
        from fla.ops.simple_gla import chunk_simple_gla
        found["fla_chunk_simple_gla"] = (
            lambda q, k, v: chunk_simple_gla(q, k, v, g_gamma=-gamma, scale=1.0)[0], "bthd")
    except ImportError as e:
        found["fla_chunk_simple_gla"] = e
    try:
        from lightning_attn.ops import lightning_attn_func
        found["lightning_attn"] = (lambda q, k, v: lightning_attn_func(q, k, v, gamma.view(heads, 1, 1)),
                                   "bhtd")
    except ImportError as e:
        found["lightning_attn"] = e
    import torch.nn.functional as F
    found["torch_sdpa"] = (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                           "bhtd")
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seqs", default="2048,8192,32768,131072")
    parser.add_argument("--tokens", type=int, default=131072)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dims", default="128x128", help="dkxdv list, e.g. 64x64,128x128")
    parser.add_argument("--sdpa-max-seq", type=int, default=32768)
    parser.add_argument("--anchors", default="fla_chunk_simple_gla,lightning_attn,torch_sdpa")
    args = parser.parse_args()
    print(json.dumps({"impl": "torch_copy", "TBps": copy_tbps()}))
    for dims in args.dims.split(","):
        dk, dv = map(int, dims.split("x"))
        for seq in map(int, args.seqs.split(",")):
            batch = max(1, args.tokens // seq)
            q, k = (torch.randn(batch, seq, args.heads, dk, device="cuda", dtype=torch.bfloat16) * dk ** -0.5
                    for _ in range(2))
            v = torch.randn(batch, seq, args.heads, dv, device="cuda", dtype=torch.bfloat16)
            do = torch.randn_like(v)
            for name, anchor in anchors(args.heads).items():
                if name not in args.anchors.split(","):
                    continue
                row = {"impl": name, "dk": dk, "dv": dv, "T": seq, "B": batch}
                if isinstance(anchor, Exception):
                    print(json.dumps({**row, "error": f"not importable: {anchor}"}), flush=True)
                    continue
                if name == "torch_sdpa" and (seq > args.sdpa_max_seq or dk != dv):
                    continue
                fn, layout = anchor
                qq, kk, vv, dd = ((t.transpose(1, 2).contiguous() if layout == "bhtd" else t)
                                  for t in (q, k, v, do))
                try:
                    row["fwd_ms"] = bench(lambda: fn(qq, kk, vv))
                    qg, kg, vg = (t.detach().requires_grad_() for t in (qq, kk, vv))

                    def fwd_bwd():
                        torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), dd)

                    torch.cuda.reset_peak_memory_stats()
                    row["fwdbwd_ms"] = bench(fwd_bwd)
                    row["peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
                except Exception as e:  # record and go on: one anchor's failure is data
                    row["error"] = repr(e)[:300]
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
