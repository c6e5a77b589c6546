"""Text generation: one prefill, then O(1) decode steps inside one jitted loop.

Prompts of different lengths share a batch by **left-padding**: row ``b`` of length
``n_b`` is placed at the end of a ``P``-wide buffer (``P`` the longest prompt), its
padding gets segment id 0 and its prompt segment id 1. The lightning op restarts its
state where the segment changes, so each row's final state holds its prompt only;
positions (LRPE, RoPE) count from 0 at each prompt's first token and continue as
``n_b + i`` for the ``i``-th new token. Softmax layers (baselines) keep a key/value
cache of ``P + max_new_tokens`` slots and attend only to the slots of their own row's
prompt and new tokens; linear layers keep their ``(B, H, dk, e)`` float32 state.

The loop decodes from the model's decode layout (``model/decode_layout.py``: per-layer
weights and caches, made once per call before the loop), compiled with the XLA options
that ``compiler_options`` measured best for the batch size.

``tnl-generate --checkpoint DIR --prompt "..."`` (``tnl_jax/cli/generate.py``) samples
from a training run, a converted or a Hugging Face directory.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from tnl_jax.generation_checks import check_sampling, check_top_k, prompt_rows
from tnl_jax.model.decode_layout import decode_layout, per_layer_caches
from tnl_jax.model.language_model import LanguageModel


def left_pad(prompts: Sequence[Sequence[int]] | np.ndarray, pad_id: int):
    """``(ids, segment_ids, positions, lengths)`` for left-padded prompts."""
    rows = [list(map(int, p)) for p in prompts]
    if not rows or min(len(r) for r in rows) == 0:
        raise ValueError("every prompt needs at least one token")
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, np.int32)
    segment_ids = np.zeros((len(rows), width), np.int32)
    positions = np.zeros((len(rows), width), np.int32)
    for b, row in enumerate(rows):
        ids[b, width - len(row):] = row
        segment_ids[b, width - len(row):] = 1
        positions[b, width - len(row):] = np.arange(len(row))
    lengths = np.array([len(r) for r in rows], np.int32)
    return ids, segment_ids, positions, lengths


# Temperatures below float32's smallest normal number (1.2e-38) sample greedily: a
# float32 temperature there is subnormal or 0, and any gap between logits divided by
# it is -inf already, so sampling would pick the largest logit anyway.
GREEDY_BELOW = float(np.finfo(np.float32).tiny)


def sample_token(logits: jax.Array, key: jax.Array, temperature: float | jax.Array,
                 top_k: int | None, top_p: float | jax.Array | None) -> jax.Array:
    """``(B, V)`` float32 logits -> ``(B,)`` token ids; a Python ``temperature`` below
    ``GREEDY_BELOW`` (0 included) is greedy. ``top_k`` is static; ``temperature`` and
    ``top_p`` may be traced. The logits are scaled as ``(logits - max) / temperature``,
    which no small temperature can overflow."""
    check_top_k(top_k, logits.shape[-1])
    if isinstance(temperature, (int, float)) and temperature < GREEDY_BELOW:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = (logits - jnp.max(logits, axis=-1, keepdims=True)) / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def weights_in_compute_dtype(state: nnx.State, dtype: jnp.dtype) -> nnx.State:
    """``state`` with every weight that has an ``embed`` axis (embedding, projections,
    MLP, head) cast to the compute dtype once, as each use casts it anyway: a decode
    step then reads bfloat16 weights, half the bytes of float32 ones. LRPE's angles and
    the decay rates (no ``embed`` axis) stay as they are. The results are unchanged."""
    def cast(spec, x):
        weight = isinstance(spec, PartitionSpec) and "embed" in spec
        return x.astype(dtype) if weight and jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, nnx.get_partition_spec(state), state,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


# Matrix products at decode shapes, measured on an H200 (tnl-1b, benchmarks/RESULTS.md):
# from 8 rows, cuBLAS's kernels beat XLA's Triton GEMMs inside the decode loop (1.70
# against 1.83 ms per token at 64 rows); at one row the Triton GEMMs win (1.16 against
# 1.34 ms).
CUBLAS_FROM_BATCH = 8


def compiler_options(batch: int) -> dict:
    """XLA options for generating ``batch`` rows: on a GPU from ``CUBLAS_FROM_BATCH``
    rows, every matrix product through cuBLAS; otherwise none."""
    if jax.default_backend() == "gpu" and batch >= CUBLAS_FROM_BATCH:
        return {"xla_gpu_enable_triton_gemm": False}
    return {}


def _generate(graphdef, state, ids, segment_ids, positions, lengths, key, temperature, top_p, *,
              max_new_tokens, greedy, top_k, eos_id, return_logits):
    model: LanguageModel = nnx.merge(graphdef, state)
    model = nnx.merge(graphdef, weights_in_compute_dtype(state, model.cfg.compute_dtype))
    batch, width = ids.shape
    cache_size = width + max_new_tokens
    logits, caches = model.prefill(ids, segment_ids, positions, cache_size)
    finite = jnp.all(jnp.isfinite(logits), axis=-1)  # (B,): checked by the caller
    slots = jnp.arange(cache_size)[None]
    first_slot = (width - lengths)[:, None]
    fill = 0 if eos_id is None else eos_id
    tokens = jnp.full((batch, max_new_tokens), fill, jnp.int32)
    all_logits = jnp.zeros((batch, max_new_tokens, logits.shape[-1]) if return_logits else (0,),
                           jnp.float32)
    done = jnp.zeros((batch,), bool)

    def emit(i, logits, key, tokens, all_logits, done):
        token = sample_token(logits, jax.random.fold_in(key, i), 0 if greedy else temperature,
                             top_k, top_p)
        token = jnp.where(done, fill, token)
        tokens = tokens.at[:, i].set(token)
        if return_logits:
            all_logits = all_logits.at[:, i].set(logits)
        if eos_id is not None:
            done = done | (token == eos_id)
        return token, tokens, all_logits, done

    i = 0
    if max_new_tokens > 1:  # One new token needs no decode step, nor the decode layout.
        # Decode from per-layer weights and caches, made once here (decode_layout.py).
        decode_graphdef, decode_state = nnx.split(decode_layout(model))

        def body(carry):
            i, logits, caches, tokens, all_logits, done, state = carry
            token, tokens, all_logits, done = emit(i, logits, key, tokens, all_logits, done)
            slot = width + i
            kv_valid = (slots >= first_slot) & (slots <= slot)
            # The weights ride in the carry: NNX transforms inside the loop body refuse
            # variables whose values belong to the enclosing trace.
            step_model: LanguageModel = nnx.merge(decode_graphdef, state)
            logits, caches = step_model.decode_step(token, lengths + i, caches, slot, kv_valid)
            return i + 1, logits, caches, tokens, all_logits, done, state

        def more(carry):
            i, *_, done, _ = carry
            return (i < max_new_tokens - 1) & ~jnp.all(done)

        carry = jax.lax.while_loop(more, body, (0, logits, per_layer_caches(caches), tokens,
                                                all_logits, done, decode_state))
        i, logits, _, tokens, all_logits, done, _ = carry
    _, tokens, all_logits, _ = emit(i, logits, key, tokens, all_logits, done)
    return tokens, all_logits, finite


def _check_finite_logits(finite: np.ndarray) -> None:
    """The prompts' logits (the first new token's) hold no NaN or inf: else the model's
    weights do, and sampling would give token 0 forever."""
    bad = np.flatnonzero(~finite)
    if bad.size:
        raise ValueError(
            f"generate: the model's logits after prompt {int(bad[0])} ({bad.size} of "
            f"{finite.size} prompts) are not finite (NaN or inf): its weights hold NaN or "
            "inf (a diverged run or a damaged checkpoint); check them with "
            "jax.tree.map(lambda w: bool(jnp.isfinite(w).all()), nnx.state(model))")


@functools.cache
def _jitted_generate(options: tuple[tuple[str, object], ...]):
    """``_generate`` compiled with the XLA ``options`` (``compiler_options``)."""
    return jax.jit(_generate, static_argnames=("graphdef", "max_new_tokens", "greedy", "top_k",
                                               "eos_id", "return_logits"),
                   compiler_options=dict(options) or None)


def generate(model: LanguageModel, prompt_ids, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             eos_id: int | None = None, return_logits: bool = False):
    """Samples ``max_new_tokens`` tokens after each prompt.

    Args:
      prompt_ids: ``(B, T)`` ints, or a list of token lists of different lengths
        (left-padded inside, see the module docstring); every id in ``[0, V)``.
      max_new_tokens: >= 0 (0 returns empty arrays).
      temperature: >= 0; 0, and anything below ``GREEDY_BELOW`` (1.2e-38, where
        sampling is greedy anyway), means greedy. ``top_k`` (in ``[1, V]``) / ``top_p``
        (in ``(0, 1]``) filter before sampling.
      max_new_tokens, temperature, top_k, top_p, seed, eos_id: Python, NumPy or JAX
        scalars alike; the longest prompt and ``max_new_tokens`` fit int32 together.
      eos_id: a row stops at its first ``eos_id`` and is filled with it; the loop
        ends when every row has stopped.

    Every argument is checked before anything compiles (``generation_checks``):
    ``TypeError`` for a wrong type, ``ValueError`` for a value out of range. Logits
    that are not finite after the prompts (a model with NaN weights) are a
    ``ValueError`` naming the prompt, not a stream of token 0.

    Returns:
      ``tokens (B, max_new_tokens)`` int32 (new tokens only), or with
      ``return_logits`` ``(tokens, logits (B, max_new_tokens, V))``, ``logits[:, i]``
      being the float32 logits that produced token ``i``.
    """
    vocab = model.cfg.vocab_size
    rows = prompt_rows(prompt_ids, vocab)
    arguments = check_sampling(
        vocab, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=seed, eos_id=eos_id, return_logits=return_logits,
        longest_prompt=max(len(row) for row in rows))
    return _generate_checked(model, rows, **arguments)


def _generate_checked(model: LanguageModel, rows: list[list[int]], *, max_new_tokens: int,
                      temperature: float, top_k: int | None, top_p: float | None, seed: int,
                      eos_id: int | None, return_logits: bool):
    """``generate`` on checked arguments, Python numbers all."""
    vocab = model.cfg.vocab_size
    if max_new_tokens == 0:
        tokens = jnp.zeros((len(rows), 0), jnp.int32)
        return (tokens, jnp.zeros((len(rows), 0, vocab), jnp.float32)) if return_logits else tokens
    pad = model.cfg.pad_token_id  # Its value never matters: padding has segment id 0.
    ids, segment_ids, positions, lengths = left_pad(rows, 0 if pad is None else pad)
    graphdef, state = nnx.split(model)
    run = _jitted_generate(tuple(sorted(compiler_options(len(rows)).items())))
    tokens, logits, finite = run(graphdef, state, ids, segment_ids, positions, lengths,
                                 jax.random.key(seed), jnp.float32(temperature),
                                 jnp.float32(1.0 if top_p is None else top_p),
                                 max_new_tokens=max_new_tokens,
                                 greedy=temperature < GREEDY_BELOW, top_k=top_k,
                                 eos_id=eos_id, return_logits=return_logits)
    _check_finite_logits(np.asarray(finite))
    return (tokens, logits) if return_logits else tokens

