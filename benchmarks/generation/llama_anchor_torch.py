"""The anchor users would otherwise pick: Hugging Face transformers' ``LlamaForCausalLM``
of tnl-1b's width, depth, heads, MLP width and vocabulary (random bf16 weights, CUDA,
SDPA), with a static KV cache (``StaticCache``) and its decode step compiled by
``torch.compile(mode="reduce-overhead", fullgraph=True)``: the custom-loop recipe of
transformers' guide "Optimizing inference" (docs/source/en/llm_optims.md, "Static
kv-cache and torch.compile"). ``generate_bench.py --anchor llama`` runs it in its own
process, before JAX takes the GPU, and merges its rows.

Verified on CPU only (``--device cpu``; torch 2.11.0, transformers 5.17.0, Python 3.11),
not yet run on a GPU: every row of a tiny shape comes out with a number, in bf16; the
compiled step's greedy tokens equal ``model.generate``'s (float32; bf16 too, up to a
rounding flip where two logits lie within bf16's rounding) and repeat after a seek back;
one compile per decode setting, none within one.

Measured as generate_bench.py measures ours: prefill = one eager forward of a batch-1
prompt (keys and values kept), last position's logits only, plus the argmax; decode =
``--steps`` compiled greedy steps from position ``context`` over a zero static cache of
``context + steps`` slots (a step's cost depends on the cache's size, not on what it
holds). transformers 5 has no ``cache_position``: each static layer writes at its own
``cumulative_length``, which ``seek`` sets to ``context`` before each timed call. Medians
of ``triton.testing.do_bench`` (CUDA) or of ``time.perf_counter`` (CPU) after a warm-up
(compile) call, whose seconds a row's ``first_call_s`` gives. Prints one JSON object per
line: ``{"model": "torch_copy", "TBps"}``, then rows ``{"model", "phase", "batch",
"context", ...}`` with ``ms`` and ``tokens_per_s`` (prefill) or ``bytes_per_step``,
``ms_per_token`` and ``cudagraph_skips`` (decode: 0 on CUDA, else the step ran without
CUDA graphs; each compile on CPU counts one), or ``error``.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

NAME = "transformers llama"


def build(args) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, tie_word_embeddings=not args.untied,
        max_position_embeddings=max(args.prefill + args.contexts) + args.steps,
        attn_implementation="sdpa")
    with torch.device(args.device):
        return LlamaForCausalLM(config).to(args.dtype).eval()


def static_cache(model, batch: int, length: int, device: str) -> StaticCache:
    """A zero ``StaticCache`` of ``length`` slots, allocated now: transformers 5 builds it
    from the config alone and allocates at the first update, or at
    ``early_initialization``, which this calls (so no token is written to allocate it)."""
    c = model.config
    cache = StaticCache(config=c, max_cache_len=length)
    cache.early_initialization(batch_size=batch, num_heads=c.num_key_value_heads,
                               head_dim=c.hidden_size // c.num_attention_heads,
                               dtype=model.dtype, device=torch.device(device))
    return cache


def seek(cache: StaticCache, position: int) -> None:
    """Sets where the next token goes. transformers 5 has no ``cache_position``: each
    static layer writes at its own ``cumulative_length`` (a tensor, with a static address,
    which a compiled step reads and advances in place) and the model takes the tokens'
    positions from the cache's length."""
    for layer in cache.layers:
        length = getattr(layer, "cumulative_length", None)
        if not isinstance(length, torch.Tensor):
            raise TypeError(f"{type(layer).__name__} has no tensor cumulative_length: this "
                            "script is written for transformers 5's StaticCache")
        length.fill_(position)


def decode_one_token(model, token, cache):
    logits = model(token, past_key_values=cache, use_cache=True, return_dict=False)[0]
    return torch.argmax(logits[:, -1], dim=-1, keepdim=True)


def cpu_bench(fn, min_s: float = 0.3, min_reps: int = 3) -> float:
    """Median milliseconds of ``fn`` by ``time.perf_counter`` (``triton.testing.do_bench``
    needs CUDA)."""
    times = []
    while len(times) < min_reps or sum(times) < min_s:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def cpu_copy_tbps() -> float:
    x = torch.randn(2**28 // 2, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    return 2 * x.nbytes / (cpu_bench(lambda: y.copy_(x)) * 1e-3) / 1e12


def timed(fn, bench) -> dict:
    start = time.perf_counter()
    fn()  # compile / warm up: do_bench sizes its repeats from its first calls
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    first_s = time.perf_counter() - start
    return {"ms": bench(fn), "first_call_s": round(first_s, 2)}


def prefill_row(model, length: int, device: str, bench) -> dict:
    """A batch-1 prompt's eager forward into a fresh (dynamic) cache, whose prompt-only
    causal mask lets SDPA take its flash path; a static cache would mask all its slots."""
    ids = torch.randint(3, model.config.vocab_size, (1, length), device=device)

    def run():
        logits = model(ids, use_cache=True, return_dict=False, logits_to_keep=1)[0]
        return torch.argmax(logits[:, -1], dim=-1)

    row = timed(run, bench)
    return {**row, "tokens_per_s": length / (row["ms"] * 1e-3)}


def decode_row(model, step, batch: int, context: int, steps: int, device: str, bench) -> dict:
    cache = static_cache(model, batch, context + steps, device)
    token = torch.full((batch, 1), 3, dtype=torch.long, device=device)

    def run():
        seek(cache, context)
        next_token = token
        for _ in range(steps):  # As the guide: clone (CUDA graphs reuse their outputs).
            next_token = step(model, next_token.clone(), cache)
        return next_token

    skips = counters["inductor"]["cudagraph_skips"]
    row = timed(run, bench)
    return {"ms_per_token": row["ms"] / steps, "first_call_s": row["first_call_s"],
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips}


def kv_bytes(model, batch: int, context: int) -> int:
    c = model.config
    return 2 * c.num_hidden_layers * batch * context * c.hidden_size * model.dtype.itemsize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("hidden", "layers", "heads", "mlp", "vocab"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--untied", action="store_true", help="untied output head")
    parser.add_argument("--prefill", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 32768])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a smoke test, timed by time.perf_counter")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    cuda = args.device == "cuda"
    if cuda:
        from torch_anchors import bench, copy_tbps  # triton: CUDA only
    else:
        bench, copy_tbps = cpu_bench, cpu_copy_tbps
    print(json.dumps({"model": "torch_copy", "TBps": copy_tbps()}), flush=True)
    torch._dynamo.config.cache_size_limit = 64  # one graph per (batch, context)
    torch._dynamo.config.automatic_dynamic_shapes = False  # each specialised, as ours
    model = build(args)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied once
    # On CPU inductor skips the CUDA graphs, and the rest is the same compile.
    step = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)
    settings = [("prefill", 1, n) for n in args.prefill] + [
        ("decode", b, c) for c in args.contexts for b in args.batches]
    for phase, batch, context in settings:
        row = {"model": NAME, "phase": phase, "batch": batch, "context": context}
        if phase == "decode":
            row["bytes_per_step"] = weights + kv_bytes(model, batch, context)
        need = kv_bytes(model, batch, context + args.steps)
        try:
            if cuda and need > 0.9 * torch.cuda.mem_get_info()[0]:
                raise torch.cuda.OutOfMemoryError(f"cache needs {need / 2**30:.0f} GiB")
            with torch.no_grad():
                row.update(prefill_row(model, context, args.device, bench) if phase == "prefill"
                           else decode_row(model, step, batch, context, args.steps,
                                           args.device, bench))
        except torch.cuda.OutOfMemoryError as error:
            row["error"] = f"out of memory ({str(error)[:80]})"
        except Exception as error:  # one setting's failure is a row, not the end
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        print(json.dumps(row), flush=True)
        if phase == "decode":  # Each setting compiles once with or without this reset
            torch._dynamo.reset()  # (new shapes); it drops the graphs and their hold on the cache.
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
