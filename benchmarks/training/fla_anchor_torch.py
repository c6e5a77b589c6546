"""The peer a user would otherwise train: FLA 0.6.0's ``RetNetForCausalLM`` (retention,
the op family of TNL's) and ``TransformerForCausalLM`` at one of our presets' width,
depth, heads, MLP width and vocabulary (``fla_shapes.fla_config``), trained as FLA's
own recipe does: float32 weights under bf16 autocast, FLA's fused RMSNorm, fused
swiglu and fused linear cross-entropy (``--loss``), ``torch.compile`` of the model
(``--compile``), and AdamW (``fused=True``). ``train_bench --anchor fla`` runs it in its
own process, before JAX takes the GPU, and merges its rows.

For each model and row length: rows of ``--tokens // rows`` random token sequences
(one document per row, no mask), ``--warmup`` steps, then ``--steps`` steps timed by
CUDA events. If the compiled model fails (compile or first step), the row is measured
eagerly and says why (``compile``: ``"off: <reason>"``), never silently. FLA's softmax
layer calls the ``flash_attn`` package; where it is not installed, a stand-in module
gives ``flash_attn_func`` by torch's SDPA (flash backend on an H100) and the row says
so (``attention``). Peak memory is ``torch.cuda.max_memory_allocated`` over the
setting's steps. Prints one JSON object per line: ``{"model", "rows", "batch",
"tokens", "tokens_per_s", "step_s", "peak_gib", "loss", "params_m", "ran_with"}`` or
the same with ``error`` (``out of memory (...)`` where it did not fit).

Needs CUDA (FLA's kernels are Triton's); the FLOP count and MFU are train_bench's.
"""
from __future__ import annotations

import argparse
import gc
import json
import importlib.machinery
import sys
import types

import torch
import torch.nn.functional as F

from benchmarks.training.fla_shapes import FLA_MODELS, LOSSES, Shape, fla_config


def flash_attn_stand_in() -> str:
    """``flash_attn``'s name for FLA's softmax layer: the package if installed, else a
    module whose ``flash_attn_func`` (``(B, T, H, D)`` in and out, causal, no window) is
    torch's SDPA. Returns what the attention runs on."""
    try:
        import flash_attn
        return f"flash_attn {flash_attn.__version__}"
    except ImportError:
        pass

    def flash_attn_func(q, k, v, causal=True, window_size=(-1, -1), **_):
        if tuple(window_size) != (-1, -1):
            raise NotImplementedError("the SDPA stand-in for flash_attn has no window")
        o = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)),
                                           is_causal=causal)
        return o.transpose(1, 2)

    def flash_attn_varlen_func(*_, **__):
        raise NotImplementedError("the SDPA stand-in for flash_attn has no varlen path")

    module = types.ModuleType("flash_attn")
    module.flash_attn_func, module.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    module.__version__ = "stand-in"
    # importlib.util.find_spec (transformers' and FLA's availability checks) raises on a
    # module whose __spec__ is None: the first GPU run failed so, for RetNet too.
    module.__spec__ = importlib.machinery.ModuleSpec("flash_attn", loader=None)
    sys.modules["flash_attn"] = module
    return "torch SDPA (flash_attn not installed: a stand-in flash_attn_func)"


def build(model_name: str, shape: Shape, rows: int, loss: str):
    """The FLA model (float32 weights, CUDA) and its config's keyword arguments."""
    from fla.models import RetNetConfig, RetNetForCausalLM, TransformerConfig, TransformerForCausalLM
    config_class, model_class = {"retnet": (RetNetConfig, RetNetForCausalLM),
                                 "transformer": (TransformerConfig, TransformerForCausalLM)}[model_name]
    kwargs = fla_config(model_name, shape, rows, loss)
    with torch.device("cuda"):
        model = model_class(config_class(**kwargs))
    return model.train(), kwargs


def make_step(model, optimizer):
    def step(ids):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss  # FLA shifts the labels itself.
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def timed_steps(step, ids, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds per step over ``steps`` steps after ``warmup``, by CUDA events; last loss."""
    for _ in range(warmup):
        loss = step(ids)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        loss = step(ids)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / steps, float(loss)


def measure(model_name: str, shape: Shape, rows: int, args, attention: str) -> dict:
    """One setting's row: compiled if ``--compile`` and it works, else eager with why."""
    batch = args.tokens // rows
    row = {"model": model_name, "rows": rows, "batch": batch, "tokens": batch * rows}
    ids = torch.randint(3, shape.vocab, (batch, rows), device="cuda")
    compile_note = "on" if args.compile else "off (--no-compile)"
    for compiled in ([True, False] if args.compile else [False]):
        model = optimizer = step = None
        gc.collect()
        torch.cuda.empty_cache()
        torch._dynamo.reset()
        torch.cuda.reset_peak_memory_stats()
        try:
            model, kwargs = build(model_name, shape, rows, args.loss)
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1,
                                          fused=True)
            step = make_step(torch.compile(model) if compiled else model, optimizer)
            step_s, loss = timed_steps(step, ids, args.warmup, args.steps)
        except torch.cuda.OutOfMemoryError as error:
            return {**row, "error": f"out of memory ({str(error)[:80]})",
                    "ran_with": {"compile": compile_note}}
        except Exception as error:  # the compiled model's failure: measured eagerly, said why
            if compiled:
                compile_note = f"off: {type(error).__name__}: {str(error)[:200]}"
                continue
            return {**row, "error": f"{type(error).__name__}: {str(error)[:300]}",
                    "ran_with": {"compile": compile_note}}
        params = sum(p.numel() for p in model.parameters())  # the tied head counted once
        ran_with = {"compile": compile_note, "dtype": "float32 weights, bf16 autocast",
                    "fused": f"RMSNorm, swiglu, loss {args.loss}", "optimizer": "AdamW fused",
                    "torch": torch.__version__, "fla_config": kwargs}
        if model_name == "transformer":
            ran_with["attention"] = attention
        return {**row, "tokens_per_s": row["tokens"] / step_s, "step_s": step_s,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": loss,
                "params_m": params / 1e6, "ran_with": ran_with}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("hidden", "layers", "heads", "mlp", "vocab"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--untied", action="store_true", help="untied output head")
    parser.add_argument("--models", nargs="+", default=list(FLA_MODELS), choices=FLA_MODELS)
    parser.add_argument("--rows", type=int, nargs="+", default=[2048, 8192, 32768],
                        help="tokens per row")
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per step")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--loss", default="fused_linear", choices=LOSSES)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("fla_anchor_torch.py needs CUDA: FLA's kernels are Triton's")
    shape = Shape(args.hidden, args.layers, args.heads, args.mlp, args.vocab, not args.untied)
    attention = flash_attn_stand_in()
    torch._dynamo.config.cache_size_limit = 64
    for model_name in args.models:
        for rows in args.rows:
            row = measure(model_name, shape, rows, args, attention)
            print(json.dumps({"anchor": "fla", "device": torch.cuda.get_device_name(), **row}),
                  flush=True)


if __name__ == "__main__":
    main()
