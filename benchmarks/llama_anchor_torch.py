"""The anchor users would otherwise pick: Hugging Face transformers' ``LlamaForCausalLM``
of tnl-1b's width, depth, heads, MLP width and vocabulary (random bf16 weights, CUDA,
SDPA), with a static KV cache (``StaticCache``) and its decode step compiled by
``torch.compile(mode="reduce-overhead", fullgraph=True)``: the custom-loop recipe of
transformers' guide "Optimizing inference" (docs/source/en/llm_optims.md, "Static
kv-cache and torch.compile"). ``generate_bench.py --anchor llama`` runs it in its own
process, before JAX takes the GPU, and merges its rows.

NOT YET RUN: written on a machine without torch or a GPU, only syntax-checked.

Measured as generate_bench.py measures ours: prefill = one eager forward of a batch-1
prompt (keys and values kept), last position's logits only, plus the argmax; decode =
``--steps`` compiled greedy steps from cache position ``context`` over a zero static
cache of ``context + steps`` slots (a step's cost depends on the cache's size, not on
what it holds). Medians of ``triton.testing.do_bench`` after a warm-up (compile) call.
Prints one JSON object per line: ``{"model": "torch_copy", "TBps"}``, then rows
``{"model", "phase", "batch", "context", ...}`` with ``ms`` and ``tokens_per_s``
(prefill) or ``bytes_per_step`` and ``ms_per_token`` (decode), or ``error``.
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json

import torch
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

from torch_anchors import bench, copy_tbps

NAME = "transformers llama"


def build(args) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, tie_word_embeddings=not args.untied,
        max_position_embeddings=max(args.prefill + args.contexts) + args.steps,
        attn_implementation="sdpa")
    with torch.device("cuda"):
        return LlamaForCausalLM(config).to(torch.bfloat16).eval()


def static_cache(model, batch: int, length: int) -> StaticCache:
    """A ``StaticCache`` across transformers versions: older ones take the batch size,
    device and dtype; newer ones allocate at the first update."""
    params = inspect.signature(StaticCache.__init__).parameters
    kwargs = {"config": model.config, "max_cache_len": length}
    batch_key = next((k for k in ("max_batch_size", "batch_size") if k in params), None)
    if batch_key:
        kwargs[batch_key] = batch
    kwargs.update({k: v for k, v in (("device", "cuda"), ("dtype", torch.bfloat16)) if k in params})
    return StaticCache(**kwargs)


def decode_one_token(model, token, cache_position, cache):
    logits = model(token, cache_position=cache_position, past_key_values=cache,
                   use_cache=True, return_dict=False)[0]
    return torch.argmax(logits[:, -1], dim=-1, keepdim=True)


def timed_ms(fn) -> float:
    fn()  # compile / warm up: do_bench sizes its repeats from its first calls
    return bench(fn)


def prefill_row(model, length: int) -> dict:
    """A batch-1 prompt's forward into a fresh (dynamic) cache, whose prompt-only causal
    mask lets SDPA take its flash path; a static cache would mask all its slots."""
    ids = torch.randint(3, model.config.vocab_size, (1, length), device="cuda")
    params = inspect.signature(model.forward).parameters
    keep = next(({k: 1} for k in ("logits_to_keep", "num_logits_to_keep") if k in params), {})

    def run():
        logits = model(ids, use_cache=True, return_dict=False, **keep)[0]
        return torch.argmax(logits[:, -1], dim=-1)

    ms = timed_ms(run)
    return {"ms": ms, "tokens_per_s": length / (ms * 1e-3)}


def decode_row(model, step, batch: int, context: int, steps: int) -> dict:
    cache = static_cache(model, batch, context + steps)
    token = torch.full((batch, 1), 3, dtype=torch.long, device="cuda")
    position = torch.tensor([context], device="cuda")
    model(token, cache_position=position, past_key_values=cache, use_cache=True)  # allocates

    def run():
        position.fill_(context)
        next_token = token
        for _ in range(steps):  # As the guide: clone (CUDA graphs reuse their outputs).
            next_token = step(model, next_token.clone(), position, cache)
            position.add_(1)
        return next_token

    return {"ms_per_token": timed_ms(run) / steps}


def kv_bytes(model, batch: int, context: int) -> int:
    c = model.config
    return 2 * c.num_hidden_layers * batch * context * c.hidden_size * 2  # k, v in bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("hidden", "layers", "heads", "mlp", "vocab"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--untied", action="store_true", help="untied output head")
    parser.add_argument("--prefill", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 32768])
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()
    print(json.dumps({"model": "torch_copy", "TBps": copy_tbps()}), flush=True)
    torch._dynamo.config.cache_size_limit = 64  # one graph per (batch, context)
    torch._dynamo.config.automatic_dynamic_shapes = False  # each specialised, as ours
    model = build(args)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied once
    step = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)
    settings = [("prefill", 1, n) for n in args.prefill] + [
        ("decode", b, c) for c in args.contexts for b in args.batches]
    for phase, batch, context in settings:
        row = {"model": NAME, "phase": phase, "batch": batch, "context": context}
        if phase == "decode":
            row["bytes_per_step"] = weights + kv_bytes(model, batch, context)
        need = kv_bytes(model, batch, context + args.steps)
        try:
            if need > 0.9 * torch.cuda.mem_get_info()[0]:
                raise torch.cuda.OutOfMemoryError(f"cache needs {need / 2**30:.0f} GiB")
            with torch.no_grad():
                row.update(prefill_row(model, context) if phase == "prefill" else
                           decode_row(model, step, batch, context, args.steps))
        except torch.cuda.OutOfMemoryError as error:
            row["error"] = f"out of memory ({str(error)[:80]})"
        except Exception as error:  # one setting's failure is a row, not the end
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        print(json.dumps(row), flush=True)
        torch._dynamo.reset()  # drops the graphs (and their hold on this setting's cache)
        gc.collect()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
